//! The shared registry conformance suite against real multicast on loopback.
//!
//! The checks are listed here rather than through `registry_suite!` so that they can skip, as
//! the other tests of this crate do, when multicast on loopback is not available and
//! `MICRO_TEST_REQUIRE_SERVICES` is not set. Add new checks of the suite to the list below.

use std::sync::Arc;
use std::time::Duration;

use micro_core::Registry;
use micro_registry_mdns::{MdnsOptions, MdnsRegistry};

/// One port for this test process, shared by its checks (their service names are unique) and
/// apart from the ports of `tests/loopback.rs`.
fn port() -> u16 {
    30000 + (std::process::id() % 2000) as u16
}

/// Whether multicast on loopback works: a registry finds its own registration.
async fn ready() -> bool {
    let probe = async {
        let reg = MdnsRegistry::new(MdnsOptions::default().with_port(port()))?;
        let name = micro_conformance::registry::unique("probe");
        let svc = micro_conformance::registry::sample(&name, "latest", &["p"]);
        reg.register(&svc, Default::default()).await?;
        let found = reg.get_service(&name).await;
        reg.deregister(&svc).await?;
        found.map(|_| ())
    };
    match probe.await {
        Ok(()) => true,
        Err(e) => {
            let mut why = format!("multicast on loopback is not available ({e})");
            if !why.contains("ip link") {
                why.push_str(
                    "; run as root: ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo",
                );
            }
            assert!(!micro_conformance::services_required(), "{why}");
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

fn registry() -> Arc<dyn Registry> {
    // A longer lookup than the default 100 ms keeps the checks steady on a loaded machine.
    let opts = MdnsOptions::default()
        .with_port(port())
        .with_query_timeout(Duration::from_millis(250))
        .with_watch_interval(Duration::from_millis(500));
    Arc::new(MdnsRegistry::new(opts).expect("mdns registry on loopback"))
}

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if !ready().await {
                    return;
                }
                micro_conformance::registry::$check(registry())
                    .await
                    .expect(stringify!($check));
            }
        )*
    };
}

checks!(
    register_get_list_deregister,
    nodes_and_versions,
    metadata_and_endpoints_round_trip,
    expires_after_ttl,
    watch_reports_changes,
    reregistering_is_idempotent,
    concurrent_registrations,
    deregistering_unknown_is_harmless,
    unknown_service_is_not_found,
);
