//! The shared broker conformance suite against Kafka (the mock cluster, or `KAFKA_BROKERS`).

mod common;

use micro_conformance::broker::Capabilities;

micro_conformance::broker_suite!(
    common::broker(),
    Capabilities {
        redelivery: true,
        ordered: true,
    }
);
