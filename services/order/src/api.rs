//! The `mall.order.v1.OrderService` gRPC API.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use mall_proto::order::v1::order_service_server::OrderService;
use mall_proto::order::v1::{
    CancelOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order,
    OrderCreated, OrderStatus as WireStatus, PlaceOrderRequest,
};
use platform_service::cloudevents::{
    TRACEPARENT, TRACESTATE, Trace, valid_traceparent, valid_tracestate,
};
use platform_service::db::PgPool;
use platform_service::error::ApiError as Error;
use platform_service::outbox::{Outbox, Outgoing};
use platform_service::{find_row, list_page, validate};
use tonic::{Request, Response, Status};

use crate::domain::{self, OrderStatus};
use crate::metrics::{SagaMetrics, age_seconds};
use crate::requests::{self, Method, RequestKey};
use crate::schema::orders;

/// The contract's limits, which the consumers apply to events too.
pub use mall_saga::limits::{MAX_ADDRESS_CHARS, MAX_PRODUCT_NAME_CHARS, MAX_QTY};

/// An order as stored.
#[derive(Queryable, Selectable)]
#[diesel(table_name = orders)]
pub struct OrderRow {
    pub id: i64,
    pub customer_id: i64,
    pub product_id: i64,
    pub product_name: String,
    pub qty: i64,
    pub address: String,
    pub status: OrderStatus,
    pub reason: String,
}

impl From<OrderRow> for Order {
    fn from(row: OrderRow) -> Self {
        Self {
            id: row.id,
            customer_id: row.customer_id,
            product_id: row.product_id,
            product_name: row.product_name,
            qty: row.qty,
            address: row.address,
            status: WireStatus::from(row.status).into(),
            reason: row.reason,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = orders)]
struct NewOrder {
    customer_id: i64,
    product_id: i64,
    product_name: String,
    qty: i64,
    address: String,
    status: OrderStatus,
}

impl NewOrder {
    /// The validated fields, for telling a retry from a different request.
    fn fingerprint(&self) -> String {
        format!(
            "{:?}",
            (
                self.customer_id,
                self.product_id,
                &self.product_name,
                self.qty,
                &self.address
            )
        )
    }
}

impl TryFrom<&PlaceOrderRequest> for NewOrder {
    type Error = Error;

    fn try_from(request: &PlaceOrderRequest) -> Result<Self, Error> {
        let check = || -> Result<Self, String> {
            Ok(Self {
                customer_id: validate::in_range("customer_id", request.customer_id, 1, i64::MAX)?,
                product_id: validate::in_range("product_id", request.product_id, 1, i64::MAX)?,
                product_name: validate::text(
                    "product_name",
                    &request.product_name,
                    MAX_PRODUCT_NAME_CHARS,
                    false,
                )?,
                qty: validate::in_range("qty", request.qty, 1, MAX_QTY)?,
                address: validate::text("address", &request.address, MAX_ADDRESS_CHARS, true)?,
                status: OrderStatus::Pending,
            })
        };
        check().map_err(Error::InvalidArgument)
    }
}

/// Serves orders.
pub struct OrderApi {
    pool: PgPool,
    outbox: Outbox,
    metrics: SagaMetrics,
}

impl OrderApi {
    /// Reads and writes orders in `pool`; events go through `outbox`;
    /// cancellations end sagas timed in `metrics`.
    pub fn new(pool: PgPool, outbox: Outbox, metrics: SagaMetrics) -> Self {
        Self {
            pool,
            outbox,
            metrics,
        }
    }
}

impl OrderApi {
    /// The answer to a call whose `request_id` was seen before: the order it
    /// created or cancelled, as it is now; or the refusal of a different
    /// request that reused the id.
    async fn replayed(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        key: &RequestKey,
    ) -> Result<Option<Order>, Error> {
        let Some(stored) = requests::find(conn, key).await? else {
            return Ok(None);
        };
        let order_id = requests::replay(&stored, key)?;
        let row: OrderRow = orders::table
            .find(order_id)
            .select(OrderRow::as_select())
            .first(conn)
            .await?;
        tracing::info!(order_id, request_id = %key.id, "Retried call answered from its request_id.");
        Ok(Some(row.into()))
    }

