//! The `mall.order.v1.OrderService` gRPC API.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use mall_proto::order::v1::order_service_server::OrderService;
use mall_proto::order::v1::{
    CancelOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order,
    OrderStatus as WireStatus, PlaceOrderRequest,
};
use platform_service::auth::Caller;
use platform_service::db::PgPool;
use platform_service::error::ApiError as Error;
use platform_service::grpc::observe::CallTrace;
use platform_service::outbox::Outbox;
use platform_service::paging::{self, Page};
use platform_service::{find_row, validate};
use tonic::{Request, Response, Status};

use crate::domain::{self, OrderStatus, Wanted};
use crate::ids::OrderIds;
use crate::metrics::{SagaMetrics, age_seconds};
use crate::place::{self, Placed};
use crate::requests::{self, Method, Step};
use crate::schema::orders;

/// The contract's limits, which the consumers apply to events too.
pub use mall_saga::limits::{MAX_ADDRESS_CHARS, MAX_PRODUCT_NAME_CHARS, MAX_QTY};

/// An order as stored.
#[derive(Queryable, QueryableByName, Selectable)]
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

/// The validated fields' fingerprint, for telling a retry from a different
/// request.
fn fingerprint(wanted: &Wanted) -> String {
    requests::fingerprint(&[
        wanted.customer_id.to_string().as_bytes(),
        wanted.product_id.to_string().as_bytes(),
        wanted.product_name.as_bytes(),
        wanted.qty.to_string().as_bytes(),
        wanted.address.as_bytes(),
    ])
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

/// The API's rules (docs/contract.md) on a `PlaceOrder` request.
fn wanted(request: &PlaceOrderRequest) -> Result<Wanted, Error> {
    let check = || -> Result<Wanted, String> {
        Ok(Wanted {
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
        })
    };
    check().map_err(Error::InvalidArgument)
}

/// Serves orders.
pub struct OrderApi {
    pool: PgPool,
    outbox: Outbox,
    metrics: SagaMetrics,
    ids: OrderIds,
}

impl OrderApi {
    /// Reads and writes orders in `pool`; events go through `outbox`;
    /// cancellations end sagas timed in `metrics`.
    pub fn new(pool: PgPool, outbox: Outbox, metrics: SagaMetrics) -> Self {
        Self {
            pool,
            outbox,
            metrics,
            ids: OrderIds::default(),
        }
    }
}

impl OrderApi {
    /// The answer to a call whose `request_id` was seen: order `order_id`
    /// as it is now.
    async fn answer(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        order_id: i64,
    ) -> Result<Response<Order>, Status> {
        let row: OrderRow = orders::table
            .find(order_id)
            .select(OrderRow::as_select())
            .first(conn)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(row.into()))
    }
}

fn missing(id: i64) -> String {
    format!("order {id} not found")
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let trace = CallTrace::of(&request);
        let acting = Acting::of(&request);
        let request = request.into_inner();
        let wanted = wanted(&request)?;
        if let Some(own) = acting.customer
            && own != wanted.customer_id
        {
            return Err(Error::PermissionDenied(format!(
                "these credentials act for customer {own}, not customer {}",
                wanted.customer_id
            ))
            .into());
        }
        let key = requests::parse(
            &request.request_id,
            &acting.subject,
            Method::Place,
            fingerprint(&wanted),
        )?;
        let mut conn = self.pool.get().await.map_err(Error::from)?;
        let id = self.ids.next(&mut conn).await.map_err(Error::from)?;
        let placed = place::place(&mut conn, id, &wanted, key, &self.outbox, trace.as_trace())
            .await
            .map_err(Error::from)?;
        let row = match placed {
            Placed::Order(row) => row,
            Placed::Taken(key) => {
                let order_id = requests::replayed(&mut conn, &key).await?;
                return self.answer(&mut conn, order_id).await;
            }
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
        let trace = CallTrace::of(&request);
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
        let key = match requests::before(&mut conn, key).await? {
            Step::Answer(order_id) => return self.answer(&mut conn, order_id).await,
            Step::Go(key) => key,
        };
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
                requests::remember(conn, key.as_ref(), id).await?;
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
                    .enqueue(conn, id, &emit, trace.as_trace())
                    .await?;
                tracing::info!(order_id = id, "Order cancelled.");
                self.metrics.finished(row.status, age);
                Ok(row)
            })
            .await;
        match requests::after(&mut conn, key.as_ref(), cancelled).await? {
            Step::Answer(order_id) => self.answer(&mut conn, order_id).await,
            Step::Go(row) => Ok(Response::new(row.into())),
        }
    }
}
