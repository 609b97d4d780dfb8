//! The order service: where the saga starts and ends.
//!
//! `PlaceOrder` stores a PENDING order and emits `OrderCreated`; stock and
//! delivery events then approve or reject it, and `CancelOrder` cancels it
//! and emits `OrderCancelled` for the others to compensate.

mod api;
mod error;
mod requests;
mod saga;
mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use mall_platform::app::{self, AppError, Running, ServiceSpec};
use mall_platform::config::ServiceArgs;
use mall_platform::outbox::Outbox;
use mall_proto::order::v1::order_service_server::OrderServiceServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use error::Error;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/order");

/// Name, gRPC service and default port of the order service.
pub const SPEC: ServiceSpec = ServiceSpec {
    name: "order",
    grpc_service: "mall.order.v1.OrderService",
    default_port: 8081,
    migrations: || MIGRATIONS,
};

/// Starts the order service; it runs until `shutdown` fires.
pub async fn start(args: &ServiceArgs, shutdown: CancellationToken) -> Result<Running, AppError> {
    app::start(
        SPEC,
        args,
        |topics| vec![topics.inventory_events(), topics.delivery_events()],
        |ctx| {
            let outbox = Outbox::new("/mall/order");
            let topic = ctx.kafka.topics.order_events();
            let api = api::OrderApi::new(ctx.pool.clone(), outbox.clone(), topic.clone());
            let handler = saga::OrderSaga::new(outbox, topic);
            (Routes::new(OrderServiceServer::new(api)), handler)
        },
        shutdown,
    )
    .await
}
