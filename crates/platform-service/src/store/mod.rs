//! Everything a service keeps in PostgreSQL for the platform: the pool and
//! migrations, the outbox writer, the inbox gate, the retention janitors and
//! domain states stored as text.

pub mod db;
pub mod inbox;
pub mod outbox;
pub mod retention;
pub mod text_enum;
