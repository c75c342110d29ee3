//! The default broker of Micro for Rust: Go Micro's http broker.
//!
//! [`HttpBroker`] needs no infrastructure beyond the service registry every service already
//! uses. Each subscriber is announced in the registry, and publishers POST messages straight to
//! the subscribers' HTTP server. It speaks the same protocol as Go Micro's http broker, so Rust
//! and Go services publish to and subscribe from each other.
//!
//! # Protocol
//!
//! - Subscribing registers service `micro.http.broker` ([`SERVICE_NAME`]) with one node:
//!   id `<topic>-<uuid>`, address = this broker's HTTP listener, metadata
//!   `{"broker":"http","topic":"<topic>","secure":"false"}`, and version = the queue name, or
//!   `ff.http.broadcast` ([`BROADCAST_VERSION`]) without a queue. The entry lives for the
//!   register TTL and is renewed every register interval while subscribed; unsubscribing and
//!   disconnecting deregister it.
//! - Publishing looks up `micro.http.broker`, keeps the nodes whose `topic` metadata matches,
//!   and POSTs to `http://<node address>/?id=<node id>` with `Content-Type: application/json`
//!   and the body `{"Header":{"Micro-Topic":"<topic>",...},"Body":"<base64 of the body>"}`:
//!   to every node of the broadcast version, and to one random node of each other version
//!   (each queue group).
//! - The server answers 200 once the subscriber's handler returned `Ok`; 500 with the handler's
//!   error as Micro error JSON when it failed; 4xx with a Micro error JSON saying what was
//!   wrong for a request that is not POST (405), has no `id` (400), names no subscriber here or
//!   another topic (404), is not the JSON envelope or not base64 (400), is larger than the body
//!   limit (413), or arrives too slowly (408).
//!
//! Go Micro names nodes `<topic>-<broker id>`, one id per broker; here the UUID is per
//! subscription, so that two subscriptions of one broker to one topic (a queue member and a
//! broadcast subscriber) stay apart. Where the topic would make the id a bad DNS name for the
//! mDNS registry (a label over 63 bytes, characters outside `[A-Za-z0-9._-]`), the id carries
//! a shortened, cleaned prefix of the topic; the topic itself is in the node metadata.
//! Publishers treat the id as opaque, so both forms interoperate with Go Micro.
//!
//! Go Micro's subscribers answer 200 even when their handler fails (they keep the error to
//! themselves), and its publishers POST in the background and ignore the answer; a Rust
//! publisher therefore sees a Go subscriber's failures as successes.
//!
//! # Delivery guarantees
//!
//! - **At most once.** Nothing is stored and nothing is retried: a message whose handler fails
//!   is answered 500 to the publisher, logged on both sides, and dropped. Acks and nacks (with
//!   or without auto-ack) are accepted and do nothing; a nack cannot requeue.
//! - **Handlers run to their end.** A handler that panics is answered 500 like a failing one,
//!   and the server goes on. A handler whose publisher hangs up or times out meanwhile is not
//!   cancelled: it finishes (and shutting the broker down waits for it, up to the request
//!   timeout), though nobody hears its answer.
//! - **Order.** The publisher waits for each POST, and the subscriber answers it only after the
//!   handler returned. So the messages of one publisher that awaits each `publish` reach each
//!   subscriber in publish order, one at a time. Concurrent publishes, or several publishers,
//!   have no order between them, and one subscriber may then run its handler concurrently.
//! - **Publish errors.** Publishing to a topic nobody subscribes to is `Ok`. A subscriber that
//!   cannot be reached is skipped with a warning (in a queue group, another member is tried,
//!   as a refused connection proves the message did not arrive). `publish` returns an error
//!   only when there were subscribers and none took the message: 503 when none could be
//!   reached, 500 when some answered an error (a failing handler) or timed out. When some took
//!   it, the failures are logged and the publish is `Ok`.
//! - **Discovery delay.** Registry lookups are cached and refreshed at once on a registry
//!   watch event and on this broker's own subscribe and unsubscribe. While the watch runs, an
//!   entry older than [`HttpBrokerOptions::cache_ttl`] (1 s) is still used and refreshed in the
//!   background, so a publish waits for a lookup only after a change; without a working
//!   watch, the first publish after the TTL looks up first. A subscriber registered by another process is
//!   seen as soon as the registry reports it (mDNS: on its announcement), and in any case
//!   within about a second; publishing costs at most one registry query per second.
//!   Publishing as a subscriber registers can miss it: the conformance suite, like any
//!   caller that needs to know, probes until the subscriber answers.
//! - **Registry outages.** When a lookup fails and subscribers were known before, publishing
//!   goes on to those (with a warning) and asks again after another TTL.
//!
//! # Options and environment
//!
//! [`HttpBrokerOptions`] (or [`HttpBrokerOptions::from_env`]):
//!
//! | variable | field | default |
//! |---|---|---|
//! | `MICRO_BROKER_ADDRESS` | [`address`](HttpBrokerOptions::address): the listen address | `127.0.0.1:0` |
//! | `MICRO_BROKER_ADVERTISE` | [`advertise`](HttpBrokerOptions::advertise): the address registered | the listener's |
//! | `MICRO_REGISTER_TTL` | [`register_ttl`](HttpBrokerOptions::register_ttl) | 60 s |
//! | `MICRO_REGISTER_INTERVAL` | [`register_interval`](HttpBrokerOptions::register_interval) | 30 s |
//! | `MICRO_BROKER_HTTP_MAX_BODY` | [`max_body_bytes`](HttpBrokerOptions::max_body_bytes) | 4 MiB |
//! | `MICRO_BROKER_HTTP_TIMEOUT` | [`request_timeout`](HttpBrokerOptions::request_timeout) | 30 s |
//! | `MICRO_BROKER_HTTP_CACHE_TTL` | [`cache_ttl`](HttpBrokerOptions::cache_ttl) | 1 s |
//! | `MICRO_BROKER_HTTP_MAX_CONNECTIONS` | [`max_connections`](HttpBrokerOptions::max_connections): connections the receiving server holds at once | 1024 |
//! | `MICRO_BROKER_HTTP_IDLE_TIMEOUT` | [`idle_timeout`](HttpBrokerOptions::idle_timeout): a connection on which no request started (idle, or a slowloris) is closed after it | 90 s |
//! | `MICRO_MAX_HEADERS`, `MICRO_MAX_HEADER_BYTES` | [`header_limits`](HttpBrokerOptions::header_limits): entries and bytes of one envelope's `Header` (more is answered 431 and dropped) | 512, 64 KiB |
//!
//! To reach subscribers on other hosts, listen on a routable address
//! (`MICRO_BROKER_ADDRESS=0.0.0.0:0`) and use a registry those hosts share.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use micro_broker_http::{HttpBroker, HttpBrokerOptions};
//! use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
//! use micro_core::{Broker, Registry};
//!
//! # async fn run(registry: Arc<dyn Registry>) -> micro_core::Result<()> {
//! let broker = HttpBroker::new(registry, HttpBrokerOptions::from_env()?)?;
//! broker.connect().await?;
//! let handler: Handler = Arc::new(|d: Delivery| {
//!     Box::pin(async move {
//!         println!("{}: {} bytes", d.topic, d.message.body.len());
//!         Ok(())
//!     })
//! });
//! let sub = broker
//!     .subscribe("events", handler, SubscribeOptions::default())
//!     .await?;
//! broker
//!     .publish("events", Message { body: "hello".into(), ..Default::default() })
//!     .await?;
//! sub.unsubscribe().await?;
//! broker.disconnect().await?;
//! # Ok(())
//! # }
//! ```

mod broker;
#[doc(hidden)]
pub mod fuzzing;
mod options;
mod publish;
mod server;
mod wire;

pub use broker::HttpBroker;
pub use options::{
    HttpBrokerOptions, ADDRESS_ENV, ADVERTISE_ENV, CACHE_TTL_ENV, IDLE_TIMEOUT_ENV, MAX_BODY_ENV,
    MAX_CONNECTIONS_ENV, REGISTER_INTERVAL_ENV, REGISTER_TTL_ENV, TIMEOUT_ENV,
};

/// The registry service every http broker subscriber registers under (Go Micro v1 used
/// `go.micro.http.broker`).
pub const SERVICE_NAME: &str = "micro.http.broker";

/// The service version of subscribers without a queue group: every one gets every message.
pub const BROADCAST_VERSION: &str = "ff.http.broadcast";

/// The header that carries the topic in each message, set by the publisher.
pub const TOPIC_HEADER: &str = "Micro-Topic";

/// The id in this crate's errors.
const ID: &str = "micro.broker.http";
