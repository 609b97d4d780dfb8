//! The `mall.delivery.v1.DeliveryService` gRPC API (read-only).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use mall_proto::delivery::v1::delivery_service_server::DeliveryService;
use mall_proto::delivery::v1::{
    Delivery, DeliveryStatus as WireStatus, GetDeliveryRequest, ListDeliveriesRequest,
    ListDeliveriesResponse,
};
use platform_service::db::PgPool;
use platform_service::{find_row, list_page};
use tonic::{Request, Response, Status};

use crate::domain::DeliveryStatus;
use crate::schema::deliveries;

/// A delivery as stored. The order's details are missing (and shown as
/// zero and empty) only on a tombstone whose `OrderCreated` has not arrived.
#[derive(Queryable, Selectable)]
#[diesel(table_name = deliveries)]
struct DeliveryRow {
    order_id: i64,
    product_id: Option<i64>,
    qty: Option<i64>,
    customer_id: Option<i64>,
    address: Option<String>,
    status: DeliveryStatus,
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Self {
        Self {
            order_id: row.order_id,
            product_id: row.product_id.unwrap_or_default(),
            qty: row.qty.unwrap_or_default(),
            customer_id: row.customer_id.unwrap_or_default(),
            address: row.address.unwrap_or_default(),
            status: WireStatus::from(row.status).into(),
        }
    }
}

/// Serves deliveries.
pub struct DeliveryApi {
    pool: PgPool,
}

impl DeliveryApi {
    /// Reads deliveries from `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl DeliveryService for DeliveryApi {
    async fn get_delivery(
        &self,
        request: Request<GetDeliveryRequest>,
    ) -> Result<Response<Delivery>, Status> {
        let order_id = request.into_inner().order_id;
        let missing = format!(
            "no delivery for order {order_id}; the order may not exist or the saga has not reached delivery yet"
        );
        let row = find_row!(self.pool, deliveries::table, order_id, DeliveryRow, missing).await?;
        Ok(Response::new(row.into()))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let request = request.into_inner();
        let (rows, next_page_token) = list_page!(
            self.pool,
            request,
            deliveries::table,
            deliveries::order_id,
            DeliveryRow,
            |r: &DeliveryRow| r.order_id
        )
        .await?;
        Ok(Response::new(ListDeliveriesResponse {
            deliveries: rows.into_iter().map(Delivery::from).collect(),
            next_page_token,
        }))
    }
}
