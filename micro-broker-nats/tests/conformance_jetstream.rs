//! The shared broker conformance suite in JetStream mode, against the machine's NATS
//! (127.0.0.1:4222, started with -js): at least once, so a handler error or a nack brings the
//! message back; order is kept per subscriber.
//!
//! Every check uses topics of its own (a random suffix), and each topic gets a stream of its
//! own holding just that subject, so checks running at the same time never share a stream.

mod common;

use std::sync::Arc;

use micro_broker_nats::NatsBroker;
use micro_conformance::broker::Capabilities;
use micro_core::Broker;

micro_conformance::broker_suite!(
    {
        let Some(opts) = common::jetstream_options().await else {
            return;
        };
        let made = NatsBroker::new(opts).map(|b| Arc::new(b) as Arc<dyn Broker>);
        async move { made }
    },
    Capabilities {
        redelivery: true,
        ordered: true,
    }
);
