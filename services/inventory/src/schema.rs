//! Diesel schema of the inventory database (see `migrations/inventory`).

diesel::table! {
    inventories (id) {
        id -> BigInt,
        product_name -> Text,
        stock -> BigInt,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    reservations (order_id) {
        order_id -> BigInt,
        product_id -> Nullable<BigInt>,
        qty -> BigInt,
        created_at -> Timestamptz,
        released_at -> Nullable<Timestamptz>,
        status -> Text,
    }
}

diesel::joinable!(reservations -> inventories (product_id));
diesel::allow_tables_to_appear_in_same_query!(inventories, reservations);
