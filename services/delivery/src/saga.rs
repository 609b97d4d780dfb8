//! The delivery side of the saga (steps 1 and 5): load, decide, store.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use mall_proto::order::v1::OrderCreated;
use mall_saga::DeliveryInbound;
use platform_service::cloudevents::{Envelope, Poison};
use platform_service::consumer::{ApplyError, EventHandler, Tx};
use platform_service::outbox::Outbox;

use crate::domain::{
    self, CANCELLED_FIRST, Compensation, Delivery, DeliveryStatus, OnCompensation, OnCreated,
};
use crate::schema::deliveries;

/// Events the delivery service acts on.
pub enum DeliveryEvent {
    /// Step 1.
    Created(OrderCreated),
    /// Step 5 (`OrderRejected` or `OrderCancelled`), with its cause.
    Compensate(Compensation),
}

/// Applies order events to deliveries.
pub struct DeliverySaga {
    outbox: Outbox,
}

/// The order's delivery, locked for the rest of the transaction.
async fn load(conn: &mut AsyncPgConnection, order_id: i64) -> QueryResult<Option<Delivery>> {
    let row: Option<(DeliveryStatus, Option<i64>, Option<i64>)> = deliveries::table
        .find(order_id)
        .select((deliveries::status, deliveries::product_id, deliveries::qty))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(
        row.map(|(status, product_id, qty)| match (product_id, qty) {
            (Some(product_id), Some(qty)) => Delivery::Known {
                status,
                product_id,
                qty,
            },
            _ => Delivery::Tombstone,
        }),
    )
}

impl DeliverySaga {
    /// Writes its events through `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    async fn created(&self, tx: Tx<'_>, order: &OrderCreated) -> Result<(), ApplyError> {
        let Tx { conn, trace, .. } = tx;
        let order_id = order.order_id;
        let details = (
            deliveries::product_id.eq(order.product_id),
            deliveries::qty.eq(order.qty),
            deliveries::customer_id.eq(order.customer_id),
            deliveries::address.eq(&order.address),
        );
        match domain::on_created(load(conn, order_id).await?, order) {
            OnCreated::Create {
                status,
                reason,
                emit,
            } => {
                diesel::insert_into(deliveries::table)
                    .values((
                        deliveries::order_id.eq(order_id),
                        details,
                        deliveries::status.eq(status),
                        deliveries::reason.eq(&reason),
                    ))
                    .execute(conn)
                    .await?;
                tracing::info!(order_id, %status, %reason, "Delivery recorded.");
                self.outbox
                    .enqueue(conn, order_id, &emit.outgoing(), trace)
                    .await?;
            }
            OnCreated::FillTombstone => {
                diesel::update(deliveries::table.find(order_id))
                    .set((details, deliveries::updated_at.eq(diesel::dsl::now)))
                    .execute(conn)
                    .await?;
                tracing::info!(
                    order_id,
                    "The order was cancelled before its delivery started; nothing started."
                );
            }
            OnCreated::Nothing => {
                tracing::info!(order_id, "Delivery already exists; nothing to do.");
            }
        }
        Ok(())
    }

    async fn compensate(&self, tx: Tx<'_>, cause: &Compensation) -> Result<(), ApplyError> {
        let Tx {
            conn,
            envelope,
            trace,
        } = tx;
        let order_id = envelope.key;
        match domain::on_compensation(order_id, cause, load(conn, order_id).await?) {
            OnCompensation::Cancel { reason, emit } => {
                diesel::update(deliveries::table.find(order_id))
                    .set((
                        deliveries::status.eq(DeliveryStatus::Cancelled),
                        deliveries::reason.eq(&reason),
                        deliveries::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                tracing::info!(order_id, "Delivery cancelled.");
                self.outbox
                    .enqueue(conn, order_id, &emit.outgoing(), trace)
                    .await?;
            }
            OnCompensation::LeaveTombstone => {
                diesel::insert_into(deliveries::table)
                    .values((
                        deliveries::order_id.eq(order_id),
                        deliveries::status.eq(DeliveryStatus::Cancelled),
                        deliveries::reason.eq(CANCELLED_FIRST),
                    ))
                    .execute(conn)
                    .await?;
                tracing::info!(order_id, event_type = %envelope.event_type, "No delivery yet; a tombstone stops the late one.");
            }
            OnCompensation::Nothing => {
                tracing::info!(order_id, event_type = %envelope.event_type, "No started delivery; compensation recorded only.");
            }
        }
        Ok(())
    }
}

impl EventHandler for DeliverySaga {
    type Event = DeliveryEvent;

    fn decode(&self, envelope: &Envelope) -> Result<Option<DeliveryEvent>, Poison> {
        Ok(DeliveryInbound::decode(envelope)?.map(|event| match event {
            DeliveryInbound::OrderCreated(order) => DeliveryEvent::Created(order),
            DeliveryInbound::OrderRejected(rejected) => {
                DeliveryEvent::Compensate(Compensation::Rejected(rejected.reason))
            }
            DeliveryInbound::OrderCancelled(_) => {
                DeliveryEvent::Compensate(Compensation::Cancelled)
            }
        }))
    }

    async fn apply(&self, tx: Tx<'_>, event: &DeliveryEvent) -> Result<(), ApplyError> {
        match event {
            DeliveryEvent::Created(order) => self.created(tx, order).await,
            DeliveryEvent::Compensate(cause) => self.compensate(tx, cause).await,
        }
    }
}
