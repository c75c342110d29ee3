//! The shared broker conformance suite in core NATS mode with Go Micro's wire layout
//! (`Envelope::GoMicro`: headers and body in a JSON payload), against the machine's NATS.

mod common;

use std::sync::Arc;

use micro_broker_nats::{Envelope, NatsBroker, NatsOptions};
use micro_conformance::broker::Capabilities;
use micro_core::Broker;

micro_conformance::broker_suite!(
    {
        let Some(opts) = common::core_options() else {
            return;
        };
        let opts = NatsOptions {
            envelope: Envelope::GoMicro,
            ..opts
        };
        let made = NatsBroker::new(opts).map(|b| Arc::new(b) as Arc<dyn Broker>);
        async move { made }
    },
    Capabilities {
        redelivery: false,
        ordered: true,
    }
);
