//! The shared broker conformance suite with the subscribers found through the mDNS registry
//! (real multicast, on loopback, on a private port), as in a default deployment.
//!
//! The checks are listed here rather than through `broker_suite!` so that they can skip when
//! multicast on loopback is not available and `MICRO_TEST_REQUIRE_SERVICES` is not set. Add new
//! checks of the suite to the lists below.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use micro_broker_http::{HttpBroker, HttpBrokerOptions};
use micro_conformance::broker::Capabilities;
use micro_core::{Broker, Node, Registry, Service};
use micro_registry_mdns::{MdnsOptions, MdnsRegistry};

const CAPS: Capabilities = Capabilities {
    redelivery: false,
    ordered: true,
};

/// One private mDNS port for this test process (the checks use topics of their own).
fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free UDP port")
    })
}

fn registry() -> Arc<dyn Registry> {
    // Loopback only (the default interface); a longer lookup keeps a loaded machine steady.
    let opts = MdnsOptions::default()
        .with_port(port())
        .with_query_timeout(Duration::from_millis(250))
        .with_watch_interval(Duration::from_millis(500));
    Arc::new(MdnsRegistry::new(opts).expect("an mdns registry on loopback"))
}

/// Whether multicast on loopback works: a registry finds its own registration.
async fn ready() -> bool {
    let probe = async {
        let registry = registry();
        let mut svc = Service::new("micro-broker-http-probe", "latest");
        svc.nodes.push(Node {
            id: format!("probe-{}", uuid::Uuid::new_v4()),
            address: "127.0.0.1:9".into(),
            metadata: Default::default(),
        });
        registry.register(&svc, Default::default()).await?;
        let found = registry.get_service(&svc.name).await;
        registry.deregister(&svc).await?;
        found.map(|_| ())
    };
    match probe.await {
        Ok(()) => true,
        Err(e) => {
            let why = format!(
                "multicast on loopback is not available ({e}); run as root: ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo"
            );
            assert!(!micro_conformance::services_required(), "{why}");
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

fn broker() -> Arc<dyn Broker> {
    Arc::new(HttpBroker::new(registry(), HttpBrokerOptions::default()).expect("broker"))
}

macro_rules! checks {
    (plain: $($check:ident),* ; with_caps: $($capped:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if !ready().await {
                    return;
                }
                micro_conformance::broker::$check(broker()).await.expect(stringify!($check));
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $capped() {
                if !ready().await {
                    return;
                }
                micro_conformance::broker::$capped(broker(), CAPS).await.expect(stringify!($capped));
            }
        )*
    };
}

checks!(
    plain: round_trip_with_headers_and_binary_body, every_subscriber_gets_every_message,
        a_queue_group_shares_messages, manual_ack, unsubscribe_stops_delivery,
        publishing_without_subscribers_is_fine, disconnect_then_reconnect;
    with_caps: handler_errors_and_redelivery, order_is_kept,
);
