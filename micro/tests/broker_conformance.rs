//! The shared broker conformance suite against the in-memory broker (no redelivery: there is
//! no backend to keep a message; order is kept per subscriber).

use std::sync::Arc;

use micro::broker::MemoryBroker;
use micro::core::Broker;
use micro_conformance::broker::Capabilities;

micro_conformance::broker_suite!(
    async { Ok::<Arc<dyn Broker>, micro::Error>(Arc::new(MemoryBroker::new())) },
    Capabilities {
        redelivery: false,
        ordered: true,
    }
);
