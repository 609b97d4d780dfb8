//! The inventory's rules, with no I/O: saga steps 2 and 6.
//!
//! `saga.rs` loads the order's reservation and the product's stock, asks
//! these functions, and stores what they answer; everything here is tested
//! without a database.

use mall_proto::delivery::v1::DeliveryStarted;
use mall_proto::inventory::v1::{StockDecreaseFailed, StockDecreased, StockIncreased};
use platform_service::outbox::Outgoing;
use platform_service::text_enum;

text_enum! {
    /// What happened to an order's stock; stored as text in `reservations.status`.
    pub enum ReservationStatus {
        /// The stock is taken for the order.
        Taken => "TAKEN",
        /// It was taken and given back, once.
        Released => "RELEASED",
        /// A `DeliveryCancelled` found no stock taken (it was refused, or the
        /// cancellation arrived before its `DeliveryStarted`): a tombstone
        /// that stops a late or replayed `DeliveryStarted`.
        NeverTaken => "NEVER_TAKEN",
    }
}

/// An order's reservation as the rules see it: only stock that is taken
/// has a product and a quantity to give back (the table's
/// `reservations_shape` check says the same for the rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// `qty` of `product_id` is taken for the order.
    Taken {
        /// The product.
        product_id: i64,
        /// How much was taken.
        qty: i64,
    },
    /// It was taken and given back, once.
    Released,
    /// A tombstone: a cancellation found nothing taken.
    NeverTaken,
}

impl Reservation {
    /// The reservation a stored row describes; `None` for a row of a shape
    /// the table's check refuses (`TAKEN` without a product).
    pub fn of_row(status: ReservationStatus, product_id: Option<i64>, qty: i64) -> Option<Self> {
        match status {
            ReservationStatus::Taken => Some(Self::Taken {
                product_id: product_id?,
                qty,
            }),
            ReservationStatus::Released => Some(Self::Released),
            ReservationStatus::NeverTaken => Some(Self::NeverTaken),
        }
    }
}

/// An event the inventory service emits.
#[derive(Debug, Clone, PartialEq)]
pub enum InventoryEmit {
    /// Step 2, stock taken.
    Decreased(StockDecreased),
    /// Step 2, stock refused.
    DecreaseFailed(StockDecreaseFailed),
    /// Step 6.
    Increased(StockIncreased),
}

impl InventoryEmit {
    /// The event as the outbox stores it.
    pub fn outgoing(&self) -> Outgoing {
        match self {
            Self::Decreased(event) => Outgoing::of(event),
            Self::DecreaseFailed(event) => Outgoing::of(event),
            Self::Increased(event) => Outgoing::of(event),
        }
    }
}

/// What `DeliveryStarted` does (step 2).
#[derive(Debug, Clone, PartialEq)]
pub enum OnStarted {
    /// Take the stock: the product's stock becomes `stock`, a `TAKEN`
    /// reservation is stored, and `StockDecreased` is emitted.
    Take {
        /// The product's stock afterwards.
        stock: i64,
        /// `StockDecreased`.
        emit: InventoryEmit,
    },
    /// Take nothing and emit `StockDecreaseFailed` with a reason.
    Refuse(InventoryEmit),
    /// The order already has a reservation (taken, given back, or a
    /// tombstone left by a cancellation that arrived first): take nothing.
    Nothing,
}

/// Decides what a `DeliveryStarted` does, given the order's reservation and
/// the product's current stock (`None`: no such product).
pub fn on_started(
    reservation: Option<Reservation>,
    stock: Option<i64>,
    started: &DeliveryStarted,
) -> OnStarted {
    if reservation.is_some() {
        return OnStarted::Nothing;
    }
    let refuse = |reason: String| {
        OnStarted::Refuse(InventoryEmit::DecreaseFailed(StockDecreaseFailed {
            order_id: started.order_id,
            product_id: started.product_id,
            qty: started.qty,
            reason,
        }))
    };
    match stock {
        _ if started.qty <= 0 => refuse(format!("invalid quantity {}", started.qty)),
        None => refuse(format!("unknown product {}", started.product_id)),
        // `>=`, not `>`: the last unit can be sold (docs/saga.md, mistake 6).
        Some(stock) if stock >= started.qty => OnStarted::Take {
            stock: stock - started.qty,
            emit: InventoryEmit::Decreased(StockDecreased {
                order_id: started.order_id,
                product_id: started.product_id,
                qty: started.qty,
                remaining_stock: stock - started.qty,
            }),
        },
        Some(stock) => refuse(format!(
            "insufficient stock: {stock} left, {} requested",
            started.qty
        )),
    }
}

/// What `DeliveryCancelled` does (step 6), before the stock is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCancelled {
    /// Give `qty` of `product_id` back (see [`give_back`]).
    GiveBack {
        /// The product.
        product_id: i64,
        /// How much was taken.
        qty: i64,
    },
    /// No reservation yet: leave a `NEVER_TAKEN` tombstone.
    LeaveTombstone,
    /// Given back already, or never taken: the event is recorded only.
    Nothing,
}

