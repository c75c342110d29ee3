//! The RabbitMQ broker of Micro for Rust, on [`lapin`], laid out like Go Micro's plugin.
//!
//! [`RabbitBroker`] implements [`micro_core::Broker`] (its name is `rabbitmq`): events published
//! by Rust services reach Go Micro subscribers on the same exchange, and the other way round.
//!
//! # Starting RabbitMQ
//!
//! On Debian or Ubuntu, `apt-get install rabbitmq-server` installs it and starts it on
//! `127.0.0.1:5672` with the user `guest` (password `guest`, loopback only). When it is
//! installed but down: `rabbitmq-server -detached` (as root), then `rabbitmqctl await_startup`.
//!
//! The broker does not need RabbitMQ to be up when it is made: [`connect`](micro_core::Broker::connect)
//! opens the connection (and so does the first publish or subscribe) and fails with a 503 that
//! names the server, `rabbitmq at 127.0.0.1:5672: cannot connect: ...`. No message, log line or
//! `Debug` output ever shows the password.
//!
//! # Semantics
//!
//! - **Layout.** Every message goes through one topic exchange (`micro`, durable by default;
//!   Go Micro's plugin declares it non-durable unless `DurableExchange()`, and RabbitMQ refuses
//!   to redeclare an exchange with the other durability, so an existing one is used as it is,
//!   with a warning) with the topic as routing key. A subscriber without a queue group
//!   gets an exclusive, auto-deleted, server-named queue bound to the topic: it sees every
//!   message published while it is subscribed. The members of a queue group share one durable
//!   queue, named `<exchange>.<topic>.<group>` (for example `micro.orders.billing`), so each
//!   message reaches one member; the queue outlives its members and keeps what is published
//!   while none is there (set [`RabbitOptions::queue_expiry`] to have RabbitMQ delete it after a
//!   while unused). [`QueueNaming::Bare`] names it `<group>` instead, like Go Micro's plugin with
//!   `DurableQueue()`, so Go and Rust members can share a group. Binding keys are topics, so `*`
//!   and `#` in a subscribed topic are AMQP wildcards.
//! - **Headers.** Micro headers travel as AMQP headers with string values; `Content-Type` and
//!   `Micro-Id` are also copied to the `content_type` and `message_id` properties. Messages from
//!   other clients are delivered as they are: missing headers give an empty map, non-string
//!   header values are turned into text (numbers and booleans as written, tables and arrays as
//!   JSON, invalid UTF-8 replaced), an AMQP `content_type` property becomes `Content-Type` when
//!   no header says it, and the body is never looked at. The delivery's topic is its routing key.
//! - **Publishing.** Publishes are mandatory: a message no queue is bound to take (nobody
//!   subscribes to its topic) is returned by RabbitMQ and `publish` fails with a 404 that says
//!   so, rather than confirming a message that went nowhere ([`RabbitOptions::mandatory`],
//!   `MICRO_RABBITMQ_MANDATORY=false` for the Broker trait's "no subscribers is fine", as Go
//!   Micro publishes). Publisher confirms are on: `publish` returns `Ok` once RabbitMQ has taken
//!   responsibility for the message (for a durable queue, written it to disk, as messages are
//!   persistent by default). While the connection is down, `publish` waits for the reconnect up
//!   to [`RabbitOptions::publish_timeout`] (5 s), then fails with a 503 (retryable) that says so.
//!   A publish that fails after sending may still have been delivered: retrying gives
//!   at-least-once delivery. Bodies larger than [`RabbitOptions::max_message_size`] (16 MiB, the
//!   RabbitMQ 4 default) fail with a 413 before anything is sent.
//! - **Consuming.** Each subscriber has its own channel with a prefetch (QoS) of 64 and runs its
//!   handler on one delivery at a time, in queue order. With auto-ack, `Ok` acks and `Err` (or
//!   a panic) gives the message back after a short pause ([`RabbitOptions::requeue_delay`]).
//!   With manual ack the handler settles each delivery; settling twice is harmless (the first
//!   ack or nack wins). A failing handler never stops the subscriber.
//! - **Delivery limit and dead letters.** A message given back is published again to its
//!   queue with its delivery count in the `Micro-Deliveries` header (and its topic in
//!   `Micro-Topic`), and acked once that is confirmed: it goes to the back of the queue. After
//!   [`RabbitOptions::max_deliveries`] deliveries (10), or on a `nack(false)`, it is published
//!   instead to the dead-letter exchange `micro.dlx` (durable, topic; routing key the topic),
//!   mandatory and confirmed, with the reason headers of [`micro_core::broker::dead_letter`]
//!   (`Micro-Dead-Letter-Error`, `-Attempts`, `-Topic`, `-Queue`), and only then acked; the
//!   durable queue `micro.dlq`, bound with `#`, keeps dead letters. Should a publish fail, the
//!   message is requeued and tried again, never dropped. Queue-group queues are declared with
//!   `x-dead-letter-exchange` too, for what RabbitMQ itself rejects. Go Micro's plugin declares
//!   queues without arguments, and RabbitMQ refuses to redeclare a queue with other arguments
//!   (`PRECONDITION_FAILED`): a queue that exists without them (a Go Micro group's, with
//!   [`QueueNaming::Bare`]) is used as it is, with a warning
//!   ([`RabbitOptions::dead_letter_arguments`] turns the argument off). With
//!   [`PoisonPolicy::Block`] (`MICRO_RABBITMQ_DEAD_LETTER=block`) a failing message is requeued
//!   in place for ever, and no dead-letter exchange is declared.
//! - **Outages.** A supervisor task notices a lost connection (closed by the server, a network
//!   error, a missed heartbeat), reconnects with a pause doubling from 100 ms to 5 s, logging
//!   every attempt, redeclares the exchange, and every live subscription redeclares and rebinds
//!   its queue and consumes again (a subscription notices on its own too: it watches its
//!   channel and connection while it waits for deliveries, and an ack or nack that gets no
//!   answer within the publish timeout fails). Unacknowledged deliveries go back to their
//!   queue with the old connection, so a queue group loses nothing that was confirmed to the publisher
//!   (duplicates are possible); a subscriber without a group misses what is published while its
//!   queue is gone. [`disconnect`](micro_core::Broker::disconnect) ends all of it, and so
//!   does dropping the last clone of the broker; a publish or subscribe after `disconnect`
//!   connects again. `subscribe` returns once its queue is declared, bound and consumed from,
//!   so a message published after it returns reaches the new subscriber.
//!
//! # Options and environment
//!
//! [`RabbitOptions`] in code, or [`RabbitOptions::from_env`]:
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_BROKER_ADDRESS` | `host:port`, or `amqp://user:pass@host:port/vhost` (`amqps://` for TLS); `amqp://guest:guest@127.0.0.1:5672/%2f` by default |
//! | `MICRO_RABBITMQ_EXCHANGE` | the topic exchange, `micro` |
//! | `MICRO_RABBITMQ_DURABLE_EXCHANGE` | `false` to declare it non-durable, as Go Micro does by default (`true`) |
//! | `MICRO_RABBITMQ_MANDATORY` | unroutable publishes are errors (`true`) |
//! | `MICRO_RABBITMQ_MAX_DELIVERIES` | deliveries of a failing message before it is dead-lettered, `10` (`0`: no limit, requeued in place) |
//! | `MICRO_RABBITMQ_DEAD_LETTER` | the dead-letter exchange, `<exchange>.dlx`, or `block` |
//! | `MICRO_RABBITMQ_DEAD_LETTER_QUEUE` | the queue keeping dead letters, `<exchange>.dlq`, or `none` |
//! | `MICRO_RABBITMQ_DEAD_LETTER_ARGUMENTS` | declare group queues with `x-dead-letter-exchange` (`true`) |
//! | `MICRO_RABBITMQ_PREFETCH` | unacknowledged messages per subscriber, `64` (`0`: unlimited) |
//! | `MICRO_RABBITMQ_CONFIRMS` | publisher confirms, `true` |
//! | `MICRO_RABBITMQ_PERSISTENT` | persistent messages, `true` |
//! | `MICRO_RABBITMQ_QUEUE_NAMING` | `scoped` (`<exchange>.<topic>.<group>`) or `bare` (`<group>`, Go Micro's) |
//! | `MICRO_RABBITMQ_QUEUE_EXPIRY` | delete queue-group queues unused this long (kept by default) |
//! | `MICRO_RABBITMQ_CONNECT_TIMEOUT`, `MICRO_RABBITMQ_PUBLISH_TIMEOUT` | `5s` each |
//! | `MICRO_RABBITMQ_RECONNECT_MIN`, `MICRO_RABBITMQ_RECONNECT_MAX` | reconnect backoff, `100ms` doubling to `5s` |
//! | `MICRO_RABBITMQ_REQUEUE_DELAY` | pause before a failed message is requeued, `50ms` |
//! | `MICRO_RABBITMQ_MAX_MESSAGE_SIZE` | largest body in bytes, `16777216` |
//! | `MICRO_MAX_HEADERS`, `MICRO_MAX_HEADER_BYTES` | headers and header bytes one received message may carry; past them it is logged and dropped (512, 64 KiB) |
//! | `MICRO_RABBITMQ_TLS_CA` | PEM file of the CA of RabbitMQ's certificate, for `amqps://` (the system's roots otherwise) |
//!
//! TLS is rustls (on ring); client certificates are not supported yet.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use micro_core::broker::{Handler, Message, SubscribeOptions};
//! use micro_core::Broker;
//! use micro_broker_rabbitmq::{RabbitBroker, RabbitOptions};
//!
//! # async fn run() -> micro_core::Result<()> {
//! let broker = RabbitBroker::new(RabbitOptions::from_address("127.0.0.1:5672"))?;
//! broker.connect().await?;
//!
//! let handler: Handler = Arc::new(|delivery| {
//!     Box::pin(async move {
//!         println!("{}: {} bytes", delivery.topic, delivery.message.body.len());
//!         Ok(())
//!     })
//! });
//! let workers = SubscribeOptions {
//!     queue: Some("billing".into()),
//!     ..Default::default()
//! };
//! let sub = broker.subscribe("orders.created", handler, workers).await?;
//!
//! let mut msg = Message::default();
//! msg.header.insert("Content-Type", "application/json");
//! msg.body = br#"{"id":1}"#.to_vec().into();
//! broker.publish("orders.created", msg).await?; // Ok once RabbitMQ confirmed it
//!
//! sub.unsubscribe().await?;
//! broker.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `testing`: [`testing`], a private RabbitMQ node that tests may stop and restart without
//!   disturbing the shared one (for outage tests).

mod broker;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
pub mod options;
#[cfg(feature = "testing")]
pub mod testing;

pub use broker::RabbitBroker;
pub use micro_core::broker::dead_letter::PoisonPolicy;
pub use options::{QueueNaming, RabbitOptions};

/// The `id` of the errors this crate returns.
pub(crate) const ERROR_ID: &str = "micro.broker.rabbitmq";
