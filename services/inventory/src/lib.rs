//! The inventory service: products, stock, and the stock side of the saga.
//!
//! It takes stock when a delivery starts (`DeliveryStarted` →
//! `StockDecreased` / `StockDecreaseFailed`) and gives it back, once, when a
//! delivery is cancelled (`DeliveryCancelled` → `StockIncreased`).

mod api;
mod error;
mod saga;
mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use mall_platform::app::{self, AppError, Running, ServiceSpec};
use mall_platform::config::ServiceArgs;
use mall_platform::outbox::Outbox;
use mall_proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use error::Error;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/inventory");

/// Name, gRPC service and default port of the inventory service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "inventory",
    grpc_service: "mall.inventory.v1.InventoryService",
    default_port: 8083,
    migrations: || MIGRATIONS,
};

/// Starts the inventory service; it runs until `shutdown` fires.
pub async fn start(args: &ServiceArgs, shutdown: CancellationToken) -> Result<Running, AppError> {
    app::start(
        SPEC,
        args,
        |topics| vec![topics.delivery_events()],
        |ctx| {
            let api = api::InventoryApi::new(ctx.pool.clone());
            let handler = saga::InventorySaga::new(
                Outbox::new("/mall/inventory"),
                ctx.kafka.topics.inventory_events(),
            );
            (Routes::new(InventoryServiceServer::new(api)), handler)
        },
        shutdown,
    )
    .await
}
