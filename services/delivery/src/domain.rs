//! The delivery's rules, with no I/O: saga steps 1 and 5.
//!
//! `saga.rs` loads the order's delivery (if any), asks these functions, and
//! stores what they answer; everything here is tested without a database.

use mall_proto::delivery::v1::{
    DeliveryCancelled, DeliveryFailed, DeliveryStarted, DeliveryStatus as WireStatus,
};
use mall_proto::order::v1::OrderCreated;
use platform_service::outbox::Outgoing;
use platform_service::text_enum;

text_enum! {
    /// Where a delivery stands; stored as text in `deliveries.status`.
    pub enum DeliveryStatus {
        /// On its way; stock is being taken.
        Started => "STARTED",
        /// Could not start (a blank address).
        Failed => "FAILED",
        /// Called off by a compensation.
        Cancelled => "CANCELLED",
    }
}

impl From<DeliveryStatus> for WireStatus {
    fn from(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Started => Self::Started,
            DeliveryStatus::Failed => Self::Failed,
            DeliveryStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// The reason a tombstone records, and keeps once the order's details arrive.
pub const CANCELLED_FIRST: &str = "order was cancelled before its delivery started";

/// An order's delivery as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A compensation arrived before `OrderCreated`: a cancelled delivery
    /// whose order details are not known yet. It stops the late action.
    Tombstone,
    /// A delivery made from its `OrderCreated`.
    Known {
        /// Its status.
        status: DeliveryStatus,
        /// The product, for `DeliveryCancelled`.
        product_id: i64,
        /// The quantity, for `DeliveryCancelled`.
        qty: i64,
    },
}

/// An event the delivery service emits.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryEmit {
    /// Step 1, the address is usable.
    Started(DeliveryStarted),
    /// Step 1, the address is blank.
    Failed(DeliveryFailed),
    /// Step 5.
    Cancelled(DeliveryCancelled),
}

impl DeliveryEmit {
    /// The event as the outbox stores it.
    pub fn outgoing(&self) -> Outgoing {
        match self {
            Self::Started(event) => Outgoing::of(event),
            Self::Failed(event) => Outgoing::of(event),
            Self::Cancelled(event) => Outgoing::of(event),
        }
    }
}

/// What `OrderCreated` does (step 1).
#[derive(Debug, Clone, PartialEq)]
pub enum OnCreated {
    /// Store a new delivery with this status and reason, and emit.
    Create {
        /// `STARTED` or `FAILED`.
        status: DeliveryStatus,
        /// Why it failed; empty when started.
        reason: String,
        /// `DeliveryStarted` or `DeliveryFailed`.
        emit: DeliveryEmit,
    },
    /// Fill the order's details into the tombstone; it stays cancelled and
    /// nothing is emitted (compensation before action).
    FillTombstone,
    /// The delivery exists already; nothing to do.
    Nothing,
}

/// Decides what an `OrderCreated` does to the order's delivery.
pub fn on_created(existing: Option<Delivery>, order: &OrderCreated) -> OnCreated {
    match existing {
        Some(Delivery::Tombstone) => OnCreated::FillTombstone,
        Some(Delivery::Known { .. }) => OnCreated::Nothing,
        None if order.address.trim().is_empty() => {
            let reason = "address is blank".to_owned();
            OnCreated::Create {
                status: DeliveryStatus::Failed,
                emit: DeliveryEmit::Failed(DeliveryFailed {
                    order_id: order.order_id,
                    reason: reason.clone(),
                }),
                reason,
            }
        }
        None => OnCreated::Create {
            status: DeliveryStatus::Started,
            reason: String::new(),
            emit: DeliveryEmit::Started(DeliveryStarted {
                order_id: order.order_id,
                product_id: order.product_id,
                qty: order.qty,
                customer_id: order.customer_id,
                address: order.address.clone(),
            }),
        },
    }
}

/// Why a delivery is compensated (step 5), as the order service said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compensation {
    /// `OrderRejected`, with the order's reason.
    Rejected(String),
    /// `OrderCancelled`: the customer cancelled.
    Cancelled,
}

impl Compensation {
    /// What a delivery cancelled for this cause says, for the customer
    /// (`Delivery.reason`).
    pub fn reason(&self) -> String {
        match self {
            Self::Rejected(why) => mall_saga::limits::clip_reason(format!("order rejected: {why}")),
            Self::Cancelled => "order cancelled by the customer".to_owned(),
        }
    }
}

/// What `OrderRejected` or `OrderCancelled` does (step 5).
#[derive(Debug, Clone, PartialEq)]
pub enum OnCompensation {
    /// A started delivery becomes `CANCELLED`, with `reason`, and announces it.
    Cancel {
        /// Why, for the customer.
        reason: String,
        /// `DeliveryCancelled`.
        emit: DeliveryEmit,
    },
    /// No delivery yet: leave a tombstone that stops the late `OrderCreated`.
    LeaveTombstone,
    /// Failed or cancelled already: the event is recorded only.
    Nothing,
}

