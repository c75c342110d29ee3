//! Generates the echo service twice from `proto/echo.proto`: Micro's client and handler (by
//! `micro-build`, into `$OUT_DIR/micro`) and tonic's client and server (by `tonic-prost-build`,
//! into `$OUT_DIR/tonic`), with the `protoc` of `protoc-bin-vendored` unless `PROTOC` names one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let (micro_out, tonic_out) = (out.join("micro"), out.join("tonic"));
    std::fs::create_dir_all(&micro_out)?;
    std::fs::create_dir_all(&tonic_out)?;

    micro_build::configure()
        .out_dir(&micro_out)
        .compile_protos(&["proto/echo.proto"], &["proto"])?;

    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&tonic_out)
        .compile_with_config(config, &["proto/echo.proto"], &["proto"])?;
    Ok(())
}
