//! The shared registry conformance suite against a private ZooKeeper.

use std::sync::Arc;

use micro_core::Registry;
use micro_registry_zookeeper::testing::ZookeeperServer;
use micro_registry_zookeeper::ZookeeperRegistry;

// Each check uses service names of its own, so they share one ZooKeeper. The block's
// `return` skips a check (after `ZookeeperServer::shared` said why) when ZooKeeper is not
// installed and MICRO_TEST_REQUIRE_SERVICES is not set.
micro_conformance::registry_suite!({
    let Some(zk) = ZookeeperServer::shared() else {
        return;
    };
    let made = ZookeeperRegistry::new(zk.options()).map(|r| Arc::new(r) as Arc<dyn Registry>);
    async move { made }
});
