//! Generates tonic's server and client for `examples/greeter/proto/greeter.proto`, with the
//! `protoc` of `protoc-bin-vendored` unless `PROTOC` names another.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../examples/greeter/proto");
    let proto = root.join("greeter.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &[proto], &[root])?;
    Ok(())
}
