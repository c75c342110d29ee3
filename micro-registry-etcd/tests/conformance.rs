//! The shared registry conformance suite against a private etcd, and its outage check against
//! another private etcd that is stopped and started again.

use std::sync::Arc;

use micro_conformance::registry::Outage;
use micro_core::Registry;
use micro_registry_etcd::testing::EtcdServer;
use micro_registry_etcd::EtcdRegistry;

// Each check uses service names of its own, so they share one etcd. The block is evaluated
// inside each generated test: its `return` skips the check (after `EtcdServer::shared` said
// why) when etcd is not installed and MICRO_TEST_REQUIRE_SERVICES is not set.
micro_conformance::registry_suite!({
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let made = EtcdRegistry::new(etcd.options()).map(|r| Arc::new(r) as Arc<dyn Registry>);
    async move { made }
});

/// Takes the etcd process away and brings it back on the same ports and data directory.
struct KillEtcd(EtcdServer);

#[async_trait::async_trait]
impl Outage for KillEtcd {
    async fn stop(&self) {
        self.0.stop();
    }

    async fn start(&self) {
        if let Err(e) = self.0.restart() {
            panic!("restarting etcd: {e}");
        }
    }

    fn names(&self) -> String {
        self.0.address()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_outage() {
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return;
    };
    let registry = Arc::new(EtcdRegistry::new(etcd.options()).expect("registry"));
    let outage = KillEtcd(etcd);
    micro_conformance::registry::recovers_after_outage(registry, &outage)
        .await
        .expect("recovers_after_outage");
}
