//! `delivery-service`: starts and cancels deliveries as orders come and go.

fn main() -> std::process::ExitCode {
    platform_service::app::main(
        &delivery_service::SPEC,
        env!("CARGO_PKG_VERSION"),
        delivery_service::start,
    )
}
