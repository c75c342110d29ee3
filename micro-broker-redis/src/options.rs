//! Where Redis is and how the broker uses it: [`RedisOptions`], from code or from the
//! environment.

use std::time::Duration;

use micro_core::{env, MetadataLimits, Result};

use crate::ERROR_ID;

/// `host:port` or a `redis://[user:password@]host:port[/db]` URL.
pub const ENV_ADDRESS: &str = "MICRO_BROKER_ADDRESS";
/// `pubsub` (Go Micro's PUBLISH/SUBSCRIBE, the default) or `streams`.
pub const ENV_MODE: &str = "MICRO_REDIS_MODE";
/// The prefix of every key the broker writes (streams, queue-group claims), `micro:`.
pub const ENV_KEY_PREFIX: &str = "MICRO_REDIS_KEY_PREFIX";
/// How long connecting and one command may take, `5s`.
pub const ENV_CONNECT_TIMEOUT: &str = "MICRO_REDIS_CONNECT_TIMEOUT";
/// The largest payload (the envelope) published or received, `4MiB`.
pub const ENV_MAX_MESSAGE_SIZE: &str = "MICRO_REDIS_MAX_MESSAGE_SIZE";
/// Pub/sub mode: how long a queue group's claim on a message is kept, `60s`.
pub const ENV_CLAIM_TTL: &str = "MICRO_REDIS_CLAIM_TTL";
/// Streams mode: the approximate length streams are trimmed to (`MAXLEN ~`), `10000`.
pub const ENV_MAX_LEN: &str = "MICRO_REDIS_MAX_LEN";
/// Streams mode: how long a delivery may stay unacknowledged before another member claims it.
pub const ENV_VISIBILITY_TIMEOUT: &str = "MICRO_REDIS_VISIBILITY_TIMEOUT";
/// Streams mode: how long a nacked message waits before it is delivered again, `1s`.
pub const ENV_NACK_DELAY: &str = "MICRO_REDIS_NACK_DELAY";
/// Streams mode: deliveries of one message at most, `10`.
pub const ENV_MAX_DELIVER: &str = "MICRO_REDIS_MAX_DELIVER";
/// Streams mode: how long one read waits for new entries, `1s`.
pub const ENV_BLOCK: &str = "MICRO_REDIS_BLOCK";
/// Streams mode: entries read at a time, `16`.
pub const ENV_BATCH: &str = "MICRO_REDIS_BATCH";

/// The server used when none is given, as in Go Micro.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// How messages travel through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Go Micro's layout: `PUBLISH <topic> <envelope>` and `SUBSCRIBE <topic>`. Nothing is
    /// stored: at most once. The default.
    #[default]
    PubSub,
    /// One Redis stream per topic, a consumer group per queue group (and per subscriber
    /// without one): at least once, with acks and redelivery.
    Streams,
}

/// Settings of [`Mode::Streams`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// Streams are trimmed to about this many entries on each publish (`XADD MAXLEN ~`), so a
    /// topic nobody reads holds at most this many. Default 10 000.
    pub max_len: u64,
    /// A delivery unacknowledged this long (its subscriber died or hangs) is claimed by the
    /// next member of the group that looks. Default 30 s.
    pub visibility_timeout: Duration,
    /// A nacked message (or one whose handler failed) is delivered again after this long.
    /// Default 1 s.
    pub nack_delay: Duration,
    /// A message delivered this many times is given up (acknowledged and logged). Default 10.
    pub max_deliver: u32,
    /// How long one read waits for new entries; also the longest a due redelivery waits.
    /// Default 1 s.
    pub block: Duration,
    /// How many entries one read takes at most. Default 16.
    pub batch: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            max_len: 10_000,
            visibility_timeout: Duration::from_secs(30),
            nack_delay: Duration::from_secs(1),
            max_deliver: 10,
            block: Duration::from_secs(1),
            batch: 16,
        }
    }
}

