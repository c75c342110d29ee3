//! The shared broker conformance suite against the machine's Mosquitto (127.0.0.1:1883):
//! QoS 1 to the client but no redelivery after a handler error; one subscriber sees one
//! publisher's messages in order. Queue groups are shared subscriptions.

mod common;

use std::sync::Arc;

use micro_broker_mqtt::MqttBroker;
use micro_conformance::broker::Capabilities;
use micro_core::Broker;

// The block runs inside each generated test: its `return` skips the check (after saying why)
// when no MQTT server is running and MICRO_TEST_REQUIRE_SERVICES is not set.
micro_conformance::broker_suite!(
    {
        if !common::mqtt_up() {
            return;
        }
        let made = MqttBroker::new(common::options()).map(|b| Arc::new(b) as Arc<dyn Broker>);
        async move { made }
    },
    Capabilities {
        redelivery: false,
        ordered: true,
    }
);
