//! The NATS broker of Micro for Rust, on [`async_nats`].
//!
//! [`NatsBroker`] implements [`micro_core::Broker`] (its name is `nats`, as in
//! `MICRO_BROKER=nats`) in one of two modes:
//!
//! - **core NATS** (the default): fast, fire-and-forget, **at most once**;
//! - **JetStream** ([`NatsOptions::jetstream`], or `MICRO_NATS_JETSTREAM=1`): messages are
//!   stored, subscriptions are durable consumers, delivery is **at least once**.
//!
//! # Starting NATS
//!
//! Debian and Ubuntu package the server: `apt-get install nats-server`. For development, a
//! server with JetStream on loopback:
//!
//! ```text
//! nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server
//! ```
//!
//! (`-js` turns JetStream on, `-sd` is where it stores streams; core mode needs neither.)
//! [`NatsBroker::new`] contacts nothing; [`Broker::connect`](micro_core::Broker::connect) (or
//! the first publish or subscribe) connects, and fails with a 503 naming `nats at <servers>`
//! when no server answers. Once connected, async-nats reconnects by itself for as long as it takes, and
//! subscriptions carry on across the reconnect.
//!
//! # Core NATS: at most once
//!
//! - A topic is a NATS subject (wildcards `*` and `>` work for subscribers); a queue group is a
//!   NATS queue group: each message reaches one member of the group. `subscribe` returns once
//!   the server has the subscription, so what anyone publishes afterwards reaches it.
//! - Micro headers (`Micro-Id`, `Content-Type`, ...) travel as NATS headers. A message without
//!   headers is a plain `PUB`, readable by any NATS client; a message from any NATS client is
//!   delivered as it came, its body untouched and no headers meaning an empty header map.
//! - Nothing is stored: a message published while a subscriber is disconnected, or one whose
//!   handler fails, is gone. `ack` and `nack` are no-ops. A failing (or panicking) handler is
//!   logged and the subscription goes on with the next message. While the connection is down,
//!   async-nats buffers publishes and sends them once it is back, so `Ok` from `publish` means
//!   "handed to the client", not "delivered".
//! - Each subscriber's handler runs one message at a time, in the order the server sent them.
//!   A subscriber that falls far behind (tens of thousands of messages) loses messages:
//!   that is NATS's slow-consumer protection.
//!
//! # Go Micro's wire layout
//!
//! Go Micro's own NATS broker does not use NATS headers: it publishes the JSON
//! `{"Header":{...},"Body":"<base64>"}`. Subscribers read both layouts with no setting: a
//! message that carries no NATS headers and whose payload is that JSON is unwrapped (Go Micro
//! never sets NATS headers; this broker's default layout always does), and any other message
//! is delivered as it came. What a publisher writes is chosen by [`Envelope`]:
//! [`Envelope::GoMicro`] (`MICRO_NATS_ENVELOPE=gomicro`) for a fleet whose Go Micro
//! subscribers must read it, the default [`Envelope::Headers`] for everything else (Go Micro
//! v4's NATS plugin reads only the JSON layout; every other NATS client reads headers).
//!
//! A received message with more than `MICRO_MAX_HEADERS` header entries (default 512) or
//! `MICRO_MAX_HEADER_BYTES` of them (default 64 KiB), counted over NATS headers and the
//! envelope alike, is logged and dropped (terminated, under JetStream) and the subscriber goes
//! on with the next.
//!
//! # JetStream: at least once
//!
//! - **Streams.** A topic uses the stream that already covers its subject, or gets one, named
//!   `<stream_prefix>_<topic>` (default prefix `MICRO`; characters a stream name cannot hold
//!   become `_`, plus a hash so names never collide), holding that one subject. Created streams
//!   use [`Retention::Interest`] by default: a message is kept until every consumer has
//!   acknowledged it, so a topic nobody subscribes to stores nothing. Wildcard topics need a
//!   stream that covers them; make it yourself (`nats stream add`) when subscribing to one.
//! - **Publish** waits for the server's acknowledgement: `Ok` means the message is stored. A
//!   `Micro-Id` header becomes the `Nats-Msg-Id`, so retrying a publish whose answer was lost
//!   stores it once (within the stream's two-minute duplicate window).
//! - **Subscribe** binds a durable pull consumer. Members of a queue group share the consumer
//!   `<consumer_prefix>_<topic>_<queue>`, which outlives them: messages published while the
//!   whole group is down wait for it. A subscriber without a queue group gets a consumer of its
//!   own, `<consumer_prefix>_<topic>_<random>`, deleted when it unsubscribes or the broker
//!   disconnects. (One left behind by a process that died is removed by servers 2.10 and later
//!   after [`JetStreamOptions::inactive_threshold`]; on older servers delete it by hand, as it
//!   holds messages under interest retention.) New consumers start with messages published
//!   after they are made.
//! - **Acks.** With auto-ack, a handler's `Ok` acks the message and an `Err` (or a panic) nacks
//!   it: it comes back after [`JetStreamOptions::nack_delay`]. With manual ack the handler
//!   calls `Delivery::ack` or `nack` (a nack with `requeue = false` drops the message for
//!   good); a handler error still nacks what it left unsettled. A message neither acked nor
//!   nacked comes back after [`JetStreamOptions::ack_wait`]. While a handler runs, the broker
//!   sends in-progress acks every third of the consumer's ack wait, so a long handler is not
//!   redelivered under it. Expect duplicates: after a restart or a lost ack a message can
//!   arrive twice.
//! - **Dead letters.** A message is never given up silently: the consumers the broker makes
//!   have no server-side delivery limit, and the broker counts. When the
//!   [`JetStreamOptions::max_deliver`]th delivery (10) fails too, or a handler nacks without
//!   requeue, the message is published to its dead-letter subject, `dlq.<topic>` by default
//!   ([`JetStreamOptions::dead_letter`], `MICRO_NATS_DEAD_LETTER`; `{topic}` is the subject it
//!   came on), and terminated only once JetStream stored the dead letter; if that publish
//!   fails, it is nacked, comes back, and the dead letter is tried again. A delivery past the
//!   limit (its last one was never settled) is dead-lettered without running the handler. A
//!   dead-letter subject no stream covers gets one made with [`Retention::Limits`], so dead
//!   letters stay until someone reads them. The dead letter is the message plus
//!   `Micro-Dead-Letter-Error`, `-Attempts`, `-Topic`, `-Queue`, `-Stream` and `-Sequence`
//!   headers ([`micro_core::broker::dead_letter`]). With [`PoisonPolicy::Block`]
//!   (`MICRO_NATS_DEAD_LETTER=block`) a failing message is redelivered for as long as it
//!   fails. A queue group's consumer made earlier with a server-side `max_deliver` keeps it
//!   (the broker warns): set it to `-1` with `nats consumer edit`.
//! - **Outages.** Publishes fail (503) while the server is away; subscriptions resume by
//!   themselves when it is back, and a consumer that disappeared is made again.
//!
//! # Bad input
//!
//! Bodies are never decoded here (that is the codec's job in `micro`), so garbage arrives as
//! garbage. A header name or value NATS cannot carry (spaces or `:` in a name, CR/LF in a
//! value) is refused with a 400 when publishing. A message larger than the server's
//! `max_payload` (1 MiB by default) is refused with a 413 that says so. One limit comes from
//! async-nats: a message whose *headers* are not UTF-8 (a foreign client can send one) makes
//! it drop and re-establish the connection. In core mode that message is lost; in JetStream
//! mode it is redelivered, and drops the connection again, until `max_deliver` runs out and
//! the delivery past it is dead-lettered (this needs no header to be read).
//! Either way subscriptions carry on after the reconnect, and nothing panics.
//!
//! # Options and environment
//!
//! [`NatsOptions`] in code, or [`NatsOptions::from_env`]:
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_BROKER_ADDRESS` | comma-separated servers, `host:port`, `nats://host:port` or `tls://host:port`; `127.0.0.1:4222` by default |
//! | `MICRO_NATS_CREDENTIALS` | a credentials file (JWT and NKey seed) |
//! | `MICRO_NATS_TOKEN` | token authentication |
//! | `MICRO_NATS_USER`, `MICRO_NATS_PASSWORD` | user and password authentication |
//! | `MICRO_NATS_TLS` | `1` to require TLS (also implied by `tls://` and the files below) |
//! | `MICRO_NATS_TLS_CA` | PEM file of the CA that signed the server's certificate |
//! | `MICRO_NATS_TLS_CERT`, `MICRO_NATS_TLS_KEY` | PEM client certificate and key |
//! | `MICRO_NATS_CONNECT_TIMEOUT` | e.g. `5s` (the default), `500ms` |
//! | `MICRO_NATS_ENVELOPE` | `headers` (default) or `gomicro`: the layout published; see [Go Micro's wire layout](#go-micros-wire-layout) |
//! | `MICRO_MAX_HEADERS`, `MICRO_MAX_HEADER_BYTES` | header entries and bytes one received message may carry (512, 64 KiB) |
//! | `MICRO_NATS_JETSTREAM` | `1` for JetStream mode; the variables below apply only then |
//! | `MICRO_NATS_STREAM_PREFIX` | prefix of created streams, `MICRO` |
//! | `MICRO_NATS_CONSUMER_PREFIX` | prefix of durable consumers, `micro` |
//! | `MICRO_NATS_ACK_WAIT` | redelivery after this long without an ack, `30s` |
//! | `MICRO_NATS_NACK_DELAY` | redelivery this long after a nack, `1s` |
//! | `MICRO_NATS_MAX_DELIVER` | deliveries of a failing message before it is dead-lettered, `10` (`-1`: no limit) |
//! | `MICRO_NATS_DEAD_LETTER` | the dead-letter subject, `{topic}` standing for the subject (`dlq.{topic}`), or `block` |
//! | `MICRO_NATS_STORAGE` | `file` (default) or `memory`, for created streams |
//! | `MICRO_NATS_RETENTION` | `interest` (default) or `limits`, for created streams |
//! | `MICRO_NATS_MAX_AGE` | the longest created streams keep a message (no limit by default) |
//! | `MICRO_NATS_REQUEST_TIMEOUT` | JetStream API calls and publish acks, `5s` |
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use micro_broker_nats::{JetStreamOptions, NatsBroker, NatsOptions};
//! use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
//! use micro_core::Broker;
//!
//! # async fn run() -> micro_core::Result<()> {
//! let opts = NatsOptions::from_address("nats://127.0.0.1:4222")
//!     .with_jetstream(JetStreamOptions::default());
//! let broker = NatsBroker::new(opts)?;
//! broker.connect().await?;
//!
//! let handler: Handler = Arc::new(|d: Delivery| {
//!     Box::pin(async move {
//!         println!("{}: {} bytes", d.topic, d.message.body.len());
//!         Ok(()) // acked; an Err would bring the message back
//!     })
//! });
//! let queue = SubscribeOptions { queue: Some("billing".into()), auto_ack: true };
//! let sub = broker.subscribe("orders.created", handler, queue).await?;
//!
//! let mut msg = Message { body: b"{\"id\":1}".to_vec().into(), ..Default::default() };
//! msg.header.insert("Content-Type", "application/json");
//! broker.publish("orders.created", msg).await?; // Ok: stored by JetStream
//!
//! sub.unsubscribe().await?;
//! broker.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `testing`: [`testing`], the shared test NATS and a private `nats-server` that tests may
//!   stop and start (for outage tests).

mod broker;
#[doc(hidden)]
pub mod fuzzing;
mod jetstream;
mod options;
#[cfg(feature = "testing")]
pub mod testing;
mod wire;

pub use broker::NatsBroker;
pub use micro_core::broker::dead_letter::PoisonPolicy;
pub use options::*;

/// Who raises this crate's errors.
pub(crate) const ERROR_ID: &str = "micro.broker.nats";
