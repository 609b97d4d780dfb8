//! Diesel schema of the delivery database (see `migrations/delivery`).

diesel::table! {
    deliveries (order_id) {
        order_id -> BigInt,
        product_id -> Nullable<BigInt>,
        qty -> Nullable<BigInt>,
        customer_id -> Nullable<BigInt>,
        address -> Nullable<Text>,
        status -> Text,
        reason -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}
