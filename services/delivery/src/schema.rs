//! Diesel schema of the delivery database (see `migrations/delivery`).

diesel::table! {
    deliveries (order_id) {
        order_id -> BigInt,
        product_id -> BigInt,
        qty -> BigInt,
        customer_id -> BigInt,
        address -> Text,
        status -> Text,
        reason -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}
