//! `order-service`: places and cancels orders; where the saga starts.

fn main() -> std::process::ExitCode {
    platform_service::app::main(
        &order_service::SPEC,
        env!("CARGO_PKG_VERSION"),
        order_service::start,
    )
}
