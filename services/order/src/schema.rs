//! Diesel schema of the order database (see `migrations/order`).

diesel::table! {
    orders (id) {
        id -> BigInt,
        customer_id -> BigInt,
        product_id -> BigInt,
        product_name -> Text,
        qty -> BigInt,
        address -> Text,
        status -> Text,
        reason -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    request_ids (caller, request_id) {
        caller -> Text,
        request_id -> Text,
        method -> Text,
        fingerprint -> Text,
        order_id -> BigInt,
        created_at -> Timestamptz,
    }
}
