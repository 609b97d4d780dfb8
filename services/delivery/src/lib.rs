//! The delivery service: one delivery per order, keyed by the order id.
//!
//! It starts (or fails) a delivery when an order is created
//! (`OrderCreated` → `DeliveryStarted` / `DeliveryFailed`) and cancels a
//! started delivery when the order is rejected or cancelled
//! (`OrderRejected` / `OrderCancelled` → `DeliveryCancelled`).

mod api;
mod error;
mod saga;
mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use mall_platform::app::{self, AppError, Running, ServiceSpec};
use mall_platform::config::ServiceArgs;
use mall_platform::outbox::Outbox;
use mall_proto::delivery::v1::delivery_service_server::DeliveryServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use error::Error;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/delivery");

/// Name, gRPC service and default port of the delivery service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "delivery",
    grpc_service: "mall.delivery.v1.DeliveryService",
    default_port: 8082,
    migrations: || MIGRATIONS,
};

/// Starts the delivery service; it runs until `shutdown` fires.
pub async fn start(args: &ServiceArgs, shutdown: CancellationToken) -> Result<Running, AppError> {
    app::start(
        SPEC,
        args,
        |topics| vec![topics.order_events()],
        |ctx| {
            let api = api::DeliveryApi::new(ctx.pool.clone());
            let handler = saga::DeliverySaga::new(
                Outbox::new("/mall/delivery"),
                ctx.kafka.topics.delivery_events(),
            );
            (Routes::new(DeliveryServiceServer::new(api)), handler)
        },
        shutdown,
    )
    .await
}
