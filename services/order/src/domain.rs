//! The order's rules, with no I/O: which status an order moves to and which
//! event that emits.
//!
//! `saga.rs` and `api.rs` load the order, ask these functions, and store
//! what they answer; everything here is tested without a database.

use mall_proto::order::v1::{
    OrderApproved, OrderCancelled, OrderCreated, OrderRejected, OrderStatus as WireStatus,
};
use platform_service::outbox::Outgoing;
use platform_service::text_enum;

text_enum! {
    /// Where an order stands; stored as text in `orders.status`.
    pub enum OrderStatus {
        /// Placed; waiting for stock and delivery.
        Pending => "PENDING",
        /// Stock taken and delivery started.
        Approved => "APPROVED",
        /// Stock or delivery failed.
        Rejected => "REJECTED",
        /// Cancelled by the customer.
        Cancelled => "CANCELLED",
    }
}

impl From<OrderStatus> for WireStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::Pending,
            OrderStatus::Approved => Self::Approved,
            OrderStatus::Rejected => Self::Rejected,
            OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// What a customer asks for in `PlaceOrder`, checked by the API's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Who orders.
    pub customer_id: i64,
    /// What.
    pub product_id: i64,
    /// Its name as the customer saw it.
    pub product_name: String,
    /// How many.
    pub qty: i64,
    /// Where to.
    pub address: String,
}

/// Where a placed order starts (saga step 0): waiting for stock and
/// delivery.
pub const PLACED: OrderStatus = OrderStatus::Pending;

/// Saga step 0: the event that announces order `order_id`, placed as
/// `wanted` says; it starts the saga (step 1 is delivery's answer to it).
pub fn place(order_id: i64, wanted: &Wanted) -> OrderCreated {
    OrderCreated {
        order_id,
        customer_id: wanted.customer_id,
        product_id: wanted.product_id,
        product_name: wanted.product_name.clone(),
        qty: wanted.qty,
        address: wanted.address.clone(),
    }
}

/// What the other services said about an order (saga steps 3 and 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `StockDecreased`: the stock was taken.
    StockTaken,
    /// `StockDecreaseFailed`, with its reason.
    StockRefused(String),
    /// `DeliveryFailed`, with its reason.
    DeliveryFailed(String),
}

/// An event the order service emits.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEmit {
    /// Step 3.
    Approved(OrderApproved),
    /// Step 4.
    Rejected(OrderRejected),
    /// `CancelOrder`.
    Cancelled(OrderCancelled),
}

impl OrderEmit {
    /// The event as the outbox stores it.
    pub fn outgoing(&self) -> Outgoing {
        match self {
            Self::Approved(event) => Outgoing::of(event),
            Self::Rejected(event) => Outgoing::of(event),
            Self::Cancelled(event) => Outgoing::of(event),
        }
    }
}

/// A move of an order to a new status, and the event that announces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The new status.
    pub status: OrderStatus,
    /// Why, for the customer (`Order.reason`).
    pub reason: String,
    /// The event to write to the outbox in the same transaction.
    pub emit: OrderEmit,
}

/// Settles a pending order with what stock or delivery said. `None`: the
/// order was settled (or cancelled) already, so the late event changes nothing.
pub fn settle(order_id: i64, status: OrderStatus, outcome: &Outcome) -> Option<Transition> {
    if status != OrderStatus::Pending {
        return None;
    }
    Some(match outcome {
        Outcome::StockTaken => Transition {
            status: OrderStatus::Approved,
            reason: String::new(),
            emit: OrderEmit::Approved(OrderApproved { order_id }),
        },
        Outcome::StockRefused(why) => reject(order_id, format!("stock: {why}")),
        Outcome::DeliveryFailed(why) => reject(order_id, format!("delivery: {why}")),
    })
}

fn reject(order_id: i64, reason: String) -> Transition {
    let reason = mall_saga::limits::clip_reason(reason);
    Transition {
        status: OrderStatus::Rejected,
        emit: OrderEmit::Rejected(OrderRejected {
            order_id,
            reason: reason.clone(),
        }),
        reason,
    }
}

/// Why an order cannot be cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order {order_id} was rejected ({reason}) and cannot be cancelled")]
pub struct CannotCancel {
    /// The order.
    pub order_id: i64,
    /// Why it was rejected.
    pub reason: String,
}