/// How a [`RedisBroker`](crate::RedisBroker) reaches Redis and uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`; a bare `host:port` gets `redis://`.
    pub url: String,
    /// Pub/sub (Go Micro's, the default) or streams.
    pub mode: Mode,
    /// Streams mode settings (ignored in pub/sub mode).
    pub streams: StreamOptions,
    /// The prefix of the keys the broker writes: streams are `<prefix>stream:<topic>`, queue
    /// group claims `<prefix>claim:<topic>:<group>:<id>`. Default `micro:`.
    pub key_prefix: String,
    /// How long connecting, and each command, may take. Default 5 s.
    pub connect_timeout: Duration,
    /// The largest payload (Go Micro's envelope: base64 makes a body a third larger) that
    /// `publish` sends (413 past it) and a subscriber reads (logged and dropped past it).
    /// Default 4 MiB.
    pub max_message_size: usize,
    /// Pub/sub mode: how long the claim that gives one queue-group member a message is kept.
    /// Members that read the message later than this after the first get it again. Default
    /// 60 s.
    pub claim_ttl: Duration,
    /// How many headers, and bytes of them, one received message may carry
    /// (`MICRO_MAX_HEADERS`, `MICRO_MAX_HEADER_BYTES`).
    pub header_limits: MetadataLimits,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: DEFAULT_URL.into(),
            mode: Mode::PubSub,
            streams: StreamOptions::default(),
            key_prefix: "micro:".into(),
            connect_timeout: Duration::from_secs(5),
            max_message_size: 4 << 20,
            claim_ttl: Duration::from_secs(60),
            header_limits: MetadataLimits::default(),
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redacted(&self.url))
            .field("mode", &self.mode)
            .field("streams", &self.streams)
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("claim_ttl", &self.claim_ttl)
            .field("header_limits", &self.header_limits)
            .finish()
    }
}