/// Decides what a `DeliveryCancelled` does, given the order's reservation.
pub fn on_cancelled(reservation: Option<Reservation>) -> OnCancelled {
    match reservation {
        None => OnCancelled::LeaveTombstone,
        Some(Reservation::Taken { product_id, qty }) => OnCancelled::GiveBack { product_id, qty },
        Some(Reservation::Released | Reservation::NeverTaken) => OnCancelled::Nothing,
    }
}

/// Gives `qty` back to a product that has `stock` now: the new stock and
/// the `StockIncreased` that announces it.
pub fn give_back(order_id: i64, product_id: i64, qty: i64, stock: i64) -> (i64, InventoryEmit) {
    let remaining_stock = stock + qty;
    let emit = InventoryEmit::Increased(StockIncreased {
        order_id,
        product_id,
        qty,
        remaining_stock,
    });
    (remaining_stock, emit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(qty: i64) -> DeliveryStarted {
        DeliveryStarted {
            order_id: 5,
            product_id: 2,
            qty,
            customer_id: 1,
            address: "Seoul".into(),
        }
    }

    fn reason(decision: &OnStarted) -> &str {
        match decision {
            OnStarted::Refuse(InventoryEmit::DecreaseFailed(failed)) => &failed.reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn reservation(status: ReservationStatus) -> Reservation {
        let product = (status != ReservationStatus::NeverTaken).then_some(2);
        Reservation::of_row(status, product, 3).expect("a row of the table's shape")
    }

    const TOMBSTONE: Reservation = Reservation::NeverTaken;

    #[test]
    fn only_a_taken_row_has_something_to_give_back() {
        assert_eq!(
            Reservation::of_row(ReservationStatus::Taken, Some(2), 3),
            Some(Reservation::Taken {
                product_id: 2,
                qty: 3
            })
        );
        assert_eq!(Reservation::of_row(ReservationStatus::Taken, None, 3), None);
        assert_eq!(
            Reservation::of_row(ReservationStatus::Released, Some(2), 3),
            Some(Reservation::Released)
        );
    }

    #[test]
    fn step_2_takes_stock_when_enough_including_the_last_unit() {
        for (stock, left) in [(10, 7), (3, 0)] {
            assert_eq!(
                on_started(None, Some(stock), &started(3)),
                OnStarted::Take {
                    stock: left,
                    emit: InventoryEmit::Decreased(StockDecreased {
                        order_id: 5,
                        product_id: 2,
                        qty: 3,
                        remaining_stock: left
                    })
                }
            );
        }
    }

    #[test]
    fn step_2_refuses_short_stock_unknown_products_and_bad_quantities() {
        assert_eq!(
            reason(&on_started(None, Some(2), &started(3))),
            "insufficient stock: 2 left, 3 requested"
        );
        assert_eq!(
            reason(&on_started(None, None, &started(3))),
            "unknown product 2"
        );
        assert_eq!(
            reason(&on_started(None, Some(10), &started(0))),
            "invalid quantity 0"
        );
    }

    #[test]
    fn step_2_never_takes_stock_twice_or_after_a_cancellation() {
        for existing in [
            reservation(ReservationStatus::Taken),
            reservation(ReservationStatus::Released),
            TOMBSTONE,
        ] {
            assert_eq!(
                on_started(Some(existing), Some(10), &started(3)),
                OnStarted::Nothing,
                "{existing:?}"
            );
        }
    }

    #[test]
    fn step_6_gives_taken_stock_back_once() {
        assert_eq!(
            on_cancelled(Some(reservation(ReservationStatus::Taken))),
            OnCancelled::GiveBack {
                product_id: 2,
                qty: 3
            }
        );
        assert_eq!(
            on_cancelled(Some(reservation(ReservationStatus::Released))),
            OnCancelled::Nothing
        );
        let (stock, emit) = give_back(5, 2, 3, 7);
        assert_eq!(stock, 10);
        assert_eq!(
            emit,
            InventoryEmit::Increased(StockIncreased {
                order_id: 5,
                product_id: 2,
                qty: 3,
                remaining_stock: 10
            })
        );
    }

    #[test]
    fn a_cancellation_before_the_action_leaves_a_tombstone_once() {
        assert_eq!(on_cancelled(None), OnCancelled::LeaveTombstone);
        assert_eq!(on_cancelled(Some(TOMBSTONE)), OnCancelled::Nothing);
    }

    #[test]
    fn statuses_round_trip_through_their_stored_text() {
        for status in [
            ReservationStatus::Taken,
            ReservationStatus::Released,
            ReservationStatus::NeverTaken,
        ] {
            assert_eq!(status.as_str().parse::<ReservationStatus>(), Ok(status));
        }
    }
}
