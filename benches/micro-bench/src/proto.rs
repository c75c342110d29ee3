//! The echo service (`proto/echo.proto`), generated twice by `build.rs`.

/// Micro's messages, `EchoClient` and `Echo` handler trait (by `micro-build`).
#[allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
pub(crate) mod micro_echo {
    include!(concat!(env!("OUT_DIR"), "/micro/echo.rs"));
    include!(concat!(env!("OUT_DIR"), "/micro/echo.serde.rs"));
}

/// tonic's messages, client and server (by `tonic-prost-build`).
#[allow(missing_docs, unreachable_pub, dead_code, clippy::all)]
pub(crate) mod tonic_echo {
    include!(concat!(env!("OUT_DIR"), "/tonic/echo.rs"));
}