/// `url` with any password replaced by `***`.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl RedisOptions {
    /// The defaults at `address` (`host:port` or a `redis://` URL); empty keeps the default.
    pub fn from_address(address: &str) -> Self {
        RedisOptions::default().with_address(address)
    }

    /// Replaces the server: `host:port` (Go Micro adds `redis://` the same way) or a URL.
    pub fn with_address(mut self, address: &str) -> Self {
        let address = address.trim();
        if !address.is_empty() {
            self.url = if address.contains("://") {
                address.to_string()
            } else {
                format!("redis://{address}")
            };
        }
        self
    }

    /// Switches streams mode on with `streams`.
    pub fn with_streams(mut self, streams: StreamOptions) -> Self {
        self.mode = Mode::Streams;
        self.streams = streams;
        self
    }

    /// The options in the environment (the table in the crate documentation) over the
    /// defaults. A value that does not read is an error naming the variable.
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
        let duration = |name: &str| -> Result<Option<Duration>> {
            get(name)
                .map(|v| {
                    env::parse_duration(&v)
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| invalid(name, &v, "a duration such as 500ms, 5s or 2m"))
                })
                .transpose()
        };
        let count = |name: &str| -> Result<Option<u64>> {
            get(name)
                .map(|v| {
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| invalid(name, &v, "a positive whole number"))
                })
                .transpose()
        };
        let mut opts = RedisOptions::default();
        if let Some(a) = get(ENV_ADDRESS) {
            opts = opts.with_address(&a);
        }
        if let Some(v) = get(ENV_MODE) {
            opts.mode = match v.to_ascii_lowercase().as_str() {
                "pubsub" => Mode::PubSub,
                "streams" | "stream" => Mode::Streams,
                _ => return Err(invalid(ENV_MODE, &v, "`pubsub` or `streams`")),
            };
        }
        if let Some(v) = get(ENV_KEY_PREFIX) {
            opts.key_prefix = v;
        }
        if let Some(d) = duration(ENV_CONNECT_TIMEOUT)? {
            opts.connect_timeout = d;
        }
        if let Some(v) = get(ENV_MAX_MESSAGE_SIZE) {
            opts.max_message_size = env::parse_size(&v)
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(ENV_MAX_MESSAGE_SIZE, &v, "a size such as 4MiB"))?;
        }
        if let Some(d) = duration(ENV_CLAIM_TTL)? {
            opts.claim_ttl = d;
        }
        if let Some(n) = count(ENV_MAX_LEN)? {
            opts.streams.max_len = n;
        }
        if let Some(d) = duration(ENV_VISIBILITY_TIMEOUT)? {
            opts.streams.visibility_timeout = d;
        }
        if let Some(d) = duration(ENV_NACK_DELAY)? {
            opts.streams.nack_delay = d;
        }
        if let Some(n) = count(ENV_MAX_DELIVER)? {
            opts.streams.max_deliver = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(d) = duration(ENV_BLOCK)? {
            opts.streams.block = d;
        }
        if let Some(n) = count(ENV_BATCH)? {
            opts.streams.batch = usize::try_from(n).unwrap_or(usize::MAX).min(1000);
        }
        opts.header_limits = MetadataLimits::from_vars(get)?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<RedisOptions> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RedisOptions::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_are_go_micros() {
        let opts = from(&[]).expect("defaults");
        assert_eq!(opts, RedisOptions::default());
        assert_eq!(opts.url, "redis://127.0.0.1:6379");
        assert_eq!(opts.mode, Mode::PubSub);
    }

    #[test]
    fn reads_every_variable() {
        let opts = from(&[
            (ENV_ADDRESS, "10.0.0.1:6380"),
            (ENV_MODE, "streams"),
            (ENV_KEY_PREFIX, "svc:"),
            (ENV_CONNECT_TIMEOUT, "2s"),
            (ENV_MAX_MESSAGE_SIZE, "64KiB"),
            (ENV_CLAIM_TTL, "10s"),
            (ENV_MAX_LEN, "500"),
            (ENV_VISIBILITY_TIMEOUT, "5s"),
            (ENV_NACK_DELAY, "100ms"),
            (ENV_MAX_DELIVER, "3"),
            (ENV_BLOCK, "250ms"),
            (ENV_BATCH, "4"),
            ("MICRO_MAX_HEADERS", "8"),
        ])
        .expect("all set");
        assert_eq!(opts.url, "redis://10.0.0.1:6380");
        assert_eq!(opts.mode, Mode::Streams);
        assert_eq!(opts.key_prefix, "svc:");
        assert_eq!(opts.connect_timeout, Duration::from_secs(2));
        assert_eq!(opts.max_message_size, 64 * 1024);
        assert_eq!(opts.claim_ttl, Duration::from_secs(10));
        let s = &opts.streams;
        assert_eq!(s.max_len, 500);
        assert_eq!(s.visibility_timeout, Duration::from_secs(5));
        assert_eq!(s.nack_delay, Duration::from_millis(100));
        assert_eq!(s.max_deliver, 3);
        assert_eq!(s.block, Duration::from_millis(250));
        assert_eq!(s.batch, 4);
        assert_eq!(opts.header_limits.max_entries, 8);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            (ENV_MODE, "queue"),
            (ENV_CONNECT_TIMEOUT, "soon"),
            (ENV_MAX_LEN, "-1"),
            (ENV_MAX_MESSAGE_SIZE, "big"),
        ] {
            let err = from(&[(var, value)]).expect_err(var);
            assert!(err.detail.contains(var), "{}", err.detail);
        }
    }

    #[test]
    fn passwords_stay_hidden() {
        let opts = RedisOptions::from_address("redis://app:hunter2@127.0.0.1:6379/2");
        let shown = format!("{opts:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("redis://app:***@127.0.0.1:6379/2"),
            "{shown}"
        );
        assert_eq!(RedisOptions::from_address(" ").url, DEFAULT_URL);
    }
}
