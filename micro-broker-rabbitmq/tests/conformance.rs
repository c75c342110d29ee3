//! The shared broker conformance suite against the local RabbitMQ (127.0.0.1:5672, guest).

use std::sync::Arc;
use std::time::Duration;

use micro_broker_rabbitmq::{RabbitBroker, RabbitOptions};
use micro_conformance::broker::Capabilities;
use micro_core::Broker;

mod common;

// Each check uses topics of its own, so they share the server's default vhost. The block runs
// inside each generated test: its `return` skips the check (after saying why) when RabbitMQ is
// down and MICRO_TEST_REQUIRE_SERVICES is not set. Queue-group queues expire a minute after
// their last member left, so test runs leave nothing behind.
micro_conformance::broker_suite!(
    {
        if !common::rabbitmq_up() {
            return;
        }
        // The suite holds that publishing to a topic nobody subscribes to is fine, as the
        // Broker trait says; mandatory publishes (this broker's default) make that a 404, so
        // the suite runs without them (tests/dead_letter.rs covers them).
        let opts = RabbitOptions {
            mandatory: false,
            ..RabbitOptions::default()
        }
        .with_queue_expiry(Duration::from_secs(60));
        let made = RabbitBroker::new(opts).map(|b| Arc::new(b) as Arc<dyn Broker>);
        async move { made }
    },
    Capabilities {
        redelivery: true,
        ordered: true,
    }
);
