//! Where RabbitMQ is and how the broker uses it: [`RabbitOptions`], from code or from the
//! environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use micro_core::broker::dead_letter::PoisonPolicy;
use micro_core::{env, MetadataLimits, Result};

use crate::ERROR_ID;

/// `host:port` or an `amqp://` / `amqps://` URL (Go Micro's name for the broker address).
pub const ADDRESS_ENV: &str = "MICRO_BROKER_ADDRESS";
/// The name of the topic exchange, `micro` unless set.
pub const EXCHANGE_ENV: &str = "MICRO_RABBITMQ_EXCHANGE";
/// `false` declares the exchange non-durable (Go Micro's default); `true` by default.
pub const DURABLE_EXCHANGE_ENV: &str = "MICRO_RABBITMQ_DURABLE_EXCHANGE";
/// `false` publishes without the mandatory flag: a message no queue takes is then dropped by
/// RabbitMQ and still confirmed, rather than an error.
pub const MANDATORY_ENV: &str = "MICRO_RABBITMQ_MANDATORY";
/// How many deliveries a message whose handler fails gets before it is dead-lettered (0: no
/// limit).
pub const MAX_DELIVERIES_ENV: &str = "MICRO_RABBITMQ_MAX_DELIVERIES";
/// The dead-letter exchange (`<exchange>.dlx` by default), or `block`.
pub const DEAD_LETTER_ENV: &str = "MICRO_RABBITMQ_DEAD_LETTER";
/// The queue bound to the dead-letter exchange that keeps dead letters (`<exchange>.dlq` by
/// default), or `none`.
pub const DEAD_LETTER_QUEUE_ENV: &str = "MICRO_RABBITMQ_DEAD_LETTER_QUEUE";
/// `false`: queue-group queues are declared without `x-dead-letter-exchange`.
pub const DEAD_LETTER_ARGUMENTS_ENV: &str = "MICRO_RABBITMQ_DEAD_LETTER_ARGUMENTS";
/// How many unacknowledged messages each subscriber may hold (AMQP QoS prefetch); 0 is no limit.
pub const PREFETCH_ENV: &str = "MICRO_RABBITMQ_PREFETCH";
/// `false` turns publisher confirms off: publish then returns once the message is written.
pub const CONFIRMS_ENV: &str = "MICRO_RABBITMQ_CONFIRMS";
/// `false` publishes transient messages (delivery mode 1) instead of persistent ones.
pub const PERSISTENT_ENV: &str = "MICRO_RABBITMQ_PERSISTENT";
/// How queue groups name their queue: `scoped` (the default) or `bare` (Go Micro's).
pub const QUEUE_NAMING_ENV: &str = "MICRO_RABBITMQ_QUEUE_NAMING";
/// How long an unused queue-group queue lives on (RabbitMQ's `x-expires`); unset keeps it.
pub const QUEUE_EXPIRY_ENV: &str = "MICRO_RABBITMQ_QUEUE_EXPIRY";
/// How long connecting (and opening a subscription) may take.
pub const CONNECT_TIMEOUT_ENV: &str = "MICRO_RABBITMQ_CONNECT_TIMEOUT";
/// How long a publish may wait for the connection to come back and for the confirm.
pub const PUBLISH_TIMEOUT_ENV: &str = "MICRO_RABBITMQ_PUBLISH_TIMEOUT";
/// The first pause between reconnect attempts; it doubles after each failure.
pub const RECONNECT_MIN_ENV: &str = "MICRO_RABBITMQ_RECONNECT_MIN";
/// The longest pause between reconnect attempts.
pub const RECONNECT_MAX_ENV: &str = "MICRO_RABBITMQ_RECONNECT_MAX";
/// The pause before a message whose handler failed goes back to its queue.
pub const REQUEUE_DELAY_ENV: &str = "MICRO_RABBITMQ_REQUEUE_DELAY";
/// The largest message body publish accepts, in bytes.
pub const MAX_MESSAGE_SIZE_ENV: &str = "MICRO_RABBITMQ_MAX_MESSAGE_SIZE";
/// A PEM file of the CA certificate(s) that signed RabbitMQ's certificate, for `amqps://`.
pub const TLS_CA_ENV: &str = "MICRO_RABBITMQ_TLS_CA";

