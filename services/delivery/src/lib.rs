//! The delivery service: starts a delivery for every new order and cancels
//! it when the order is rejected or cancelled.
//!
//! The rules are in [`domain`]; `saga` loads, decides with them, and stores.
//! The gRPC API is read-only.

mod api;
pub mod domain;
mod saga;
mod schema;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use mall_proto::delivery::v1::delivery_service_server::DeliveryServiceServer;
use mall_saga::Service;
use platform_service::app::{self, Running};
use platform_service::boot::error::AppError;
use platform_service::config::ServiceArgs;
use platform_service::limits::MAX_REQUEST_BYTES;
use platform_service::spec::{Context, ServiceSpec};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/delivery");

/// Wiring, gRPC service and migrations of the delivery service.
pub const SPEC: ServiceSpec = ServiceSpec {
    wiring: Service::Delivery.wiring(),
    descriptors: mall_proto::FILE_DESCRIPTOR_SET,
    grpc_service: <DeliveryServiceServer<api::DeliveryApi> as NamedService>::NAME,
    migrations: || MIGRATIONS,
    rights: &[
        (
            "/mall.delivery.v1.DeliveryService/GetDelivery",
            "deliveries:read",
        ),
        (
            "/mall.delivery.v1.DeliveryService/ListDeliveries",
            "deliveries:read",
        ),
    ],
    expiring: &[],
};

/// Starts the delivery service; it runs until `shutdown` fires.
pub async fn start(args: &ServiceArgs, shutdown: CancellationToken) -> Result<Running, AppError> {
    let build = |ctx: &Context| {
        let api = api::DeliveryApi::new(ctx.pool.clone());
        let saga = saga::DeliverySaga::new(ctx.outbox.clone());
        let server = DeliveryServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
        (Routes::new(server), saga)
    };
    app::start(SPEC, args, build, shutdown).await
}