/// Cancels an order at the customer's request. `Ok(None)`: it is cancelled
/// already, and cancelling again changes nothing (the call is idempotent).
pub fn cancel(
    order_id: i64,
    status: OrderStatus,
    reason: &str,
) -> Result<Option<Transition>, CannotCancel> {
    match status {
        OrderStatus::Pending | OrderStatus::Approved => Ok(Some(Transition {
            status: OrderStatus::Cancelled,
            reason: "cancelled by the customer".to_owned(),
            emit: OrderEmit::Cancelled(OrderCancelled { order_id }),
        })),
        OrderStatus::Cancelled => Ok(None),
        OrderStatus::Rejected => Err(CannotCancel {
            order_id,
            reason: reason.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [OrderStatus; 4] = [
        OrderStatus::Pending,
        OrderStatus::Approved,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ];

    #[test]
    fn step_0_a_placed_order_is_pending_and_announced_with_what_was_asked() {
        assert_eq!(PLACED, OrderStatus::Pending);
        let wanted = Wanted {
            customer_id: 3,
            product_id: 5,
            product_name: "tea".into(),
            qty: 2,
            address: "Seoul".into(),
        };
        let created = place(9, &wanted);
        assert_eq!(
            created,
            OrderCreated {
                order_id: 9,
                customer_id: 3,
                product_id: 5,
                product_name: "tea".into(),
                qty: 2,
                address: "Seoul".into(),
            }
        );
    }

    #[test]
    fn step_3_stock_taken_approves_a_pending_order() {
        let t = settle(7, OrderStatus::Pending, &Outcome::StockTaken).expect("settles");
        assert_eq!(t.status, OrderStatus::Approved);
        assert_eq!(t.emit, OrderEmit::Approved(OrderApproved { order_id: 7 }));
    }

    #[test]
    fn step_4_stock_or_delivery_failure_rejects_with_the_reason() {
        let t = settle(
            7,
            OrderStatus::Pending,
            &Outcome::StockRefused("none".into()),
        )
        .expect("settles");
        assert_eq!(t.status, OrderStatus::Rejected);
        assert_eq!(t.reason, "stock: none");
        let t = settle(
            8,
            OrderStatus::Pending,
            &Outcome::DeliveryFailed("x".into()),
        )
        .expect("settles");
        assert_eq!(t.status, OrderStatus::Rejected);
        assert_eq!(
            t.emit,
            OrderEmit::Rejected(OrderRejected {
                order_id: 8,
                reason: "delivery: x".into()
            })
        );
    }

    #[test]
    fn step_4_a_rejection_reason_stays_within_what_consumers_accept() {
        let longest = "x".repeat(mall_saga::limits::MAX_REASON_CHARS);
        let t = settle(7, OrderStatus::Pending, &Outcome::StockRefused(longest)).expect("settles");
        assert_eq!(
            t.reason.chars().count(),
            mall_saga::limits::MAX_REASON_CHARS
        );
        assert!(t.reason.starts_with("stock: "));
    }

    #[test]
    fn late_events_change_nothing_once_settled_or_cancelled() {
        let outcomes = [
            Outcome::StockTaken,
            Outcome::StockRefused("r".into()),
            Outcome::DeliveryFailed("r".into()),
        ];
        for status in ALL.into_iter().filter(|s| *s != OrderStatus::Pending) {
            for outcome in &outcomes {
                assert_eq!(settle(1, status, outcome), None, "{status:?} {outcome:?}");
            }
        }
    }

    #[test]
    fn pending_and_approved_orders_can_be_cancelled() {
        for status in [OrderStatus::Pending, OrderStatus::Approved] {
            let t = cancel(3, status, "").expect("allowed").expect("a change");
            assert_eq!(t.status, OrderStatus::Cancelled);
            assert_eq!(t.emit, OrderEmit::Cancelled(OrderCancelled { order_id: 3 }));
        }
    }

    #[test]
    fn cancelling_twice_changes_nothing_and_a_rejected_order_refuses() {
        assert_eq!(cancel(3, OrderStatus::Cancelled, ""), Ok(None));
        let refused = cancel(3, OrderStatus::Rejected, "stock: none").expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "order 3 was rejected (stock: none) and cannot be cancelled"
        );
    }

    #[test]
    fn statuses_round_trip_through_their_stored_text() {
        for status in ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        assert!("SHIPPED".parse::<OrderStatus>().is_err());
    }
}
