//! The contract's value limits (docs/contract.md), declared once: the gRPC
//! APIs refuse requests past them, and the consumers refuse events past
//! them, so no record can carry what no caller could have sent.

/// Longest product name, in characters.
pub const MAX_PRODUCT_NAME_CHARS: usize = 200;
/// Longest delivery address, in characters.
pub const MAX_ADDRESS_CHARS: usize = 500;
/// Longest reason an event carries (a refusal, a failure), in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Largest quantity of one order.
pub const MAX_QTY: i64 = 1_000_000;
/// Largest stock of one product.
pub const MAX_STOCK: i64 = 1_000_000_000_000;

/// `reason` cut to [`MAX_REASON_CHARS`] characters: a reason a service
/// emits, built from one it received plus a prefix, stays within the limit
/// its own consumers check.
pub fn clip_reason(reason: String) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((end, _)) => reason[..end].to_owned(),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_clipped_to_the_limit() {
        assert_eq!(clip_reason("stock: none".into()), "stock: none");
        let long = format!("stock: {}", "é".repeat(MAX_REASON_CHARS));
        assert_eq!(clip_reason(long).chars().count(), MAX_REASON_CHARS);
    }
}