    /// The answer after a concurrent call with the same `request_id` won:
    /// the order it stored.
    async fn race_lost(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        key: &RequestKey,
    ) -> Result<Response<Order>, Status> {
        match self.replayed(conn, key).await? {
            Some(order) => Ok(Response::new(order)),
            None => Err(request_race().into()),
        }
    }
}

fn missing(id: i64) -> String {
    format!("order {id} not found")
}

/// A concurrent call with the same `request_id` committed first.
fn request_race() -> Error {
    Error::Aborted("a concurrent call with the same request_id won; retry".into())
}

/// The call's W3C trace context (its server span's, see the platform's
/// `grpc_tracing`), if valid: an invalid one is dropped, never stored in the
/// outbox.
fn trace_of<T>(request: &Request<T>) -> (Option<String>, Option<String>) {
    let header = |name: &str| {
        request
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let parent = header(TRACEPARENT).filter(|v| valid_traceparent(v));
    let state = header(TRACESTATE).filter(|v| parent.is_some() && valid_tracestate(v));
    (parent, state)
}

/// The pair as the outbox takes it.
fn as_trace(pair: &(Option<String>, Option<String>)) -> Trace<'_> {
    Trace {
        traceparent: pair.0.as_deref(),
        tracestate: pair.1.as_deref(),
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let trace = trace_of(&request);
        let request = request.into_inner();
        let new_order = NewOrder::try_from(&request)?;
        let key = requests::parse(&request.request_id, Method::Place, new_order.fingerprint())?;
        let mut conn = self.pool.get().await.map_err(Error::from)?;
        if let Some(key) = &key
            && let Some(order) = self.replayed(&mut conn, key).await?
        {
            return Ok(Response::new(order));
        }
        let placed = conn
            .transaction::<OrderRow, Error, _>(async |conn| {
                let row: OrderRow = diesel::insert_into(orders::table)
                    .values(&new_order)
                    .returning(OrderRow::as_returning())
                    .get_result(conn)
                    .await?;
                if let Some(key) = &key
                    && !requests::store(conn, key, row.id).await?
                {
                    return Err(request_race());
                }
                let created = OrderCreated {
                    order_id: row.id,
                    customer_id: row.customer_id,
                    product_id: row.product_id,
                    product_name: row.product_name.clone(),
                    qty: row.qty,
                    address: row.address.clone(),
                };
                self.outbox
                    .enqueue(conn, row.id, &Outgoing::of(&created), as_trace(&trace))
                    .await?;
                Ok(row)
            })
            .await;
        let row = match (placed, &key) {
            (Ok(row), _) => row,
            // A concurrent retry committed first: answer with its order.
            (Err(Error::Aborted(_)), Some(key)) => return self.race_lost(&mut conn, key).await,
            (Err(error), _) => return Err(error.into()),
        };
        tracing::info!(
            order_id = row.id,
            product_id = row.product_id,
            qty = row.qty,
            "Order placed."
        );
        Ok(Response::new(row.into()))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let id = request.into_inner().id;
        let row = find_row!(self.pool, orders::table, id, OrderRow, missing(id)).await?;
        Ok(Response::new(row.into()))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let request = request.into_inner();
        let (rows, next_page_token) = list_page!(
            self.pool,
            request,
            orders::table,
            orders::id,
            OrderRow,
            |r: &OrderRow| r.id
        )
        .await?;
        Ok(Response::new(ListOrdersResponse {
            orders: rows.into_iter().map(Order::from).collect(),
            next_page_token,
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<CancelOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let trace = trace_of(&request);
        let request = request.into_inner();
        let id = request.id;
        let key = requests::parse(&request.request_id, Method::Cancel, id.to_string())?;
        let mut conn = self.pool.get().await.map_err(Error::from)?;
        if let Some(key) = &key
            && let Some(order) = self.replayed(&mut conn, key).await?
        {
            return Ok(Response::new(order));
        }
        let cancelled = conn
            .transaction::<OrderRow, Error, _>(async |conn| {
                let (row, age): (OrderRow, f64) = orders::table
                    .find(id)
                    .select((OrderRow::as_select(), age_seconds()))
                    .for_update()
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| Error::NotFound(missing(id)))?;
                if let Some(key) = &key
                    && !requests::store(conn, key, id).await?
                {
                    return Err(request_race());
                }
                let transition = domain::cancel(id, row.status, &row.reason)
                    .map_err(|refused| Error::FailedPrecondition(refused.to_string()))?;
                let Some(transition) = transition else {
                    return Ok(row);
                };
                let row: OrderRow = diesel::update(orders::table.find(id))
                    .set((
                        orders::status.eq(transition.status),
                        orders::reason.eq(&transition.reason),
                        orders::updated_at.eq(diesel::dsl::now),
                    ))
                    .returning(OrderRow::as_returning())
                    .get_result(conn)
                    .await?;
                let emit = transition.emit.outgoing();
                self.outbox
                    .enqueue(conn, id, &emit, as_trace(&trace))
                    .await?;
                tracing::info!(order_id = id, "Order cancelled.");
                self.metrics.finished(row.status, age);
                Ok(row)
            })
            .await;
        match (cancelled, &key) {
            (Ok(row), _) => Ok(Response::new(row.into())),
            (Err(Error::Aborted(_)), Some(key)) => self.race_lost(&mut conn, key).await,
            (Err(error), _) => Err(error.into()),
        }
    }
}