/// Decides what a compensation does to the order's delivery.
pub fn on_compensation(
    order_id: i64,
    cause: &Compensation,
    existing: Option<Delivery>,
) -> OnCompensation {
    match existing {
        None => OnCompensation::LeaveTombstone,
        Some(Delivery::Known {
            status: DeliveryStatus::Started,
            product_id,
            qty,
        }) => OnCompensation::Cancel {
            reason: cause.reason(),
            emit: DeliveryEmit::Cancelled(DeliveryCancelled {
                order_id,
                product_id,
                qty,
            }),
        },
        Some(_) => OnCompensation::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(address: &str) -> OrderCreated {
        OrderCreated {
            order_id: 9,
            customer_id: 2,
            product_id: 4,
            product_name: "TV".into(),
            qty: 3,
            address: address.into(),
        }
    }

    fn known(status: DeliveryStatus) -> Delivery {
        Delivery::Known {
            status,
            product_id: 4,
            qty: 3,
        }
    }

    #[test]
    fn step_1_starts_a_delivery_and_emits_delivery_started() {
        let OnCreated::Create { status, emit, .. } = on_created(None, &created("Seoul")) else {
            panic!("expected a new delivery");
        };
        assert_eq!(status, DeliveryStatus::Started);
        let DeliveryEmit::Started(started) = emit else {
            panic!("expected DeliveryStarted");
        };
        assert_eq!(
            (
                started.order_id,
                started.product_id,
                started.qty,
                started.customer_id
            ),
            (9, 4, 3, 2)
        );
        assert_eq!(started.address, "Seoul");
    }

    #[test]
    fn step_1_a_blank_address_fails_the_delivery() {
        let decision = on_created(None, &created("  \t"));
        assert_eq!(
            decision,
            OnCreated::Create {
                status: DeliveryStatus::Failed,
                reason: "address is blank".into(),
                emit: DeliveryEmit::Failed(DeliveryFailed {
                    order_id: 9,
                    reason: "address is blank".into()
                }),
            }
        );
    }

    #[test]
    fn step_5_a_started_delivery_is_cancelled_with_its_product_and_qty() {
        assert_eq!(
            on_compensation(
                9,
                &Compensation::Cancelled,
                Some(known(DeliveryStatus::Started))
            ),
            OnCompensation::Cancel {
                reason: "order cancelled by the customer".into(),
                emit: DeliveryEmit::Cancelled(DeliveryCancelled {
                    order_id: 9,
                    product_id: 4,
                    qty: 3
                }),
            }
        );
    }

    #[test]
    fn step_5_the_reason_says_why_in_words_not_an_event_type() {
        let rejected = Compensation::Rejected("stock: insufficient stock".into());
        let decision = on_compensation(9, &rejected, Some(known(DeliveryStatus::Started)));
        let OnCompensation::Cancel { reason, .. } = decision else {
            panic!("expected a cancellation, got {decision:?}");
        };
        assert_eq!(reason, "order rejected: stock: insufficient stock");
        let long = Compensation::Rejected("x".repeat(mall_saga::limits::MAX_REASON_CHARS));
        assert_eq!(
            long.reason().chars().count(),
            mall_saga::limits::MAX_REASON_CHARS
        );
    }

    #[test]
    fn step_5_failed_or_cancelled_deliveries_only_record_the_event() {
        for status in [DeliveryStatus::Failed, DeliveryStatus::Cancelled] {
            assert_eq!(
                on_compensation(9, &Compensation::Cancelled, Some(known(status))),
                OnCompensation::Nothing
            );
        }
        assert_eq!(
            on_compensation(9, &Compensation::Cancelled, Some(Delivery::Tombstone)),
            OnCompensation::Nothing,
            "a second compensation finds the tombstone"
        );
    }

    #[test]
    fn a_compensation_before_the_action_leaves_a_tombstone_that_stops_it() {
        assert_eq!(
            on_compensation(9, &Compensation::Cancelled, None),
            OnCompensation::LeaveTombstone
        );
        assert_eq!(
            on_created(Some(Delivery::Tombstone), &created("Seoul")),
            OnCreated::FillTombstone
        );
    }

    #[test]
    fn an_existing_delivery_is_never_made_twice() {
        for status in [
            DeliveryStatus::Started,
            DeliveryStatus::Failed,
            DeliveryStatus::Cancelled,
        ] {
            assert_eq!(
                on_created(Some(known(status)), &created("Seoul")),
                OnCreated::Nothing
            );
        }
    }
}
