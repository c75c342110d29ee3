//! The shared broker conformance suite in pub/sub mode (Go Micro's layout), against the
//! machine's Redis (127.0.0.1:6379): at most once, so no redelivery; one subscriber sees one
//! publisher's messages in order.

mod common;

use std::sync::Arc;

use micro_broker_redis::RedisBroker;
use micro_conformance::broker::Capabilities;
use micro_core::Broker;

// The block runs inside each generated test: its `return` skips the check (after saying why)
// when Redis is not running and MICRO_TEST_REQUIRE_SERVICES is not set.
micro_conformance::broker_suite!(
    {
        if !common::redis_up() {
            return;
        }
        let made =
            RedisBroker::new(common::pubsub_options()).map(|b| Arc::new(b) as Arc<dyn Broker>);
        async move { made }
    },
    Capabilities {
        redelivery: false,
        ordered: true,
    }
);
