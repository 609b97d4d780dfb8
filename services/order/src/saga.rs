//! The order side of the saga (steps 3 and 4): load, decide, store.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use mall_saga::OrderInbound;
use platform_service::cloudevents::{Envelope, Poison};
use platform_service::consumer::{ApplyError, EventHandler, Tx};
use platform_service::outbox::Outbox;

use crate::domain::{self, OrderStatus, Outcome};
use crate::metrics::{SagaMetrics, age_seconds};
use crate::schema::orders;

platform_service::fixed_statement! {
    /// An order's settled status and why (prepared once per connection:
    /// diesel would plan its `UPDATE` on every call).
    struct SettleOrder;
    "UPDATE orders SET status = "
    { status: OrderStatus as diesel::sql_types::Text } ", reason = "
    { reason: String as diesel::sql_types::Text } ", updated_at = now() WHERE id = "
    { id: i64 as diesel::sql_types::BigInt } ""
}

/// Applies stock and delivery outcomes to orders.
pub struct OrderSaga {
    outbox: Outbox,
    metrics: SagaMetrics,
}

impl OrderSaga {
    /// Writes its events through `outbox`; times each saga into `metrics`.
    pub fn new(outbox: Outbox, metrics: SagaMetrics) -> Self {
        Self { outbox, metrics }
    }

    async fn settle(&self, tx: Tx<'_>, outcome: &Outcome) -> Result<(), ApplyError> {
        let Tx {
            conn,
            envelope,
            trace,
        } = tx;
        let order_id = envelope.key;
        let found: Option<(OrderStatus, f64)> = orders::table
            .find(order_id)
            .select((orders::status, age_seconds()))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some((status, age)) = found else {
            return Err(Poison::new(format!("order {order_id} does not exist")).into());
        };
        let Some(transition) = domain::settle(order_id, status, outcome) else {
            tracing::info!(order_id, %status, event_type = %envelope.event_type, "Order already settled; event recorded only.");
            return Ok(());
        };
        SettleOrder {
            status: transition.status,
            reason: transition.reason.clone(),
            id: order_id,
        }
        .execute(conn)
        .await?;
        tracing::info!(order_id, status = %transition.status, reason = %transition.reason, "Order settled.");
        self.metrics.finished(transition.status, age);
        self.outbox
            .enqueue(conn, order_id, &transition.emit.outgoing(), trace)
            .await?;
        Ok(())
    }
}

impl EventHandler for OrderSaga {
    type Event = Outcome;

    fn decode(&self, envelope: &Envelope) -> Result<Option<Outcome>, Poison> {
        Ok(OrderInbound::decode(envelope)?.map(|event| match event {
            OrderInbound::StockDecreased(_) => Outcome::StockTaken,
            OrderInbound::StockDecreaseFailed(refused) => Outcome::StockRefused(refused.reason),
            OrderInbound::DeliveryFailed(failed) => Outcome::DeliveryFailed(failed.reason),
        }))
    }

    async fn apply(&self, tx: Tx<'_>, outcome: &Outcome) -> Result<(), ApplyError> {
        self.settle(tx, outcome).await
    }
}
