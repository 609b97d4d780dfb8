//! The delivery side of the saga: steps 1 and 5.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::FutureExt;
use futures::future::BoxFuture;
use mall_platform::cloudevents::{Envelope, Poison};
use mall_platform::consumer::{ApplyError, EventHandler};
use mall_platform::inbox;
use mall_platform::outbox::Outbox;
use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryFailed, DeliveryStarted};
use mall_proto::order::v1::{OrderCancelled, OrderCreated, OrderRejected};
use prost::Name;

use crate::schema::deliveries;

/// Events the delivery service acts on.
pub enum DeliveryEvent {
    /// Start (or fail) the order's delivery.
    Created(OrderCreated),
    /// Cancel the order's delivery if it started (`OrderRejected` or `OrderCancelled`).
    Compensate,
}

/// Applies order events to deliveries.
pub struct DeliverySaga {
    outbox: Outbox,
    topic: String,
}

impl DeliverySaga {
    pub fn new(outbox: Outbox, topic: String) -> Self {
        Self { outbox, topic }
    }

    async fn start(
        &self,
        conn: &mut AsyncPgConnection,
        envelope: &Envelope,
        event: &OrderCreated,
    ) -> Result<(), ApplyError> {
        let order_id = event.order_id;
        let trace = envelope.traceparent.as_deref();
        let compensations = [OrderCancelled::full_name(), OrderRejected::full_name()];
        let (status, reason) = if inbox::contains_any(conn, order_id, &compensations).await? {
            // Compensation before action: the order was already cancelled or rejected.
            (
                "CANCELLED",
                "order was cancelled before its delivery started".to_owned(),
            )
        } else if event.address.trim().is_empty() {
            ("FAILED", "address is blank".to_owned())
        } else {
            ("STARTED", String::new())
        };
        let inserted = diesel::insert_into(deliveries::table)
            .values((
                deliveries::order_id.eq(order_id),
                deliveries::product_id.eq(event.product_id),
                deliveries::qty.eq(event.qty),
                deliveries::customer_id.eq(event.customer_id),
                deliveries::address.eq(&event.address),
                deliveries::status.eq(status),
                deliveries::reason.eq(&reason),
            ))
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        if inserted == 0 {
            tracing::info!(order_id, "Delivery already exists; nothing to do.");
            return Ok(());
        }
        tracing::info!(order_id, status, %reason, "Delivery recorded.");
        match status {
            "STARTED" => {
                let started = DeliveryStarted {
                    order_id,
                    product_id: event.product_id,
                    qty: event.qty,
                    customer_id: event.customer_id,
                    address: event.address.clone(),
                };
                self.outbox
                    .enqueue(conn, &self.topic, order_id, &started, trace)
                    .await?;
            }
            "FAILED" => {
                let failed = DeliveryFailed { order_id, reason };
                self.outbox
                    .enqueue(conn, &self.topic, order_id, &failed, trace)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn cancel(
        &self,
        conn: &mut AsyncPgConnection,
        envelope: &Envelope,
    ) -> Result<(), ApplyError> {
        let order_id = envelope.order_id;
        let started: Option<(i64, i64)> = deliveries::table
            .find(order_id)
            .filter(deliveries::status.eq("STARTED"))
            .select((deliveries::product_id, deliveries::qty))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some((product_id, qty)) = started else {
            tracing::info!(order_id, event_type = %envelope.event_type, "No started delivery; compensation recorded only.");
            return Ok(());
        };
        diesel::update(deliveries::table.find(order_id))
            .set((
                deliveries::status.eq("CANCELLED"),
                deliveries::reason.eq(format!("{} received", envelope.event_type)),
                deliveries::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        tracing::info!(order_id, "Delivery cancelled.");
        let cancelled = DeliveryCancelled {
            order_id,
            product_id,
            qty,
        };
        let trace = envelope.traceparent.as_deref();
        self.outbox
            .enqueue(conn, &self.topic, order_id, &cancelled, trace)
            .await?;
        Ok(())
    }
}

impl EventHandler for DeliverySaga {
    type Event = DeliveryEvent;

    fn decode(&self, envelope: &Envelope) -> Result<Option<DeliveryEvent>, Poison> {
        if envelope.is::<OrderCreated>() {
            Ok(Some(DeliveryEvent::Created(envelope.event()?)))
        } else if envelope.is::<OrderRejected>() {
            envelope.event::<OrderRejected>()?;
            Ok(Some(DeliveryEvent::Compensate))
        } else if envelope.is::<OrderCancelled>() {
            envelope.event::<OrderCancelled>()?;
            Ok(Some(DeliveryEvent::Compensate))
        } else {
            envelope.unhandled()
        }
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
        event: &'a DeliveryEvent,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        match event {
            DeliveryEvent::Created(created) => self.start(conn, envelope, created).boxed(),
            DeliveryEvent::Compensate => self.cancel(conn, envelope).boxed(),
        }
    }
}
