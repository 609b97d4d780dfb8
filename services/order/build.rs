//! Rebuilds when a migration is added: `embed_migrations!` reads the
//! folder at compile time, and cargo does not watch it by itself.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations/order");
    println!("cargo:rerun-if-changed=../../migrations/shared");
}
