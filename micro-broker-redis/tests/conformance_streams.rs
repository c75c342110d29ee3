//! The shared broker conformance suite in streams mode, against the machine's Redis: at least
//! once, so a handler error or a nack brings the message back; order is kept per subscriber.
//! Every check uses topics (so streams) of its own.

mod common;

use std::sync::Arc;

use micro_broker_redis::RedisBroker;
use micro_conformance::broker::Capabilities;
use micro_core::Broker;

micro_conformance::broker_suite!(
    {
        if !common::redis_up() {
            return;
        }
        let made =
            RedisBroker::new(common::streams_options()).map(|b| Arc::new(b) as Arc<dyn Broker>);
        async move { made }
    },
    Capabilities {
        redelivery: true,
        ordered: true,
    }
);
