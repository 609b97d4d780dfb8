//! The order service: where the saga starts and ends.
//!
//! `PlaceOrder` stores a PENDING order and emits `OrderCreated`; stock and
//! delivery events then approve or reject it, and `CancelOrder` cancels it
//! and emits `OrderCancelled` for the others to compensate. The rules are in
//! [`domain`]; `api` and `saga` load, decide with them, and store.

mod api;
pub mod domain;
mod ids;
mod metrics;
mod place;
mod requests;
mod saga;
mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use mall_proto::order::v1::order_service_server::OrderServiceServer;
use mall_saga::Service;
use platform_service::app::{self, Running};
use platform_service::boot::error::AppError;
use platform_service::config::ServiceArgs;
use platform_service::limits::MAX_REQUEST_BYTES;
use platform_service::spec::{Context, ServiceSpec};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use api::{MAX_ADDRESS_CHARS, MAX_PRODUCT_NAME_CHARS, MAX_QTY};
/// `PlaceOrder`'s one statement, in the pieces its parameters go between.
pub use place::PIECES as PLACE_ORDER_STATEMENT;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/order");

/// Wiring, gRPC service and migrations of the order service.
pub const SPEC: ServiceSpec = ServiceSpec {
    wiring: Service::Order.wiring(),
    descriptors: mall_proto::FILE_DESCRIPTOR_SET,
    grpc_service: <OrderServiceServer<api::OrderApi> as NamedService>::NAME,
    migrations: || MIGRATIONS,
    rights: &[
        ("/mall.order.v1.OrderService/PlaceOrder", "orders:place"),
        ("/mall.order.v1.OrderService/CancelOrder", "orders:cancel"),
        ("/mall.order.v1.OrderService/GetOrder", "orders:read"),
        ("/mall.order.v1.OrderService/ListOrders", "orders:read"),
    ],
    expiring: &[(requests::EXPIRING, |args: &ServiceArgs| {
        args.request_id_retention
    })],
};

/// Starts the order service; it runs until `shutdown` fires.
pub async fn start(args: &ServiceArgs, shutdown: CancellationToken) -> Result<Running, AppError> {
    let build = |ctx: &Context| {
        let metrics = metrics::SagaMetrics::new(&ctx.metrics);
        let api = api::OrderApi::new(ctx.pool.clone(), ctx.outbox.clone(), metrics.clone());
        let saga = saga::OrderSaga::new(ctx.outbox.clone(), metrics);
        let server = OrderServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
        (Routes::new(server), saga)
    };
    app::start(SPEC, args, build, shutdown).await
}
