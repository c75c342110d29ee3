//! The shared broker conformance suite, each check on a fresh broker and a fresh in-memory
//! registry.

mod common;

use std::sync::Arc;

use micro_broker_http::{HttpBroker, HttpBrokerOptions};
use micro_conformance::broker::Capabilities;
use micro_core::Broker;

async fn make() -> micro_core::Result<Arc<dyn Broker>> {
    let registry = Arc::new(common::TestRegistry::new());
    Ok(Arc::new(HttpBroker::new(registry, HttpBrokerOptions::default())?) as Arc<dyn Broker>)
}

micro_conformance::broker_suite!(
    make(),
    Capabilities {
        redelivery: false,
        ordered: true,
    }
);
