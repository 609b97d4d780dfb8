//! Compiles `proto/mall/**` with a vendored protoc and exports the file
//! descriptor set that the servers use for gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mall/order/v1/order.proto",
    "mall/order/v1/events.proto",
    "mall/delivery/v1/delivery.proto",
    "mall/delivery/v1/events.proto",
    "mall/inventory/v1/inventory.proto",
    "mall/inventory/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?)
        .enable_type_names();
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(out_dir.join("mall_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["."])?;
    println!("cargo:rerun-if-changed=mall");
    Ok(())
}
