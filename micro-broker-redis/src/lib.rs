//! The Redis broker of Micro for Rust, on the [`redis`] crate.
//!
//! [`RedisBroker`] implements [`micro_core::Broker`] (its name is `redis`, as in
//! `MICRO_BROKER=redis`) in one of two modes:
//!
//! - **pub/sub** (the default): Go Micro's redis broker, `PUBLISH` and `SUBSCRIBE`, so Go
//!   Micro services on the same Redis exchange events with this one; **at most once**.
//! - **streams** ([`RedisOptions::with_streams`], or `MICRO_REDIS_MODE=streams`): one Redis
//!   stream per topic and consumer groups; messages are stored, **at least once**.
//!
//! # Starting Redis
//!
//! Debian and Ubuntu package it: `apt-get install redis-server` installs it and starts it on
//! `127.0.0.1:6379`. By hand: `redis-server --bind 127.0.0.1 --daemonize yes`. Streams mode
//! needs Redis 6.2 or later (`XPENDING ... IDLE`).
//!
//! [`RedisBroker::new`] contacts nothing; [`Broker::connect`](micro_core::Broker::connect) (or
//! the first publish or subscribe) connects, and fails with a 503 naming `redis at
//! <host:port>` when no server answers. No error, log line or `Debug` output shows a password.
//!
//! # Go Micro's wire format (pub/sub mode)
//!
//! Read from go-micro's `plugins/v4/broker/redis/redis.go`:
//!
//! - `Publish` is `PUBLISH <topic> <payload>`, the payload the `broker.Message` marshalled by
//!   Go Micro's default codec (`codec/json`, that is `encoding/json`):
//!   `{"Header":{"Content-Type":"application/json","Micro-Id":"...","Micro-Topic":"..."},"Body":"<base64>"}`.
//!   Headers travel only inside that JSON; the body is standard base64.
//! - `Subscribe` is `SUBSCRIBE <topic>` on a connection of its own: an exact channel name, no
//!   patterns. A payload that does not decode is skipped, and so is a handler error: nothing
//!   is redelivered, and `Ack` is a no-op.
//! - Queue groups are ignored by Go Micro: every subscriber gets every message.
//!
//! This broker writes the same payload, and reads it (null `Header`/`Body`, field names in
//! any case, unknown fields are all accepted, as Go's decoder does). It adds queue groups:
//! the members of a group each receive a message and the first to `SET <prefix>claim:<topic>:<group>:<Micro-Id> NX PX <claim_ttl>`
//! handles it, so each message reaches one member. That needs the `Micro-Id` header, which
//! Go Micro's publisher always sets and `publish` here adds when it is missing; a message
//! without one reaches every member, as in Go Micro. Go Micro members of a group are not
//! part of this sharing: they get every message, as they would among themselves.
//!
//! Each subscriber keeps up to 256 received messages waiting for its handler; one that falls
//! further behind loses messages (logged), and Redis itself disconnects a subscriber that
//! falls far behind (`client-output-buffer-limit pubsub`, 32 MB by default), after which it
//! subscribes again. A lost connection is re-established with backoff (100 ms to 5 s) and the
//! subscription renewed; what was published meanwhile is gone.
//!
//! # Streams mode: at least once
//!
//! - **Layout.** A topic is the stream `<prefix>stream:<topic>` (`micro:stream:orders`);
//!   each entry has one field, `message`, holding the same JSON envelope as pub/sub mode.
//!   `publish` is `XADD <key> MAXLEN ~ <max_len> * message <envelope>`: `Ok` means Redis
//!   stored it, and a stream holds about [`StreamOptions::max_len`] entries at most.
//! - **Groups.** Members of a queue group share the consumer group named after it, created
//!   at the stream's end when the first member subscribes (`XGROUP CREATE ... $ MKSTREAM`),
//!   and each reads with `XREADGROUP ... >` as a consumer of its own: each message reaches one
//!   member. The group outlives its members, so messages published while they are all away
//!   wait for them (up to `max_len`). A subscriber without a queue group gets a consumer
//!   group of its own, destroyed when it unsubscribes or the broker disconnects (one left by
//!   a process that died holds nothing beyond `max_len`; delete it with `XGROUP DESTROY`).
//!   `subscribe` returns once its group exists, so what is published afterwards reaches it.
//! - **Acks.** With auto-ack a handler's `Ok` is `XACK`; an `Err` (or a panic) nacks. A nack
//!   with requeue delivers the message again to the same subscriber after
//!   [`StreamOptions::nack_delay`] (it stays pending; the subscriber claims it back with
//!   `XCLAIM`); a nack without requeue acks it. A delivery left unacknowledged longer than
//!   [`StreamOptions::visibility_timeout`] (its subscriber died, or hangs) is claimed by
//!   the next member of the group that looks (`XPENDING ... IDLE`, then `XCLAIM`). A message
//!   delivered [`StreamOptions::max_deliver`] times is given up: acked and logged. Expect
//!   duplicates after a crash or a slow handler.
//! - **Order.** Each subscriber handles one message at a time, in stream order; redeliveries
//!   come before new entries.
//!
//! # Bad input
//!
//! Nothing a peer writes panics the broker or ends a subscription. A payload that is not Go
//! Micro's envelope, a stream entry without a `message` field, a payload larger than
//! [`RedisOptions::max_message_size`] and a message with more headers than
//! `MICRO_MAX_HEADERS` / `MICRO_MAX_HEADER_BYTES` allow are logged and dropped (acked, in
//! streams mode, so they do not come back). `publish` refuses a message whose payload would
//! be larger than `max_message_size` with a 413 before anything is sent. The redis crate reads a whole reply
//! before the broker sees it, so one reply may hold up to Redis's own bounds
//! (`proto-max-bulk-len`, the pub/sub output buffer limit) in memory.
//!
//! # Options and environment
//!
//! [`RedisOptions`] in code, or [`RedisOptions::from_env`]:
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_BROKER_ADDRESS` | `host:port` or `redis://[user:password@]host:port[/db]`; `redis://127.0.0.1:6379` by default |
//! | `MICRO_REDIS_MODE` | `pubsub` (default, Go Micro's) or `streams` |
//! | `MICRO_REDIS_KEY_PREFIX` | prefix of the keys written (streams, claims), `micro:` |
//! | `MICRO_REDIS_CONNECT_TIMEOUT` | connecting, and each command, `5s` |
//! | `MICRO_REDIS_MAX_MESSAGE_SIZE` | largest payload (the envelope) published or read, `4MiB` |
//! | `MICRO_REDIS_CLAIM_TTL` | pub/sub queue groups: how long a claim on a message is kept, `60s` |
//! | `MICRO_REDIS_MAX_LEN` | streams: approximate length streams are trimmed to, `10000` |
//! | `MICRO_REDIS_VISIBILITY_TIMEOUT` | streams: unacknowledged this long, a delivery is claimed by another member, `30s` |
//! | `MICRO_REDIS_NACK_DELAY` | streams: redelivery this long after a nack, `1s` |
//! | `MICRO_REDIS_MAX_DELIVER` | streams: deliveries of one message at most, `10` |
//! | `MICRO_REDIS_BLOCK` | streams: how long one read waits for new entries, `1s` |
//! | `MICRO_REDIS_BATCH` | streams: entries read at a time, `16` |
//! | `MICRO_MAX_HEADERS`, `MICRO_MAX_HEADER_BYTES` | headers one received message may carry (512, 64 KiB) |
//!
//! TLS (`rediss://`) is not supported yet.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use micro_broker_redis::{RedisBroker, RedisOptions, StreamOptions};
//! use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions};
//! use micro_core::Broker;
//!
//! # async fn run() -> micro_core::Result<()> {
//! let opts = RedisOptions::from_address("127.0.0.1:6379").with_streams(StreamOptions::default());
//! let broker = RedisBroker::new(opts)?;
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
//! broker.publish("orders.created", msg).await?; // Ok: stored in the stream
//!
//! sub.unsubscribe().await?;
//! broker.disconnect().await?;
//! # Ok(())
//! # }
//! ```

mod broker;
pub mod options;
mod streams;
/// Go Micro's envelope, the payload of every message (`micro_core::broker::envelope`).
mod wire {
    use micro_core::broker::{envelope, Message};
    use micro_core::{MetadataLimits, Result};

    pub(crate) use envelope::encode;

    /// The message in a received payload.
    pub(crate) fn decode(payload: &[u8], limits: MetadataLimits) -> Result<Message> {
        let what = "the Go Micro envelope of a Redis message";
        envelope::decode(payload, limits, crate::ERROR_ID, what)
    }
}

pub use broker::RedisBroker;
pub use options::{Mode, RedisOptions, StreamOptions};

/// Who raises this crate's errors.
pub(crate) const ERROR_ID: &str = "micro.broker.redis";
