//! The inventory service: products, stock, and the stock side of the saga.
//!
//! It takes stock when a delivery starts (`DeliveryStarted` →
//! `StockDecreased` / `StockDecreaseFailed`) and gives it back, once, when a
//! delivery is cancelled (`DeliveryCancelled` → `StockIncreased`). The rules
//! are in [`domain`]; `saga` loads, decides with them, and stores.

mod api;
pub mod domain;
mod saga;
mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use mall_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use mall_saga::Service;
use platform_service::app::{self, Running};
use platform_service::boot::error::AppError;
use platform_service::config::ServiceArgs;
use platform_service::limits::MAX_REQUEST_BYTES;
use platform_service::spec::{Context, ServiceSpec};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use api::{MAX_PRODUCT_NAME_CHARS, MAX_STOCK};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/inventory");

/// Wiring, gRPC service and migrations of the inventory service.
pub const SPEC: ServiceSpec = ServiceSpec {
    wiring: Service::Inventory.wiring(),
    descriptors: mall_proto::FILE_DESCRIPTOR_SET,
    grpc_service: <InventoryServiceServer<api::InventoryApi> as NamedService>::NAME,
    migrations: || MIGRATIONS,
    rights: &[
        (
            "/mall.inventory.v1.InventoryService/CreateInventory",
            "stock:write",
        ),
        (
            "/mall.inventory.v1.InventoryService/GetInventory",
            "stock:read",
        ),
        (
            "/mall.inventory.v1.InventoryService/ListInventories",
            "stock:read",
        ),
    ],
    expiring: &[],
};

/// Starts the inventory service; it runs until `shutdown` fires.
pub async fn start(args: &ServiceArgs, shutdown: CancellationToken) -> Result<Running, AppError> {
    let build = |ctx: &Context| {
        let api = api::InventoryApi::new(ctx.pool.clone());
        let saga = saga::InventorySaga::new(ctx.outbox.clone());
        let server = InventoryServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
        (Routes::new(server), saga)
    };
    app::start(SPEC, args, build, shutdown).await
}
