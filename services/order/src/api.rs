//! The `mall.order.v1.OrderService` gRPC API.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use mall_proto::order::v1::order_service_server::OrderService;
use mall_proto::order::v1::{
    CancelOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order,
    OrderCreated, OrderStatus as WireStatus, PlaceOrderRequest,
};
use platform_service::auth::Caller;
use platform_service::cloudevents::{
    TRACEPARENT, TRACESTATE, Trace, valid_traceparent, valid_tracestate,
};
use platform_service::db::PgPool;
use platform_service::error::ApiError as Error;
use platform_service::outbox::{Outbox, Outgoing};
use platform_service::paging::{self, Page};
use platform_service::{find_row, validate};
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
    /// The validated fields' fingerprint, for telling a retry from a
    /// different request.
    fn fingerprint(&self) -> String {
        requests::fingerprint(&[
            self.customer_id.to_string().as_bytes(),
            self.product_id.to_string().as_bytes(),
            self.product_name.as_bytes(),
            self.qty.to_string().as_bytes(),
            self.address.as_bytes(),
        ])
    }
}

/// Who is calling, as far as orders care: the subject request ids are
/// scoped to ("" without authentication), and the customer a token is
/// bound to, if any.
struct Acting {
    subject: String,
    customer: Option<i64>,
}

impl Acting {
    fn of<T>(request: &Request<T>) -> Self {
        let caller = Caller::of(request);
        Self {
            subject: caller.map(|c| c.subject.clone()).unwrap_or_default(),
            customer: caller.and_then(|c| c.customer),
        }
    }

    /// Whether this caller may see or act on an order of `customer_id`.
    fn may_touch(&self, customer_id: i64) -> bool {
        self.customer.is_none_or(|own| own == customer_id)
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
        let acting = Acting::of(&request);
        let request = request.into_inner();
        let new_order = NewOrder::try_from(&request)?;
        if let Some(own) = acting.customer
            && own != new_order.customer_id
        {
            return Err(Error::PermissionDenied(format!(
                "these credentials act for customer {own}, not customer {}",
                new_order.customer_id
            ))
            .into());
        }
        let key = requests::parse(
            &request.request_id,
            &acting.subject,
            Method::Place,
            new_order.fingerprint(),
        )?;
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
        let acting = Acting::of(&request);
        let id = request.into_inner().id;
        let row = find_row!(self.pool, orders::table, id, OrderRow, missing(id)).await?;
        // Another customer's order is not there, as far as this caller knows.
        if !acting.may_touch(row.customer_id) {
            return Err(Error::NotFound(missing(id)).into());
        }
        Ok(Response::new(row.into()))
    }

    async fn list_orders(
        &self,
        request: Request<ListOrdersRequest>,
    ) -> Result<Response<ListOrdersResponse>, Status> {
        let acting = Acting::of(&request);
        let request = request.into_inner();
        let load = async |conn: &mut diesel_async::AsyncPgConnection, page: Page| {
            let mut query = orders::table
                .filter(orders::id.gt(page.after))
                .order(orders::id)
                .limit(page.size)
                .select(OrderRow::as_select())
                .into_boxed();
            if let Some(own) = acting.customer {
                query = query.filter(orders::customer_id.eq(own));
            }
            query.load(conn).await
        };
        let (rows, next_page_token) = paging::serve(
            &self.pool,
            request.page_size,
            &request.page_token,
            load,
            |r: &OrderRow| r.id,
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
        let acting = Acting::of(&request);
        let request = request.into_inner();
        let id = request.id;
        let key = requests::parse(
            &request.request_id,
            &acting.subject,
            Method::Cancel,
            requests::fingerprint(&[id.to_string().as_bytes()]),
        )?;
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
                    .filter(|(row, _)| acting.may_touch(row.customer_id))
                    .ok_or_else(|| Error::NotFound(missing(id)))?;
                let transition = domain::cancel(id, row.status, &row.reason)
                    .map_err(|refused| Error::FailedPrecondition(refused.to_string()))?;
                // Cancelled already: nothing changes, so nothing is stored.
                let Some(transition) = transition else {
                    return Ok(row);
                };
                if let Some(key) = &key
                    && !requests::store(conn, key, id).await?
                {
                    return Err(request_race());
                }
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