/// The URL used when none is given: a local RabbitMQ, user `guest`, vhost `/`.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The exchange Go Micro's RabbitMQ plugin publishes to.
pub const DEFAULT_EXCHANGE: &str = "micro";
/// RabbitMQ 4's own limit (`max_message_size`); RabbitMQ 3 allows 128 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How a queue group (subscribers sharing the messages of a topic) names its shared queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueNaming {
    /// `<exchange>.<topic>.<queue>`, e.g. `micro.orders.created.billing`: one group name used on
    /// several topics gets one queue per topic, so a handler only sees its own topic.
    #[default]
    Scoped,
    /// `<queue>` as given, like Go Micro's plugin with `DurableQueue()`, so that Go and Rust
    /// members of a group share one queue. One queue then collects every topic it is bound to.
    Bare,
}

/// How a [`RabbitBroker`](crate::RabbitBroker) reaches RabbitMQ and uses it.
///
/// `Default` is a local RabbitMQ as guest, a durable topic exchange `micro`, mandatory
/// publishes, 10 deliveries before a failing message goes to the dead-letter exchange
/// `micro.dlx` (kept in the queue `micro.dlq`), prefetch 64,
/// publisher confirms and persistent messages, scoped queue-group names kept forever, 5 s to
/// connect and to publish, reconnects every 100 ms to 5 s, and 16 MiB messages at most;
/// [`from_env`](Self::from_env) reads the `MICRO_*` variables over that.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitOptions {
    /// `amqp://user:password@host:port/vhost` (`amqps://` for TLS). A trailing `/` with no
    /// vhost means the default vhost `/`, as in Go Micro; `%2f` spells it out.
    pub url: String,
    /// The topic exchange every message goes through; the routing key is the topic.
    pub exchange: String,
    /// Declare the exchange durable (the default), so it survives a RabbitMQ restart. Go
    /// Micro's plugin declares it non-durable unless told `DurableExchange()`; RabbitMQ refuses
    /// to declare an existing exchange with the other durability, so one that already exists
    /// is used as it is (with a warning), and a Go Micro service started after this one must
    /// declare it durable too (or set this to `false` for a fleet of Go Micro defaults).
    pub durable_exchange: bool,
    /// Publish with the mandatory flag (the default): a message no queue is bound to take is
    /// returned by RabbitMQ, and `publish` fails with a 404 saying so, instead of a confirm for a
    /// message that went nowhere. Needs [`RabbitOptions::confirms`].
    pub mandatory: bool,
    /// How many deliveries a message whose handler fails (or that is nacked with requeue) gets
    /// before it is dead-lettered; 0 for no limit. Default 10. The broker counts them in the
    /// `Micro-Deliveries` header (and reads a quorum queue's `x-delivery-count`): a failed
    /// message is published again to its queue with the count raised and the delivery acked
    /// once that is confirmed, so it goes to the back of the queue.
    pub max_deliveries: u32,
    /// Where a message goes once its deliveries are used up: [`PoisonPolicy::DeadLetter`] names
    /// the dead-letter exchange (`<exchange>.dlx` by default, a durable topic exchange; the
    /// routing key is the topic; `{topic}` in the name is replaced by the topic). The dead
    /// letter carries the reason headers of [`micro_core::broker::dead_letter`], is published
    /// mandatory with a confirm, and only then is the original acked; if it cannot be placed
    /// the original is requeued and it is tried again. [`PoisonPolicy::Block`] requeues a
    /// failing message for ever (no counting).
    pub dead_letter: PoisonPolicy,
    /// A durable queue declared and bound (`#`) to the dead-letter exchange so dead letters are
    /// kept: `<exchange>.dlq` by default. `None` when you bind your own queues (a dead letter
    /// no queue takes is not dropped: it stays in its queue and is tried again).
    pub dead_letter_queue: Option<String>,
    /// Declare queue-group queues with `x-dead-letter-exchange` (the default), so messages
    /// RabbitMQ itself rejects (a manual `nack(false)` under block, `x-expires`, length limits)
    /// reach the dead-letter exchange too. Go Micro's plugin declares its queues without it,
    /// and RabbitMQ refuses a declaration whose arguments differ from the queue's: a queue
    /// that already exists without it (a Go Micro group's, with bare names) is used as it is,
    /// with a warning; the broker's own dead-lettering works either way. A RabbitMQ policy
    /// (`rabbitmqctl set_policy DLX ".*" '{"dead-letter-exchange":"micro.dlx"}' --apply-to
    /// queues`) sets it on existing queues without redeclaring them.
    pub dead_letter_arguments: bool,
    /// How many unacknowledged messages each subscriber may hold (QoS); 0 is no limit.
    pub prefetch: u16,
    /// Publish returns `Ok` only once RabbitMQ confirmed the message (publisher confirms).
    pub confirms: bool,
    /// Publish with delivery mode 2, so messages in durable queues survive a RabbitMQ restart.
    pub persistent: bool,
    /// How queue groups name their shared durable queue.
    pub queue_naming: QueueNaming,
    /// When set, a queue-group queue nobody consumes from is deleted after this long
    /// (`x-expires`); when `None` it stays, holding messages until a member returns.
    pub queue_expiry: Option<Duration>,
    /// How long connecting, and opening a subscription's channel and queue, may take.
    pub connect_timeout: Duration,
    /// How long one publish may wait, for the connection to come back and then for the confirm.
    pub publish_timeout: Duration,
    /// The first pause between reconnect attempts (and resubscribe attempts); doubles each time.
    pub reconnect_min: Duration,
    /// The longest pause between reconnect attempts; the broker keeps trying until disconnected.
    pub reconnect_max: Duration,
    /// The pause before a message whose handler failed (auto-ack) is requeued, so that a message
    /// that always fails does not spin; zero requeues at once.
    pub requeue_delay: Duration,
    /// The largest body publish accepts; larger ones fail with a 413 before reaching RabbitMQ.
    pub max_message_size: usize,
    /// How many headers, and bytes of them, one received message may carry; a message past
    /// them is logged and dropped (acked, so it does not come back). `MICRO_MAX_HEADERS`
    /// (default 512), `MICRO_MAX_HEADER_BYTES` (default 64 KiB).
    pub header_limits: MetadataLimits,
    /// A PEM file of the CA that signed RabbitMQ's certificate, for `amqps://` URLs; without it
    /// the system's roots are trusted.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        RabbitOptions {
            url: DEFAULT_URL.to_string(),
            exchange: DEFAULT_EXCHANGE.to_string(),
            durable_exchange: true,
            mandatory: true,
            max_deliveries: 10,
            dead_letter: PoisonPolicy::DeadLetter(format!("{DEFAULT_EXCHANGE}.dlx")),
            dead_letter_queue: Some(format!("{DEFAULT_EXCHANGE}.dlq")),
            dead_letter_arguments: true,
            prefetch: 64,
            confirms: true,
            persistent: true,
            queue_naming: QueueNaming::Scoped,
            queue_expiry: None,
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            requeue_delay: Duration::from_millis(50),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            header_limits: MetadataLimits::default(),
            tls_ca_file: None,
        }
    }
}

