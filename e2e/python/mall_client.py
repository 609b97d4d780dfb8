"""A Python client generated from proto/ with grpcio-tools, the way outside users call the mall.

Usage: mall_client.py PROTO_DIR ORDER_ADDR DELIVERY_ADDR INVENTORY_ADDR

Generates stubs into a temporary directory, then creates a product, places an
order, waits for the saga to approve it, checks the delivery, and verifies that
bad input gets INVALID_ARGUMENT. Exits non-zero on any mismatch.
"""

import importlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from grpc_tools import protoc


def generate(proto_dir: Path, out: Path) -> None:
    protos = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.glob("mall/*/v1/*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in ("mall", "mall/order", "mall/delivery", "mall/inventory",
                    "mall/order/v1", "mall/delivery/v1", "mall/inventory/v1"):
        (out / package / "__init__.py").touch()
    sys.path.insert(0, str(out))


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def main() -> None:
    proto_dir, order_addr, delivery_addr, inventory_addr = Path(sys.argv[1]), *sys.argv[2:5]
    with tempfile.TemporaryDirectory() as tmp:
        generate(proto_dir, Path(tmp))
        inv_pb = importlib.import_module("mall.inventory.v1.inventory_pb2")
        inv_grpc = importlib.import_module("mall.inventory.v1.inventory_pb2_grpc")
        ord_pb = importlib.import_module("mall.order.v1.order_pb2")
        ord_grpc = importlib.import_module("mall.order.v1.order_pb2_grpc")
        del_pb = importlib.import_module("mall.delivery.v1.delivery_pb2")
        del_grpc = importlib.import_module("mall.delivery.v1.delivery_pb2_grpc")
        importlib.import_module("mall.order.v1.events_pb2")

        inventory = inv_grpc.InventoryServiceStub(grpc.insecure_channel(inventory_addr))
        orders = ord_grpc.OrderServiceStub(grpc.insecure_channel(order_addr))
        deliveries = del_grpc.DeliveryServiceStub(grpc.insecure_channel(delivery_addr))

        tv = inventory.CreateInventory(inv_pb.CreateInventoryRequest(product_name="TV", stock=10), timeout=10)
        check(tv.stock == 10, f"created stock {tv.stock}")
        order = orders.PlaceOrder(
            ord_pb.PlaceOrderRequest(customer_id=1, product_id=tv.id, product_name="TV", qty=3, address="Seoul"),
            timeout=10,
        )
        check(order.status == ord_pb.ORDER_STATUS_PENDING, f"new order status {order.status}")
        deadline = time.monotonic() + 60
        while order.status == ord_pb.ORDER_STATUS_PENDING and time.monotonic() < deadline:
            time.sleep(0.2)
            order = orders.GetOrder(ord_pb.GetOrderRequest(id=order.id), timeout=10)
        check(order.status == ord_pb.ORDER_STATUS_APPROVED, f"order status {ord_pb.OrderStatus.Name(order.status)}")
        delivery = deliveries.GetDelivery(del_pb.GetDeliveryRequest(order_id=order.id), timeout=10)
        check(delivery.status == del_pb.DELIVERY_STATUS_STARTED, f"delivery status {delivery.status}")
        stock = inventory.GetInventory(inv_pb.GetInventoryRequest(id=tv.id), timeout=10).stock
        check(stock == 7, f"stock after order {stock}")
        listed = orders.ListOrders(ord_pb.ListOrdersRequest(), timeout=10)
        check([o.id for o in listed.orders] == [order.id], f"listed orders {listed}")

        try:
            orders.PlaceOrder(ord_pb.PlaceOrderRequest(customer_id=1, product_id=tv.id, product_name="TV", qty=0), timeout=10)
            check(False, "qty=0 was accepted")
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"qty=0 gave {error.code()}")
            check("qty" in error.details(), f"message {error.details()!r} names the field")
        try:
            orders.GetOrder(ord_pb.GetOrderRequest(id=999999), timeout=10)
            check(False, "unknown order was found")
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.NOT_FOUND, f"unknown id gave {error.code()}")

        # An idempotent retry: the same request_id returns the same order.
        request = ord_pb.PlaceOrderRequest(customer_id=1, product_id=tv.id, product_name="TV", qty=1,
                                           address="Seoul", request_id=str(uuid.uuid4()))
        first = orders.PlaceOrder(request, timeout=10)
        again = orders.PlaceOrder(request, timeout=10)
        check(again.id == first.id, f"retry gave order {again.id}, not {first.id}")
        changed = ord_pb.PlaceOrderRequest()
        changed.CopyFrom(request)
        changed.qty = 2
        try:
            orders.PlaceOrder(changed, timeout=10)
            check(False, "a different request with the same request_id was accepted")
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.ALREADY_EXISTS, f"reused request_id gave {error.code()}")
    print("python client: all checks passed")


if __name__ == "__main__":
    main()
