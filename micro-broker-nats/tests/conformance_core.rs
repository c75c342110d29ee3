//! The shared broker conformance suite in core NATS mode, against the machine's NATS
//! (127.0.0.1:4222): at most once, so no redelivery; one subscriber sees one publisher's
//! messages in order.

mod common;

use std::sync::Arc;

use micro_broker_nats::NatsBroker;
use micro_conformance::broker::Capabilities;
use micro_core::Broker;

// The block runs inside each generated test: its `return` skips the check (after saying why)
// when NATS is not running and MICRO_TEST_REQUIRE_SERVICES is not set.
micro_conformance::broker_suite!(
    {
        let Some(opts) = common::core_options() else {
            return;
        };
        let made = NatsBroker::new(opts).map(|b| Arc::new(b) as Arc<dyn Broker>);
        async move { made }
    },
    Capabilities {
        redelivery: false,
        ordered: true,
    }
);