impl fmt::Debug for RabbitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitOptions")
            .field("url", &redacted(&self.url))
            .field("exchange", &self.exchange)
            .field("durable_exchange", &self.durable_exchange)
            .field("mandatory", &self.mandatory)
            .field("max_deliveries", &self.max_deliveries)
            .field("dead_letter", &self.dead_letter)
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("dead_letter_arguments", &self.dead_letter_arguments)
            .field("prefetch", &self.prefetch)
            .field("confirms", &self.confirms)
            .field("persistent", &self.persistent)
            .field("queue_naming", &self.queue_naming)
            .field("queue_expiry", &self.queue_expiry)
            .field("connect_timeout", &self.connect_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("requeue_delay", &self.requeue_delay)
            .field("max_message_size", &self.max_message_size)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl RabbitOptions {
    /// The defaults at `address`, as `MICRO_BROKER_ADDRESS` and `--broker_address` give it:
    /// `host[:port]` (port 5672 when left out; user, password and vhost stay the default's) or
    /// a full `amqp://` / `amqps://` URL. An empty address keeps the default.
    pub fn from_address(address: &str) -> Self {
        RabbitOptions::default().with_address(address)
    }

    /// The options the environment describes, over the defaults:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `MICRO_BROKER_ADDRESS` | `host:port` or `amqp(s)://user:pass@host:port/vhost` |
    /// | `MICRO_RABBITMQ_EXCHANGE` | the topic exchange, `micro` |
    /// | `MICRO_RABBITMQ_DURABLE_EXCHANGE` | `false` for a non-durable exchange (`true`) |
    /// | `MICRO_RABBITMQ_MANDATORY` | unroutable publishes are errors, `true` |
    /// | `MICRO_RABBITMQ_MAX_DELIVERIES` | deliveries of a failing message before it is dead-lettered, `10` (0: no limit) |
    /// | `MICRO_RABBITMQ_DEAD_LETTER` | the dead-letter exchange, `<exchange>.dlx`, or `block` |
    /// | `MICRO_RABBITMQ_DEAD_LETTER_QUEUE` | the queue keeping dead letters, `<exchange>.dlq`, or `none` |
    /// | `MICRO_RABBITMQ_DEAD_LETTER_ARGUMENTS` | declare group queues with `x-dead-letter-exchange`, `true` |
    /// | `MICRO_RABBITMQ_PREFETCH` | unacknowledged messages per subscriber, `64` (0: no limit) |
    /// | `MICRO_RABBITMQ_CONFIRMS` | publisher confirms, `true` |
    /// | `MICRO_RABBITMQ_PERSISTENT` | persistent messages, `true` |
    /// | `MICRO_RABBITMQ_QUEUE_NAMING` | `scoped` (`<exchange>.<topic>.<queue>`) or `bare` (`<queue>`) |
    /// | `MICRO_RABBITMQ_QUEUE_EXPIRY` | delete unused queue-group queues after this long (never) |
    /// | `MICRO_RABBITMQ_CONNECT_TIMEOUT` | `5s` |
    /// | `MICRO_RABBITMQ_PUBLISH_TIMEOUT` | `5s` |
    /// | `MICRO_RABBITMQ_RECONNECT_MIN`, `MICRO_RABBITMQ_RECONNECT_MAX` | reconnect backoff, `100ms` to `5s` |
    /// | `MICRO_RABBITMQ_REQUEUE_DELAY` | pause before a failed message is requeued, `50ms` |
    /// | `MICRO_RABBITMQ_MAX_MESSAGE_SIZE` | bytes, `16777216` |
    /// | `MICRO_RABBITMQ_TLS_CA` | PEM CA file for `amqps://` (system roots otherwise) |
    ///
    /// Durations are `250ms`, `5s`, `2m` or a bare number of seconds; booleans are
    /// `true`/`false`, `1`/`0`, `yes`/`no` or `on`/`off`. A value that does not parse is an
    /// error that names the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables (tests use a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let invalid =
            |name: &str, v: &str, expected: &str| env::invalid_from(ERROR_ID, name, v, expected);
        let switch = |name: &str, v: &str| {
            env::parse_bool(v).ok_or_else(|| invalid(name, v, "true or false"))
        };
        let duration = |name: &str, v: &str| {
            env::parse_duration(v)
                .ok_or_else(|| invalid(name, v, "a duration such as 250ms, 5s or 2m"))
        };
        let mut o = RabbitOptions::default();
        if let Some(address) = get(ADDRESS_ENV) {
            o = o.with_address(&address);
        }
        if let Some(v) = get(EXCHANGE_ENV) {
            o = o.with_exchange(v);
        }
        if let Some(v) = get(MANDATORY_ENV) {
            o.mandatory = switch(MANDATORY_ENV, &v)?;
        }
        if let Some(v) = get(MAX_DELIVERIES_ENV) {
            o.max_deliveries = v
                .parse()
                .map_err(|_| invalid(MAX_DELIVERIES_ENV, &v, "a whole number (0: no limit)"))?;
        }
        if let Some(v) = get(DEAD_LETTER_ENV) {
            o.dead_letter = PoisonPolicy::from_setting(ERROR_ID, DEAD_LETTER_ENV, &v)?;
        }
        if let Some(v) = get(DEAD_LETTER_QUEUE_ENV) {
            o.dead_letter_queue = (!v.eq_ignore_ascii_case("none")).then_some(v);
        }
        if let Some(v) = get(DEAD_LETTER_ARGUMENTS_ENV) {
            o.dead_letter_arguments = switch(DEAD_LETTER_ARGUMENTS_ENV, &v)?;
        }
        if let Some(v) = get(DURABLE_EXCHANGE_ENV) {
            o.durable_exchange = switch(DURABLE_EXCHANGE_ENV, &v)?;
        }
        if let Some(v) = get(PREFETCH_ENV) {
            o.prefetch = v
                .parse()
                .map_err(|_| invalid(PREFETCH_ENV, &v, "a number from 0 to 65535"))?;
        }
        if let Some(v) = get(CONFIRMS_ENV) {
            o.confirms = switch(CONFIRMS_ENV, &v)?;
        }
        if let Some(v) = get(PERSISTENT_ENV) {
            o.persistent = switch(PERSISTENT_ENV, &v)?;
        }
        if let Some(v) = get(QUEUE_NAMING_ENV) {
            o.queue_naming = match v.to_ascii_lowercase().as_str() {
                "scoped" => QueueNaming::Scoped,
                "bare" | "go-micro" | "gomicro" => QueueNaming::Bare,
                _ => return Err(invalid(QUEUE_NAMING_ENV, &v, "`scoped` or `bare`")),
            };
        }
        if let Some(v) = get(QUEUE_EXPIRY_ENV) {
            o.queue_expiry = Some(duration(QUEUE_EXPIRY_ENV, &v)?);
        }
        if let Some(v) = get(CONNECT_TIMEOUT_ENV) {
            o.connect_timeout = duration(CONNECT_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(PUBLISH_TIMEOUT_ENV) {
            o.publish_timeout = duration(PUBLISH_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(RECONNECT_MIN_ENV) {
            o.reconnect_min = duration(RECONNECT_MIN_ENV, &v)?;
        }
        if let Some(v) = get(RECONNECT_MAX_ENV) {
            o.reconnect_max = duration(RECONNECT_MAX_ENV, &v)?;
        }
        if let Some(v) = get(REQUEUE_DELAY_ENV) {
            o.requeue_delay = duration(REQUEUE_DELAY_ENV, &v)?;
        }
        if let Some(v) = get(MAX_MESSAGE_SIZE_ENV) {
            o.max_message_size = v
                .parse()
                .map_err(|_| invalid(MAX_MESSAGE_SIZE_ENV, &v, "a number of bytes"))?;
        }
        o.tls_ca_file = get(TLS_CA_ENV).map(PathBuf::from);
        o.header_limits = MetadataLimits::from_vars(&lookup)?;
        Ok(o)
    }

    /// These options at `address` (see [`from_address`](Self::from_address)); an empty address
    /// changes nothing.
    pub fn with_address(mut self, address: &str) -> Self {
        let address = address.trim();
        if address.is_empty() {
            return self;
        }
        if address.contains("://") {
            self.url = address.to_string();
            return self;
        }
        // A bare host[:port] keeps the scheme, the credentials and the vhost of the current URL.
        let host_port = if has_port(address) {
            address.to_string()
        } else {
            format!("{address}:5672")
        };
        self.url = match UrlParts::split(&self.url) {
            Some(p) => {
                let user = p.userinfo.map(|u| format!("{u}@")).unwrap_or_default();
                format!("{}://{user}{host_port}{}", p.scheme, p.rest)
            }
            None => format!("amqp://guest:guest@{host_port}/%2f"),
        };
        self
    }

    /// These options with another exchange. Dead-letter names still derived from the old one
    /// (`<exchange>.dlx`, `<exchange>.dlq`) follow it.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        let exchange = exchange.into();
        let old = std::mem::replace(&mut self.exchange, exchange);
        if self.dead_letter == PoisonPolicy::DeadLetter(format!("{old}.dlx")) {
            self.dead_letter = PoisonPolicy::DeadLetter(format!("{}.dlx", self.exchange));
        }
        if self.dead_letter_queue.as_deref() == Some(format!("{old}.dlq").as_str()) {
            self.dead_letter_queue = Some(format!("{}.dlq", self.exchange));
        }
        self
    }

    /// These options with another prefetch (QoS) per subscriber.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// These options with another reconnect backoff, from `min` doubling up to `max`.
    pub fn with_reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// These options with another publish timeout.
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// These options with unused queue-group queues deleted after `expiry`.
    pub fn with_queue_expiry(mut self, expiry: Duration) -> Self {
        self.queue_expiry = Some(expiry);
        self
    }
}

/// The pieces of `scheme://[userinfo@]host[:port][/vhost][?query]` this crate needs, split by
/// hand: the `url` crate drops IP hosts that the AMQP URI parser then replaces with `localhost`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UrlParts<'a> {
    pub(crate) scheme: &'a str,
    pub(crate) userinfo: Option<&'a str>,
    /// `host`, `host:port`, `[::1]:port`.
    pub(crate) host_port: &'a str,
    /// `/vhost?query`, possibly empty.
    pub(crate) rest: &'a str,
}

impl<'a> UrlParts<'a> {
    pub(crate) fn split(url: &'a str) -> Option<Self> {
        let (scheme, after) = url.split_once("://")?;
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let (userinfo, host_port) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        Some(UrlParts {
            scheme,
            userinfo,
            host_port,
            rest,
        })
    }

    /// The host, without brackets around an IPv6 address.
    pub(crate) fn host(&self) -> &'a str {
        let hp = self.host_port;
        if let Some(inner) = hp.strip_prefix('[') {
            return inner.split(']').next().unwrap_or(inner);
        }
        hp.rsplit_once(':').map_or(hp, |(h, _)| h)
    }
}

fn has_port(host_port: &str) -> bool {
    match host_port.rfind(']') {
        Some(close) => host_port[close..].contains(':'),
        None => host_port.matches(':').count() == 1,
    }
}

/// The URL with its password replaced, for logs and `Debug`.
pub(crate) fn redacted(url: &str) -> String {
    match UrlParts::split(url) {
        Some(UrlParts {
            scheme,
            userinfo: Some(userinfo),
            host_port,
            rest,
        }) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') {
                format!("{user}:<redacted>")
            } else {
                user.to_string()
            };
            format!("{scheme}://{hidden}@{host_port}{rest}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn host_port_keeps_credentials_and_vhost() {
        let o = RabbitOptions::from_address("10.0.0.7:5673");
        assert_eq!(o.url, "amqp://guest:guest@10.0.0.7:5673/%2f");
        let o = RabbitOptions::from_address("rabbit");
        assert_eq!(o.url, "amqp://guest:guest@rabbit:5672/%2f");
        let o = RabbitOptions {
            url: "amqps://app:s3cret@old:5671/prod".into(),
            ..Default::default()
        }
        .with_address("[::1]:5671");
        assert_eq!(o.url, "amqps://app:s3cret@[::1]:5671/prod");
        let o = RabbitOptions::from_address("amqp://u:p@h:1/v");
        assert_eq!(o.url, "amqp://u:p@h:1/v");
        assert_eq!(RabbitOptions::from_address(" ").url, DEFAULT_URL);
    }

    #[test]
    fn url_parts() {
        let p = UrlParts::split("amqp://u:p@127.0.0.1:5672/%2f?heartbeat=5").expect("url");
        assert_eq!(p.host(), "127.0.0.1");
        assert!(has_port(p.host_port));
        assert_eq!(p.rest, "/%2f?heartbeat=5");
        let p = UrlParts::split("amqps://[::1]").expect("url");
        assert_eq!(p.host(), "::1");
        assert!(!has_port(p.host_port));
        assert!(UrlParts::split("127.0.0.1:5672").is_none());
    }

    #[test]
    fn environment() {
        let o = RabbitOptions::from_lookup(lookup(&[
            (ADDRESS_ENV, "127.0.0.1:5999"),
            (EXCHANGE_ENV, "events"),
            (DURABLE_EXCHANGE_ENV, "no"),
            (MANDATORY_ENV, "false"),
            (MAX_DELIVERIES_ENV, "3"),
            (DEAD_LETTER_QUEUE_ENV, "none"),
            (DEAD_LETTER_ARGUMENTS_ENV, "off"),
            (PREFETCH_ENV, "10"),
            (CONFIRMS_ENV, "off"),
            (PERSISTENT_ENV, "0"),
            (QUEUE_NAMING_ENV, "bare"),
            (QUEUE_EXPIRY_ENV, "10m"),
            (PUBLISH_TIMEOUT_ENV, "250ms"),
            (RECONNECT_MAX_ENV, "2"),
            (MAX_MESSAGE_SIZE_ENV, "1024"),
            (TLS_CA_ENV, "/etc/ca.pem"),
        ]))
        .expect("valid");
        assert_eq!(o.url, "amqp://guest:guest@127.0.0.1:5999/%2f");
        assert_eq!(o.exchange, "events");
        assert!(!o.durable_exchange && !o.mandatory && !o.dead_letter_arguments);
        assert_eq!(o.max_deliveries, 3);
        assert_eq!(
            o.dead_letter,
            PoisonPolicy::DeadLetter("events.dlx".into()),
            "follows the exchange"
        );
        assert_eq!(o.dead_letter_queue, None);
        let d = RabbitOptions::default();
        assert!(d.durable_exchange && d.mandatory && d.dead_letter_arguments);
        assert_eq!(d.dead_letter_queue.as_deref(), Some("micro.dlq"));
        let b = RabbitOptions::from_lookup(lookup(&[(DEAD_LETTER_ENV, "block")])).expect("block");
        assert_eq!(b.dead_letter, PoisonPolicy::Block);
        assert_eq!(o.prefetch, 10);
        assert!(!o.confirms);
        assert!(!o.persistent);
        assert_eq!(o.queue_naming, QueueNaming::Bare);
        assert_eq!(o.queue_expiry, Some(Duration::from_secs(600)));
        assert_eq!(o.publish_timeout, Duration::from_millis(250));
        assert_eq!(o.reconnect_max, Duration::from_secs(2));
        assert_eq!(o.max_message_size, 1024);
        assert_eq!(o.tls_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            RabbitOptions::from_lookup(lookup(&[])).expect("defaults"),
            RabbitOptions::default()
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = RabbitOptions::from_lookup(lookup(&[(PREFETCH_ENV, "lots")])).expect_err("bad");
        assert!(err.detail.contains(PREFETCH_ENV), "{err}");
        let err = RabbitOptions::from_lookup(lookup(&[(PUBLISH_TIMEOUT_ENV, "5 parsecs")]))
            .expect_err("bad");
        assert!(err.detail.contains(PUBLISH_TIMEOUT_ENV), "{err}");
        let err = RabbitOptions::from_lookup(lookup(&[(CONFIRMS_ENV, "maybe")])).expect_err("bad");
        assert!(err.detail.contains(CONFIRMS_ENV), "{err}");
    }

    #[test]
    fn debug_hides_the_password() {
        let o = RabbitOptions::from_address("amqp://app:hunter2@h:5672/v");
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app:<redacted>@h:5672/v"), "{shown}");
    }
}
