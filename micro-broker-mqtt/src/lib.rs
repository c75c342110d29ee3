//! The MQTT broker of Micro for Rust, on [`rumqttc`], laid out like Go Micro's plugin.
//!
//! [`MqttBroker`] implements [`micro_core::Broker`] (its name is `mqtt`, as in
//! `MICRO_BROKER=mqtt`): events published by Rust services reach Go Micro subscribers on the
//! same MQTT server, and the other way round.
//!
//! # Starting an MQTT server
//!
//! Mosquitto: `apt-get install mosquitto` installs it and starts it on port 1883 (loopback
//! only, anonymous clients allowed). By hand, with a configuration file holding
//! `listener 1883 127.0.0.1` and `allow_anonymous true`: `mosquitto -d -c <file>`. Any MQTT
//! 3.1.1 server works; queue groups need shared subscriptions (`$share/...`), which
//! Mosquitto (1.6 and later) supports under MQTT 3.1.1 as well as MQTT 5.
//!
//! [`MqttBroker::new`] contacts nothing; [`Broker::connect`](micro_core::Broker::connect) (or
//! the first publish or subscribe) connects, and fails with a 503 naming `mqtt at
//! <host:port>` when no server answers. No error, log line or `Debug` output shows the
//! password.
//!
//! # Go Micro's wire format
//!
//! Read from go-micro's `plugins/v4/broker/mqtt/mqtt.go`:
//!
//! - `Publish(topic, msg)` is an MQTT PUBLISH to `topic` as given (no translation of `.` or
//!   `/`) with **QoS 1**, retain off, whose payload is the `broker.Message` marshalled by Go
//!   Micro's default codec (`codec/json`, that is `encoding/json`):
//!   `{"Header":{"Content-Type":"application/json","Micro-Id":"...","Micro-Topic":"..."},"Body":"<base64>"}`.
//!   Headers travel only inside that JSON; MQTT 3.1.1 has no headers.
//! - `Subscribe(topic, ...)` is an MQTT SUBSCRIBE to `topic` with QoS 1, so `+` and `#`
//!   work as MQTT wildcards. A payload that does not decode is logged and skipped, and so is
//!   a handler error; `Ack` is a no-op. Queue groups are ignored: every subscriber gets every
//!   message.
//! - Go Micro connects with one client (id: the time in nanoseconds and a digit, clean
//!   session off) to `tcp://127.0.0.1:1883` by default.
//!
//! This broker publishes the same payload, with the same QoS and retain flag, and reads it
//! (null `Header`/`Body`, field names in any case and unknown fields are accepted, as Go's
//! decoder does). It adds queue groups: a subscriber with queue group `q` subscribes to the
//! shared subscription `$share/q/<topic>`, so each message reaches one member of the group
//! (set [`MqttOptions::shared_subscriptions`] off, `MICRO_MQTT_SHARED_SUBSCRIPTIONS=false`,
//! to ignore queue groups like Go Micro). Go Micro members of a group subscribe plainly and
//! get every message.
//!
//! # Semantics
//!
//! - **Publishing** uses one connection per broker, with a clean session. With QoS 1
//!   `publish` returns `Ok` once the server sent its PUBACK (it has the message); it fails
//!   with a 503 after [`MqttOptions::publish_timeout`] without one. While the connection is
//!   down the client reconnects (100 ms doubling to 5 s) and sends again what was not
//!   acknowledged, so a message can arrive twice.
//! - **Subscribing** opens one connection per subscription (a clean session, so nothing is
//!   left on the server when it ends) and returns once the server acknowledged the
//!   SUBSCRIBE: what is published afterwards reaches it. The client acknowledges each QoS 1
//!   message when it arrives; handlers run one message at a time, in the order the server
//!   sent them. A failing (or panicking) handler is logged and the subscriber goes on: there
//!   is no redelivery, and `ack`/`nack` are no-ops. After a lost connection the subscription
//!   is renewed; what was published meanwhile is gone.
//! - **Topics** are MQTT topics: a published topic may not hold `+` or `#`, and the topic of
//!   a delivery is the one it was published to (also under a wildcard subscription).
//!
//! # Bad input
//!
//! Nothing a peer publishes panics the broker or ends a subscription. A payload that is not
//! Go Micro's envelope, or carries more headers than `MICRO_MAX_HEADERS` /
//! `MICRO_MAX_HEADER_BYTES` allow, is logged and dropped. A packet larger than
//! [`MqttOptions::max_message_size`] is refused by the client before it is read (rumqttc
//! checks the length in the fixed header): the subscriber's connection is dropped and made
//! again, and that message is lost. `publish` refuses a payload larger than the limit with a
//! 413 before anything is sent. Each subscriber keeps up to 256 messages waiting for its
//! handler; a subscriber that falls further behind loses messages (logged).
//!
//! # Options and environment
//!
//! [`MqttOptions`] in code, or [`MqttOptions::from_env`]:
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_BROKER_ADDRESS` | `host:port`, `tcp://host:port` or `mqtt://host:port` (port 1883 by default); `tcp://127.0.0.1:1883` by default |
//! | `MICRO_MQTT_CLIENT_ID` | prefix of the client ids, `micro` (ids are `<prefix>-<random>`) |
//! | `MICRO_MQTT_USERNAME`, `MICRO_MQTT_PASSWORD` | credentials, if the server wants them |
//! | `MICRO_MQTT_QOS` | `1` (default, Go Micro's) or `0` |
//! | `MICRO_MQTT_SHARED_SUBSCRIPTIONS` | `true` (default): queue groups as `$share/<queue>/<topic>`; `false`: ignored, as Go Micro |
//! | `MICRO_MQTT_KEEP_ALIVE` | `30s` |
//! | `MICRO_MQTT_CONNECT_TIMEOUT` | connecting and a subscription's acknowledgement, `5s` |
//! | `MICRO_MQTT_PUBLISH_TIMEOUT` | waiting for a PUBACK, `5s` |
//! | `MICRO_MQTT_MAX_MESSAGE_SIZE` | largest payload published or received, `1MiB` |
//! | `MICRO_MAX_HEADERS`, `MICRO_MAX_HEADER_BYTES` | headers one received message may carry (512, 64 KiB) |
//!
//! TLS (`ssl://`) and websockets are not supported yet.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use micro_broker_mqtt::{MqttBroker, MqttOptions};
//! use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
//! use micro_core::Broker;
//!
//! # async fn run() -> micro_core::Result<()> {
//! let broker = MqttBroker::new(MqttOptions::from_address("127.0.0.1:1883"))?;
//! broker.connect().await?;
//!
//! let handler: Handler = Arc::new(|d: Delivery| {
//!     Box::pin(async move {
//!         println!("{}: {} bytes", d.topic, d.message.body.len());
//!         Ok(())
//!     })
//! });
//! let workers = SubscribeOptions { queue: Some("billing".into()), auto_ack: true };
//! let sub = broker.subscribe("orders/created", handler, workers).await?;
//!
//! let mut msg = Message { body: b"{\"id\":1}".to_vec().into(), ..Default::default() };
//! msg.header.insert("Content-Type", "application/json");
//! broker.publish("orders/created", msg).await?; // Ok: the server sent its PUBACK
//!
//! sub.unsubscribe().await?;
//! broker.disconnect().await?;
//! # Ok(())
//! # }
//! ```

mod broker;
pub mod options;
/// Go Micro's envelope, the payload of every message (`micro_core::broker::envelope`).
mod wire {
    use micro_core::broker::{envelope, Message};
    use micro_core::{MetadataLimits, Result};

    pub(crate) use envelope::encode;

    /// The message in a received payload.
    pub(crate) fn decode(payload: &[u8], limits: MetadataLimits) -> Result<Message> {
        let what = "the Go Micro envelope of an MQTT message";
        envelope::decode(payload, limits, crate::ERROR_ID, what)
    }
}

pub use broker::MqttBroker;
pub use options::MqttOptions;

/// Who raises this crate's errors.
pub(crate) const ERROR_ID: &str = "micro.broker.mqtt";
