"""The Python client generated from proto/, calling a service that demands
TLS and credentials.

Usage: secure_client.py PROTO_DIR ADDR CA_PEM CLIENT_CERT CLIENT_KEY READ_TOKEN PLACE_TOKEN

Checks: no credentials is UNAUTHENTICATED; a read-only token reads but may
not place an order (PERMISSION_DENIED); a token with orders:place places one;
a client certificate is accepted. Exits non-zero on any mismatch.
"""

import importlib
import sys
import tempfile
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from mall_client import check, generate  # noqa: E402


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def main() -> None:
    proto_dir, addr, ca, cert, key, read_token, place_token = sys.argv[1:8]
    root = Path(ca).read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(proto_dir), Path(tmp))
        ord_pb = importlib.import_module("mall.order.v1.order_pb2")
        ord_grpc = importlib.import_module("mall.order.v1.order_pb2_grpc")

        server_only = grpc.ssl_channel_credentials(root_certificates=root)
        orders = ord_grpc.OrderServiceStub(grpc.secure_channel(addr, server_only))
        place = ord_pb.PlaceOrderRequest(customer_id=1, product_id=1, product_name="TV", qty=1, address="Seoul")
        bearer = lambda token: [("authorization", f"Bearer {token}")]  # noqa: E731

        code = code_of(lambda: orders.GetOrder(ord_pb.GetOrderRequest(id=424242), timeout=10))
        check(code == grpc.StatusCode.UNAUTHENTICATED, f"no credentials: {code}")
        code = code_of(lambda: orders.GetOrder(ord_pb.GetOrderRequest(id=424242), timeout=10,
                                               metadata=bearer(read_token)))
        check(code == grpc.StatusCode.NOT_FOUND, f"read token reading: {code}")
        code = code_of(lambda: orders.PlaceOrder(place, timeout=10, metadata=bearer(read_token)))
        check(code == grpc.StatusCode.PERMISSION_DENIED, f"read token placing: {code}")
        order = orders.PlaceOrder(place, timeout=10, metadata=bearer(place_token))
        check(order.status == ord_pb.ORDER_STATUS_PENDING, f"placed with a token: {order.status}")

        mutual = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=Path(key).read_bytes(),
            certificate_chain=Path(cert).read_bytes(),
        )
        with_cert = ord_grpc.OrderServiceStub(grpc.secure_channel(addr, mutual))
        order = with_cert.PlaceOrder(place, timeout=10)
        check(order.status == ord_pb.ORDER_STATUS_PENDING, f"placed with a certificate: {order.status}")
    print("secure python client OK")


if __name__ == "__main__":
    main()
