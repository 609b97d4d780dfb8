//! Everything a service keeps in PostgreSQL for the platform: the pool and
//! migrations, the outbox writer, the inbox gate, the retention janitors,
//! domain states stored as text, and statements kept prepared.

pub mod db;
pub mod fixed;
pub mod inbox;
pub mod outbox;
pub mod retention;
pub mod text_enum;
