//! The `mall.delivery.v1.DeliveryService` gRPC API (read-only).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use mall_platform::db::PgPool;
use mall_platform::paging::Page;
use mall_proto::delivery::v1::delivery_service_server::DeliveryService;
use mall_proto::delivery::v1::{
    Delivery, DeliveryStatus, GetDeliveryRequest, ListDeliveriesRequest, ListDeliveriesResponse,
};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::schema::deliveries;

/// A delivery as stored.
#[derive(Queryable, Selectable)]
#[diesel(table_name = deliveries)]
struct DeliveryRow {
    order_id: i64,
    product_id: i64,
    qty: i64,
    customer_id: i64,
    address: String,
    status: String,
}

/// Maps the stored status text to the wire enum.
pub fn status_of(text: &str) -> DeliveryStatus {
    match text {
        "STARTED" => DeliveryStatus::Started,
        "FAILED" => DeliveryStatus::Failed,
        "CANCELLED" => DeliveryStatus::Cancelled,
        _ => DeliveryStatus::Unspecified,
    }
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Self {
        Self {
            order_id: row.order_id,
            product_id: row.product_id,
            qty: row.qty,
            customer_id: row.customer_id,
            address: row.address,
            status: status_of(&row.status).into(),
        }
    }
}

/// Serves deliveries.
pub struct DeliveryApi {
    pool: PgPool,
}

impl DeliveryApi {
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
        let mut conn = self.pool.get().await.map_err(Error::from)?;
        let row: Option<DeliveryRow> = deliveries::table
            .find(order_id)
            .select(DeliveryRow::as_select())
            .first(&mut conn)
            .await
            .optional()
            .map_err(Error::from)?;
        Ok(Response::new(row.ok_or(Error::NotFound(order_id))?.into()))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let request = request.into_inner();
        let page = Page::parse(request.page_size, &request.page_token).map_err(Error::from)?;
        let mut conn = self.pool.get().await.map_err(Error::from)?;
        let rows: Vec<DeliveryRow> = deliveries::table
            .filter(deliveries::order_id.gt(page.after))
            .order(deliveries::order_id)
            .limit(page.size)
            .select(DeliveryRow::as_select())
            .load(&mut conn)
            .await
            .map_err(Error::from)?;
        let next_page_token = page.next_token(rows.len(), rows.last().map(|r| r.order_id));
        Ok(Response::new(ListDeliveriesResponse {
            deliveries: rows.into_iter().map(Delivery::from).collect(),
            next_page_token,
        }))
    }
}
