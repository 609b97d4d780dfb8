//! `inventory-service`: keeps stock; takes it and gives it back for orders.

fn main() -> std::process::ExitCode {
    platform_service::app::main(
        &inventory_service::SPEC,
        env!("CARGO_PKG_VERSION"),
        inventory_service::start,
    )
}
