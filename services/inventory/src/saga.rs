//! The inventory side of the saga (steps 2 and 6): load, decide, store.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use mall_proto::delivery::v1::DeliveryStarted;
use mall_saga::InventoryInbound;
use platform_service::cloudevents::{Envelope, Poison};
use platform_service::consumer::{ApplyError, EventHandler, Tx};
use platform_service::outbox::Outbox;

use crate::domain::{self, OnCancelled, OnStarted, Reservation, ReservationStatus};
use crate::schema::{inventories, reservations};

/// Events the inventory service acts on.
pub enum InventoryEvent {
    /// Step 2.
    Started(DeliveryStarted),
    /// Step 6.
    Cancelled,
}

/// Applies delivery events to stock.
pub struct InventorySaga {
    outbox: Outbox,
}

/// The order's reservation, locked for the rest of the transaction.
async fn reservation(
    conn: &mut AsyncPgConnection,
    order_id: i64,
) -> QueryResult<Option<Reservation>> {
    let row: Option<(ReservationStatus, Option<i64>, i64)> = reservations::table
        .find(order_id)
        .select((
            reservations::status,
            reservations::product_id,
            reservations::qty,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    row.map(|(status, product_id, qty)| {
        Reservation::of_row(status, product_id, qty).ok_or_else(|| {
            diesel::result::Error::DeserializationError(
                format!("reservation of order {order_id}: {status} without a product").into(),
            )
        })
    })
    .transpose()
}

/// A product's stock, locked for the rest of the transaction.
async fn stock(conn: &mut AsyncPgConnection, product_id: i64) -> QueryResult<Option<i64>> {
    inventories::table
        .find(product_id)
        .select(inventories::stock)
        .for_update()
        .first(conn)
        .await
        .optional()
}

platform_service::fixed_statement! {
    /// A product's new stock (prepared once per connection: diesel would
    /// plan its `UPDATE` on every call).
    struct SetStock;
    "UPDATE inventories SET stock = "
    { stock: i64 as diesel::sql_types::BigInt } ", updated_at = now() WHERE id = "
    { product_id: i64 as diesel::sql_types::BigInt } ""
}

async fn set_stock(conn: &mut AsyncPgConnection, product_id: i64, stock: i64) -> QueryResult<()> {
    SetStock { stock, product_id }.execute(conn).await.map(drop)
}

impl InventorySaga {
    /// Writes its events through `outbox`.
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    async fn started(&self, tx: Tx<'_>, started: &DeliveryStarted) -> Result<(), ApplyError> {
        let Tx { conn, trace, .. } = tx;
        let order_id = started.order_id;
        let existing = reservation(conn, order_id).await?;
        let current = match existing {
            None => stock(conn, started.product_id).await?,
            Some(_) => None,
        };
        match domain::on_started(existing, current, started) {
            OnStarted::Take { stock, emit } => {
                set_stock(conn, started.product_id, stock).await?;
                diesel::insert_into(reservations::table)
                    .values((
                        reservations::order_id.eq(order_id),
                        reservations::product_id.eq(started.product_id),
                        reservations::qty.eq(started.qty),
                        reservations::status.eq(ReservationStatus::Taken),
                    ))
                    .execute(conn)
                    .await?;
                tracing::info!(
                    order_id,
                    product_id = started.product_id,
                    qty = started.qty,
                    remaining_stock = stock,
                    "Stock taken."
                );
                self.outbox
                    .enqueue(conn, order_id, &emit.outgoing(), trace)
                    .await?;
            }
            OnStarted::Refuse(emit) => {
                tracing::info!(
                    order_id,
                    product_id = started.product_id,
                    "Stock decrease failed."
                );
                self.outbox
                    .enqueue(conn, order_id, &emit.outgoing(), trace)
                    .await?;
            }
            OnStarted::Nothing => {
                tracing::info!(
                    order_id,
                    "The order's stock was taken or cancelled already; nothing taken."
                );
            }
        }
        Ok(())
    }

    async fn cancelled(&self, tx: Tx<'_>) -> Result<(), ApplyError> {
        let Tx {
            conn,
            envelope,
            trace,
        } = tx;
        let order_id = envelope.key;
        match domain::on_cancelled(reservation(conn, order_id).await?) {
            OnCancelled::GiveBack { product_id, qty } => {
                let Some(current) = stock(conn, product_id).await? else {
                    return Err(Poison::new(format!(
                        "product {product_id} of a reservation is gone"
                    ))
                    .into());
                };
                let (remaining_stock, emit) = domain::give_back(order_id, product_id, qty, current);
                set_stock(conn, product_id, remaining_stock).await?;
                diesel::update(reservations::table.find(order_id))
                    .set((
                        reservations::status.eq(ReservationStatus::Released),
                        reservations::released_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                tracing::info!(
                    order_id,
                    product_id,
                    qty,
                    remaining_stock,
                    "Stock given back."
                );
                self.outbox
                    .enqueue(conn, order_id, &emit.outgoing(), trace)
                    .await?;
            }
            OnCancelled::LeaveTombstone => {
                diesel::insert_into(reservations::table)
                    .values((
                        reservations::order_id.eq(order_id),
                        reservations::qty.eq(0),
                        reservations::status.eq(ReservationStatus::NeverTaken),
                        reservations::released_at.eq(diesel::dsl::now),
                    ))
                    .execute(conn)
                    .await?;
                tracing::info!(
                    order_id,
                    "No stock was taken for this order; a tombstone stops a late taking."
                );
            }
            OnCancelled::Nothing => {
                tracing::info!(
                    order_id,
                    "The order's stock was given back already or never taken; nothing to do."
                );
            }
        }
        Ok(())
    }
}

impl EventHandler for InventorySaga {
    type Event = InventoryEvent;

    fn decode(&self, envelope: &Envelope) -> Result<Option<InventoryEvent>, Poison> {
        Ok(
            InventoryInbound::decode(envelope)?.map(|event| match event {
                InventoryInbound::DeliveryStarted(started) => InventoryEvent::Started(started),
                InventoryInbound::DeliveryCancelled(_) => InventoryEvent::Cancelled,
            }),
        )
    }

    async fn apply(&self, tx: Tx<'_>, event: &InventoryEvent) -> Result<(), ApplyError> {
        match event {
            InventoryEvent::Started(started) => self.started(tx, started).await,
            InventoryEvent::Cancelled => self.cancelled(tx).await,
        }
    }

    /// The stock rows of every product the run touches, ascending by id:
    /// the products of the deliveries started, and those the cancelled
    /// orders reserved (their reservations cannot change meanwhile: the
    /// run holds those orders' locks).
    async fn lock_shared_rows(
        &self,
        conn: &mut AsyncPgConnection,
        run: &[(&Envelope, &InventoryEvent)],
    ) -> QueryResult<()> {
        let cancelled: Vec<i64> = run
            .iter()
            .filter(|(_, event)| matches!(event, InventoryEvent::Cancelled))
            .map(|(envelope, _)| envelope.key)
            .collect();
        let mut products: Vec<i64> = run
            .iter()
            .filter_map(|(_, event)| match event {
                InventoryEvent::Started(started) => Some(started.product_id),
                InventoryEvent::Cancelled => None,
            })
            .collect();
        if !cancelled.is_empty() {
            let reserved: Vec<Option<i64>> = reservations::table
                .filter(reservations::order_id.eq_any(&cancelled))
                .select(reservations::product_id)
                .load(conn)
                .await?;
            products.extend(reserved.into_iter().flatten());
        }
        products.sort_unstable();
        products.dedup();
        if products.len() > 1 {
            let _: Vec<i64> = inventories::table
                .filter(inventories::id.eq_any(&products))
                .order(inventories::id)
                .select(inventories::id)
                .for_update()
                .load(conn)
                .await?;
        }
        Ok(())
    }
}
