//! The order side of the saga: steps 3 and 4.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::FutureExt;
use futures::future::BoxFuture;
use mall_platform::cloudevents::{Envelope, Poison};
use mall_platform::consumer::{ApplyError, EventHandler};
use mall_platform::outbox::Outbox;
use mall_proto::delivery::v1::DeliveryFailed;
use mall_proto::inventory::v1::{StockDecreaseFailed, StockDecreased};
use mall_proto::order::v1::{OrderApproved, OrderRejected};

use crate::schema::orders;

/// Events the order service acts on.
pub enum OrderEvent {
    /// Stock was taken: approve.
    Approve,
    /// Stock or delivery failed: reject with this reason.
    Reject(String),
}

/// Applies stock and delivery outcomes to orders.
pub struct OrderSaga {
    outbox: Outbox,
    topic: String,
}

impl OrderSaga {
    pub fn new(outbox: Outbox, topic: String) -> Self {
        Self { outbox, topic }
    }

    async fn settle(
        &self,
        conn: &mut AsyncPgConnection,
        envelope: &Envelope,
        event: &OrderEvent,
    ) -> Result<(), ApplyError> {
        let order_id = envelope.order_id;
        let status: Option<String> = orders::table
            .find(order_id)
            .select(orders::status)
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(status) = status else {
            return Err(Poison::new(format!("order {order_id} does not exist")).into());
        };
        if status != "PENDING" {
            // Late events for a settled order change nothing.
            tracing::info!(order_id, %status, event_type = %envelope.event_type, "Order already settled; event recorded only.");
            return Ok(());
        }
        let (new_status, reason) = match event {
            OrderEvent::Approve => ("APPROVED", String::new()),
            OrderEvent::Reject(reason) => ("REJECTED", reason.clone()),
        };
        diesel::update(orders::table.find(order_id))
            .set((
                orders::status.eq(new_status),
                orders::reason.eq(&reason),
                orders::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        tracing::info!(order_id, status = new_status, %reason, "Order settled.");
        let trace = envelope.traceparent.as_deref();
        match event {
            OrderEvent::Approve => {
                self.outbox
                    .enqueue(
                        conn,
                        &self.topic,
                        order_id,
                        &OrderApproved { order_id },
                        trace,
                    )
                    .await?;
            }
            OrderEvent::Reject(_) => {
                let rejected = OrderRejected { order_id, reason };
                self.outbox
                    .enqueue(conn, &self.topic, order_id, &rejected, trace)
                    .await?;
            }
        }
        Ok(())
    }
}

impl EventHandler for OrderSaga {
    type Event = OrderEvent;

    fn decode(&self, envelope: &Envelope) -> Result<Option<OrderEvent>, Poison> {
        if envelope.is::<StockDecreased>() {
            envelope.event::<StockDecreased>()?;
            Ok(Some(OrderEvent::Approve))
        } else if envelope.is::<StockDecreaseFailed>() {
            let event: StockDecreaseFailed = envelope.event()?;
            Ok(Some(OrderEvent::Reject(format!("stock: {}", event.reason))))
        } else if envelope.is::<DeliveryFailed>() {
            let event: DeliveryFailed = envelope.event()?;
            Ok(Some(OrderEvent::Reject(format!(
                "delivery: {}",
                event.reason
            ))))
        } else {
            envelope.unhandled()
        }
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
        event: &'a OrderEvent,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        self.settle(conn, envelope, event).boxed()
    }
}
