//! The NATS the tests share: `127.0.0.1:4222` (or `MICRO_TEST_NATS_ADDRESS`), as
//! `scripts/test.sh` starts it.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use micro_registry_nats::NatsRegistryOptions;

/// The address of the shared NATS when it accepts connections; else `None` after saying why
/// (the test then skips), or a panic when `MICRO_TEST_REQUIRE_SERVICES=1`.
pub(crate) fn nats_address() -> Option<String> {
    let address = std::env::var("MICRO_TEST_NATS_ADDRESS")
        .ok()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:4222".to_string());
    let reachable = address
        .parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(address);
    }
    let why = format!(
        "no NATS at {address}: start it with `nats-server -a 127.0.0.1 -p 4222` \
         (Debian package nats-server; scripts/test.sh does this)"
    );
    assert!(
        !micro_conformance::services_required(),
        "{why} (MICRO_TEST_REQUIRE_SERVICES is set)"
    );
    eprintln!("SKIPPED: {why}");
    None
}

/// Registry options for the shared NATS.
pub(crate) fn options(address: &str) -> NatsRegistryOptions {
    let mut opts = NatsRegistryOptions::from_address(address);
    opts.connect_timeout = Duration::from_secs(3);
    opts
}

/// Options with subjects of their own, so that a test's peers see no other test's traffic.
pub(crate) fn private_options(address: &str) -> NatsRegistryOptions {
    let tag = micro_conformance::registry::unique("t");
    options(address).with_subjects(format!("test.{tag}.query"), format!("test.{tag}.watch"))
}
