//! What each saga event may carry: the contract's limits, checked when a
//! consumer decodes the event, with the same rules as the gRPC APIs. A
//! value past them makes the record poison, dead-lettered with the reason,
//! instead of reaching the database (where a NUL byte or an out-of-range
//! number would fail, or a megabyte of text would be stored and sent on).

use mall_proto::delivery::v1::{DeliveryCancelled, DeliveryFailed, DeliveryStarted};
use mall_proto::inventory::v1::{StockDecreaseFailed, StockDecreased, StockIncreased};
use mall_proto::order::v1::{OrderApproved, OrderCancelled, OrderCreated, OrderRejected};
use platform_envelope::validate::{in_range, text};

use crate::limits::{
    MAX_ADDRESS_CHARS, MAX_PRODUCT_NAME_CHARS, MAX_QTY, MAX_REASON_CHARS, MAX_STOCK,
};

/// An event whose fields can be checked against the contract.
pub trait Checked {
    /// `Err` with the first field that breaks a rule, and why.
    fn check(&self) -> Result<(), String>;
}

fn id(field: &str, value: i64) -> Result<(), String> {
    in_range(field, value, 1, i64::MAX).map(drop)
}

fn qty(value: i64) -> Result<(), String> {
    in_range("qty", value, 1, MAX_QTY).map(drop)
}

fn stock(value: i64) -> Result<(), String> {
    in_range("remaining_stock", value, 0, MAX_STOCK).map(drop)
}

fn reason(value: &str) -> Result<(), String> {
    text("reason", value, MAX_REASON_CHARS, true).map(drop)
}

fn address(value: &str) -> Result<(), String> {
    text("address", value, MAX_ADDRESS_CHARS, true).map(drop)
}

impl Checked for OrderCreated {
    fn check(&self) -> Result<(), String> {
        id("customer_id", self.customer_id)?;
        id("product_id", self.product_id)?;
        text(
            "product_name",
            &self.product_name,
            MAX_PRODUCT_NAME_CHARS,
            false,
        )?;
        qty(self.qty)?;
        address(&self.address)
    }
}

impl Checked for OrderRejected {
    fn check(&self) -> Result<(), String> {
        reason(&self.reason)
    }
}

impl Checked for DeliveryStarted {
    fn check(&self) -> Result<(), String> {
        id("product_id", self.product_id)?;
        qty(self.qty)?;
        id("customer_id", self.customer_id)?;
        address(&self.address)
    }
}

impl Checked for DeliveryFailed {
    fn check(&self) -> Result<(), String> {
        reason(&self.reason)
    }
}

impl Checked for DeliveryCancelled {
    fn check(&self) -> Result<(), String> {
        id("product_id", self.product_id)?;
        qty(self.qty)
    }
}

impl Checked for StockDecreased {
    fn check(&self) -> Result<(), String> {
        id("product_id", self.product_id)?;
        qty(self.qty)?;
        stock(self.remaining_stock)
    }
}

impl Checked for StockDecreaseFailed {
    fn check(&self) -> Result<(), String> {
        id("product_id", self.product_id)?;
        qty(self.qty)?;
        reason(&self.reason)
    }
}

impl Checked for StockIncreased {
    fn check(&self) -> Result<(), String> {
        id("product_id", self.product_id)?;
        qty(self.qty)?;
        stock(self.remaining_stock)
    }
}

/// Events that carry nothing but their order.
macro_rules! nothing_to_check {
    ($($event:ty),*) => {
        $(impl Checked for $event {
            fn check(&self) -> Result<(), String> {
                Ok(())
            }
        })*
    };
}

nothing_to_check!(OrderApproved, OrderCancelled);

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> OrderCreated {
        OrderCreated {
            order_id: 1,
            customer_id: 1,
            product_id: 1,
            product_name: "TV".into(),
            qty: 1,
            address: "Seoul".into(),
        }
    }

    #[test]
    fn a_valid_event_passes() {
        assert_eq!(created().check(), Ok(()));
        let no_address = OrderCreated {
            address: String::new(),
            ..created()
        };
        assert_eq!(no_address.check(), Ok(()));
    }

    #[test]
    fn every_text_field_refuses_nul_control_characters_and_length() {
        let nul = OrderCreated {
            address: "a\0b".into(),
            ..created()
        };
        assert!(nul.check().expect_err("NUL").contains("address"));
        let escape = OrderCreated {
            product_name: "\u{1b}[2J".into(),
            ..created()
        };
        assert!(
            escape
                .check()
                .expect_err("control")
                .contains("product_name")
        );
        let long = StockDecreaseFailed {
            order_id: 1,
            product_id: 1,
            qty: 1,
            reason: "x".repeat(1_000_000),
        };
        assert!(long.check().expect_err("length").contains("reason"));
        let nul_reason = DeliveryFailed {
            order_id: 1,
            reason: "x\0".into(),
        };
        assert!(nul_reason.check().is_err());
        assert!(
            OrderRejected {
                order_id: 1,
                reason: "\u{7}".into()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn numbers_stay_in_the_contract_ranges() {
        let zero_qty = OrderCreated {
            qty: 0,
            ..created()
        };
        assert!(zero_qty.check().expect_err("qty").contains("qty"));
        let huge_qty = DeliveryStarted {
            order_id: 1,
            product_id: 1,
            qty: i64::MAX,
            customer_id: 1,
            address: String::new(),
        };
        assert!(huge_qty.check().is_err());
        let negative = StockDecreased {
            order_id: 1,
            product_id: 1,
            qty: 1,
            remaining_stock: -1,
        };
        assert!(negative.check().is_err());
        let no_product = DeliveryCancelled {
            order_id: 1,
            product_id: 0,
            qty: 1,
        };
        assert!(no_product.check().is_err());
    }
}
