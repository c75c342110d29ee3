//! The shared registry conformance suite against the machine's NATS.

mod common;

use std::sync::Arc;

use micro_core::Registry;
use micro_registry_nats::NatsRegistry;

// Each check uses service names of its own, so they share one NATS and its subjects. The
// block's `return` skips a check (after saying why) when NATS is not running and
// MICRO_TEST_REQUIRE_SERVICES is not set.
micro_conformance::registry_suite!({
    let Some(address) = common::nats_address() else {
        return;
    };
    let made =
        NatsRegistry::new(common::options(&address)).map(|r| Arc::new(r) as Arc<dyn Registry>);
    async move { made }
});
