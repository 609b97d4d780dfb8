//! The inventory side of the saga: steps 2 and 6.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::FutureExt;
use futures::future::BoxFuture;
use mall_platform::cloudevents::{Envelope, Poison};
use mall_platform::consumer::{ApplyError, EventHandler};
use mall_platform::inbox;
use mall_platform::outbox::Outbox;
use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryStarted};
use mall_proto::inventory::v1::{StockDecreaseFailed, StockDecreased, StockIncreased};
use prost::Name;

use crate::schema::{inventories, reservations};

/// Events the inventory service acts on.
pub enum InventoryEvent {
    /// Take stock for the order.
    Started(DeliveryStarted),
    /// Give the order's stock back, if it was taken.
    Cancelled,
}

/// Applies delivery events to stock.
pub struct InventorySaga {
    outbox: Outbox,
    topic: String,
}

impl InventorySaga {
    pub fn new(outbox: Outbox, topic: String) -> Self {
        Self { outbox, topic }
    }

    async fn take_stock(
        &self,
        conn: &mut AsyncPgConnection,
        envelope: &Envelope,
        event: &DeliveryStarted,
    ) -> Result<(), ApplyError> {
        let order_id = event.order_id;
        let trace = envelope.traceparent.as_deref();
        // A cancellation that arrived first stops the late action (compensation before action).
        if inbox::contains_any(conn, order_id, &[DeliveryCancelled::full_name()]).await? {
            tracing::info!(order_id, "Delivery was already cancelled; stock not taken.");
            return Ok(());
        }
        let stock: Option<i64> = inventories::table
            .find(event.product_id)
            .select(inventories::stock)
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let failure = match stock {
            _ if event.qty <= 0 => Some(format!("invalid quantity {}", event.qty)),
            None => Some(format!("unknown product {}", event.product_id)),
            Some(stock) if stock < event.qty => Some(format!(
                "insufficient stock: {stock} left, {} requested",
                event.qty
            )),
            Some(_) => None,
        };
        if let Some(reason) = failure {
            tracing::info!(order_id, product_id = event.product_id, %reason, "Stock decrease failed.");
            let failed = StockDecreaseFailed {
                order_id,
                product_id: event.product_id,
                qty: event.qty,
                reason,
            };
            self.outbox
                .enqueue(conn, &self.topic, order_id, &failed, trace)
                .await?;
            return Ok(());
        }
        let remaining_stock: i64 = diesel::update(inventories::table.find(event.product_id))
            .set((
                inventories::stock.eq(inventories::stock - event.qty),
                inventories::updated_at.eq(diesel::dsl::now),
            ))
            .returning(inventories::stock)
            .get_result(conn)
            .await?;
        diesel::insert_into(reservations::table)
            .values((
                reservations::order_id.eq(order_id),
                reservations::product_id.eq(event.product_id),
                reservations::qty.eq(event.qty),
            ))
            .execute(conn)
            .await?;
        tracing::info!(
            order_id,
            product_id = event.product_id,
            qty = event.qty,
            remaining_stock,
            "Stock taken."
        );
        let decreased = StockDecreased {
            order_id,
            product_id: event.product_id,
            qty: event.qty,
            remaining_stock,
        };
        self.outbox
            .enqueue(conn, &self.topic, order_id, &decreased, trace)
            .await?;
        Ok(())
    }

    async fn give_back(
        &self,
        conn: &mut AsyncPgConnection,
        envelope: &Envelope,
    ) -> Result<(), ApplyError> {
        let order_id = envelope.order_id;
        let reservation: Option<(i64, i64)> = reservations::table
            .find(order_id)
            .filter(reservations::released_at.is_null())
            .select((reservations::product_id, reservations::qty))
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some((product_id, qty)) = reservation else {
            tracing::info!(
                order_id,
                "No stock was taken for this order; nothing to give back."
            );
            return Ok(());
        };
        diesel::update(reservations::table.find(order_id))
            .set(reservations::released_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        let remaining_stock: i64 = diesel::update(inventories::table.find(product_id))
            .set((
                inventories::stock.eq(inventories::stock + qty),
                inventories::updated_at.eq(diesel::dsl::now),
            ))
            .returning(inventories::stock)
            .get_result(conn)
            .await?;
        tracing::info!(
            order_id,
            product_id,
            qty,
            remaining_stock,
            "Stock given back."
        );
        let increased = StockIncreased {
            order_id,
            product_id,
            qty,
            remaining_stock,
        };
        let trace = envelope.traceparent.as_deref();
        self.outbox
            .enqueue(conn, &self.topic, order_id, &increased, trace)
            .await?;
        Ok(())
    }
}

impl EventHandler for InventorySaga {
    type Event = InventoryEvent;

    fn decode(&self, envelope: &Envelope) -> Result<Option<InventoryEvent>, Poison> {
        if envelope.is::<DeliveryStarted>() {
            Ok(Some(InventoryEvent::Started(envelope.event()?)))
        } else if envelope.is::<DeliveryCancelled>() {
            envelope.event::<DeliveryCancelled>()?;
            Ok(Some(InventoryEvent::Cancelled))
        } else {
            envelope.unhandled()
        }
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        envelope: &'a Envelope,
        event: &'a InventoryEvent,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        match event {
            InventoryEvent::Started(started) => self.take_stock(conn, envelope, started).boxed(),
            InventoryEvent::Cancelled => self.give_back(conn, envelope).boxed(),
        }
    }
}
