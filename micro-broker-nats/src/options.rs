//! [`NatsOptions`] and [`JetStreamOptions`]: where NATS is, how to log in, and which delivery
//! mode to use; in code or from `MICRO_*` environment variables.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use micro_core::broker::dead_letter::PoisonPolicy;
use micro_core::{env, MetadataLimits, Result};

use crate::ERROR_ID;

/// The server used when none is configured.
pub const DEFAULT_SERVER: &str = "127.0.0.1:4222";

/// Comma-separated servers (`host:port`, `nats://host:port`, `tls://host:port`).
pub const ENV_ADDRESS: &str = "MICRO_BROKER_ADDRESS";
/// A NATS credentials file (JWT and NKey seed), as `nsc` writes it.
pub const ENV_CREDENTIALS: &str = "MICRO_NATS_CREDENTIALS";
/// A token for token authentication.
pub const ENV_TOKEN: &str = "MICRO_NATS_TOKEN";
/// A user name for user/password authentication.
pub const ENV_USER: &str = "MICRO_NATS_USER";
/// The password that goes with [`ENV_USER`].
pub const ENV_PASSWORD: &str = "MICRO_NATS_PASSWORD";
/// `1`/`true`: require TLS even when no certificate file is given.
pub const ENV_TLS: &str = "MICRO_NATS_TLS";
/// A PEM file of the CA that signed the server's certificate.
pub const ENV_TLS_CA: &str = "MICRO_NATS_TLS_CA";
/// A PEM client certificate, for servers that verify clients.
pub const ENV_TLS_CERT: &str = "MICRO_NATS_TLS_CERT";
/// The PEM key of [`ENV_TLS_CERT`].
pub const ENV_TLS_KEY: &str = "MICRO_NATS_TLS_KEY";
/// How long connecting may take (`5s`, `500ms`, or plain seconds).
pub const ENV_CONNECT_TIMEOUT: &str = "MICRO_NATS_CONNECT_TIMEOUT";
/// `headers` (default) or `gomicro`: the wire layout, see [`Envelope`].
pub const ENV_ENVELOPE: &str = "MICRO_NATS_ENVELOPE";
/// `1`/`true`: JetStream mode (durable, at least once); core NATS otherwise.
pub const ENV_JETSTREAM: &str = "MICRO_NATS_JETSTREAM";
/// JetStream: the prefix of the streams the broker creates.
pub const ENV_STREAM_PREFIX: &str = "MICRO_NATS_STREAM_PREFIX";
/// JetStream: the prefix of the durable consumers the broker creates.
pub const ENV_CONSUMER_PREFIX: &str = "MICRO_NATS_CONSUMER_PREFIX";
/// JetStream: how long a delivered message may stay unacknowledged before it is redelivered.
pub const ENV_ACK_WAIT: &str = "MICRO_NATS_ACK_WAIT";
/// JetStream: how long a nacked message waits before it is redelivered.
pub const ENV_NACK_DELAY: &str = "MICRO_NATS_NACK_DELAY";
/// JetStream: how many times a message is delivered before it is dead-lettered (`-1`: no limit).
pub const ENV_MAX_DELIVER: &str = "MICRO_NATS_MAX_DELIVER";
/// JetStream: where a message goes once its deliveries are used up: a subject pattern
/// (`dlq.{topic}`, the default) or `block` ([`PoisonPolicy`]).
pub const ENV_DEAD_LETTER: &str = "MICRO_NATS_DEAD_LETTER";
/// The dead-letter subject pattern of JetStream mode unless configured: a prefix rather than
/// a suffix, so that a stream on `orders.>` does not take the dead letters of `orders.new` back.
pub const DEFAULT_DEAD_LETTER: &str = "dlq.{topic}";
/// JetStream: `file` (default) or `memory` storage for created streams.
pub const ENV_STORAGE: &str = "MICRO_NATS_STORAGE";
/// JetStream: `interest` (default) or `limits` retention for created streams.
pub const ENV_RETENTION: &str = "MICRO_NATS_RETENTION";
/// JetStream: the longest a created stream keeps a message (unset: no limit).
pub const ENV_MAX_AGE: &str = "MICRO_NATS_MAX_AGE";
/// JetStream: how long a JetStream API call or a publish acknowledgement may take.
pub const ENV_REQUEST_TIMEOUT: &str = "MICRO_NATS_REQUEST_TIMEOUT";

/// How to reach NATS and which delivery mode to use.
///
/// `Debug` hides the token and the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URLs: `host:port`, `nats://host:port` or `tls://host:port`. Default
    /// `["127.0.0.1:4222"]`. async-nats connects to one and fails over to the others.
    pub servers: Vec<String>,
    /// A credentials file (JWT and NKey seed) for decentralised auth.
    pub credentials_file: Option<PathBuf>,
    /// A token for token authentication.
    pub token: Option<String>,
    /// A user name for user/password authentication (with [`NatsOptions::password`]).
    pub user: Option<String>,
    /// The password of [`NatsOptions::user`].
    pub password: Option<String>,
    /// Require TLS even without certificate files or a `tls://` URL.
    pub tls_required: bool,
    /// A PEM file of the CA that signed the server's certificate (added to the system roots).
    pub tls_ca: Option<PathBuf>,
    /// A PEM client certificate, for servers that verify clients (with [`NatsOptions::tls_key`]).
    pub tls_cert: Option<PathBuf>,
    /// The PEM key of [`NatsOptions::tls_cert`].
    pub tls_key: Option<PathBuf>,
    /// How long connecting may take. Default 5 s.
    pub connect_timeout: Duration,
    /// The connection name the server shows in its monitoring. Default `micro`.
    pub name: String,
    /// How messages are laid out on the wire. Default [`Envelope::Headers`].
    pub envelope: Envelope,
    /// How many header entries and bytes one received message may carry (NATS headers and a
    /// Go Micro envelope's `Header` alike); a message past them is logged and dropped.
    /// `MICRO_MAX_HEADERS` (default 512), `MICRO_MAX_HEADER_BYTES` (default 64 KiB).
    pub header_limits: MetadataLimits,
    /// JetStream mode (durable, at least once) when set; core NATS (at most once) when `None`,
    /// the default.
    pub jetstream: Option<JetStreamOptions>,
}

/// How a Micro message is laid out in a NATS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Envelope {
    /// Micro headers as NATS headers and the body as the payload, readable by any NATS client.
    /// The default.
    #[default]
    Headers,
    /// Go Micro's NATS broker layout: the payload is the JSON
    /// `{"Header":{...},"Body":"<base64>"}` and no NATS headers are used, so Go Micro services
    /// on the same NATS exchange events with this one. This chooses only what is published:
    /// subscribers read either layout, whatever this says.
    GoMicro,
}

/// Where the streams of JetStream mode keep messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// On disk: messages survive a server restart. The default.
    #[default]
    File,
    /// In memory: faster, lost when the server stops.
    Memory,
}

/// When the streams of JetStream mode let go of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Once every consumer on the stream acknowledged it: a topic's stream holds only what some
    /// subscriber (or queue group) has still to handle. The default.
    #[default]
    Interest,
    /// Only by the stream's limits (see [`JetStreamOptions::max_age`]): a log that can be read
    /// again by other tools.
    Limits,
}

/// JetStream mode: streams, durable consumers, acknowledgements and redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamOptions {
    /// A topic with no stream covering it gets the stream `<prefix>_<topic>` (characters a
    /// stream name cannot hold become `_`). Default `MICRO`.
    pub stream_prefix: String,
    /// Queue group `q` on topic `t` shares the durable consumer `<prefix>_<t>_<q>`; a
    /// subscriber without a queue group gets `<prefix>_<t>_<random>` of its own, deleted when
    /// it unsubscribes. Default `micro`.
    pub consumer_prefix: String,
    /// How long a delivery may stay unacknowledged before the server redelivers it. Default
    /// 30 s.
    pub ack_wait: Duration,
    /// How long a nacked message (or one whose handler failed) waits before it is redelivered.
    /// Default 1 s.
    pub nack_delay: Duration,
    /// How many times one message is delivered before [`JetStreamOptions::dead_letter`]
    /// decides its fate; `-1` (or 0) for no limit. Default 10. The broker counts (JetStream's
    /// own `max_deliver` of the consumers it makes is unlimited, so the server never gives a
    /// message up silently).
    pub max_deliver: i64,
    /// What happens to a message delivered `max_deliver` times that still fails: published to
    /// a dead-letter subject (by default `dlq.<topic>`, stored in a stream the broker makes with
    /// [`Retention::Limits`] when none covers it) and terminated once JetStream stored the dead
    /// letter; or, with [`PoisonPolicy::Block`], redelivered for as long as it fails.
    pub dead_letter: PoisonPolicy,
    /// Storage of the streams this broker creates. Default [`Storage::File`].
    pub storage: Storage,
    /// Retention of the streams this broker creates. Default [`Retention::Interest`].
    pub retention: Retention,
    /// The longest the streams this broker creates keep a message. Default `None` (no limit).
    pub max_age: Option<Duration>,
    /// How long a JetStream API call (stream and consumer set-up) or the server's
    /// acknowledgement of a publish may take. Default 5 s.
    pub request_timeout: Duration,
    /// Inactive per-subscriber consumers (of a process that died without unsubscribing) are
    /// deleted by servers 2.10 and later after this long. Default 5 min.
    pub inactive_threshold: Duration,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            stream_prefix: "MICRO".into(),
            consumer_prefix: "micro".into(),
            ack_wait: Duration::from_secs(30),
            nack_delay: Duration::from_secs(1),
            max_deliver: 10,
            dead_letter: PoisonPolicy::DeadLetter(DEFAULT_DEAD_LETTER.to_string()),
            storage: Storage::File,
            retention: Retention::Interest,
            max_age: None,
            request_timeout: Duration::from_secs(5),
            inactive_threshold: Duration::from_secs(300),
        }
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            servers: vec![DEFAULT_SERVER.to_string()],
            credentials_file: None,
            token: None,
            user: None,
            password: None,
            tls_required: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            connect_timeout: Duration::from_secs(5),
            name: "micro".into(),
            envelope: Envelope::Headers,
            header_limits: MetadataLimits::default(),
            jetstream: None,
        }
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("NatsOptions")
            .field("servers", &self.servers)
            .field("credentials_file", &self.credentials_file)
            .field("token", &hidden(&self.token))
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("tls_required", &self.tls_required)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("name", &self.name)
            .field("envelope", &self.envelope)
            .field("jetstream", &self.jetstream)
            .finish()
    }
}

impl NatsOptions {
    /// Core NATS at the comma-separated `servers` (`nats://` optional).
    pub fn from_address(servers: &str) -> Self {
        NatsOptions::default().with_servers(servers)
    }

    /// Replaces the servers with the comma-separated list `servers`; an empty list keeps the
    /// current ones.
    pub fn with_servers(mut self, servers: &str) -> Self {
        let list = split_servers(servers);
        if !list.is_empty() {
            self.servers = list;
        }
        self
    }

    /// Switches JetStream mode on with `opts`.
    pub fn with_jetstream(mut self, opts: JetStreamOptions) -> Self {
        self.jetstream = Some(opts);
        self
    }

    /// The options in the environment (the table in the crate documentation), defaults for
    /// what is unset. A value that does not parse is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`NatsOptions::from_env`], reading variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let invalid =
            |var: &str, v: &str, expected: &str| env::invalid_from(ERROR_ID, var, v, expected);
        let switch = |var: &str, v: &str| {
            env::parse_bool(v).ok_or_else(|| invalid(var, v, "1/true/yes/on or 0/false/no/off"))
        };
        let mut opts = NatsOptions::default();
        if let Some(list) = get(ENV_ADDRESS) {
            opts = opts.with_servers(&list);
        }
        opts.credentials_file = get(ENV_CREDENTIALS).map(PathBuf::from);
        opts.token = get(ENV_TOKEN);
        opts.user = get(ENV_USER);
        opts.password = get(ENV_PASSWORD);
        if let Some(v) = get(ENV_TLS) {
            opts.tls_required = switch(ENV_TLS, &v)?;
        }
        opts.tls_ca = get(ENV_TLS_CA).map(PathBuf::from);
        opts.tls_cert = get(ENV_TLS_CERT).map(PathBuf::from);
        opts.tls_key = get(ENV_TLS_KEY).map(PathBuf::from);
        if let Some(v) = get(ENV_CONNECT_TIMEOUT) {
            opts.connect_timeout = parse_duration(ENV_CONNECT_TIMEOUT, &v)?;
        }
        if let Some(v) = get(ENV_ENVELOPE) {
            opts.envelope = match v.to_ascii_lowercase().as_str() {
                "headers" => Envelope::Headers,
                "gomicro" | "go-micro" => Envelope::GoMicro,
                _ => return Err(invalid(ENV_ENVELOPE, &v, "`headers` or `gomicro`")),
            };
        }
        opts.header_limits = MetadataLimits::from_vars(get)?;
        let jetstream = match get(ENV_JETSTREAM) {
            Some(v) => switch(ENV_JETSTREAM, &v)?,
            None => false,
        };
        if jetstream {
            let mut js = JetStreamOptions::default();
            if let Some(v) = get(ENV_STREAM_PREFIX) {
                js.stream_prefix = v;
            }
            if let Some(v) = get(ENV_CONSUMER_PREFIX) {
                js.consumer_prefix = v;
            }
            if let Some(v) = get(ENV_ACK_WAIT) {
                js.ack_wait = parse_duration(ENV_ACK_WAIT, &v)?;
            }
            if let Some(v) = get(ENV_NACK_DELAY) {
                js.nack_delay = parse_duration(ENV_NACK_DELAY, &v)?;
            }
            if let Some(v) = get(ENV_MAX_DELIVER) {
                js.max_deliver = v.parse().map_err(|_| {
                    invalid(ENV_MAX_DELIVER, &v, "a whole number, or -1 for no limit")
                })?;
            }
            if let Some(v) = get(ENV_DEAD_LETTER) {
                js.dead_letter = PoisonPolicy::from_setting(ERROR_ID, ENV_DEAD_LETTER, &v)?;
            }
            if let Some(v) = get(ENV_STORAGE) {
                js.storage = match v.to_ascii_lowercase().as_str() {
                    "file" => Storage::File,
                    "memory" => Storage::Memory,
                    _ => return Err(invalid(ENV_STORAGE, &v, "`file` or `memory`")),
                };
            }
            if let Some(v) = get(ENV_RETENTION) {
                js.retention = match v.to_ascii_lowercase().as_str() {
                    "interest" => Retention::Interest,
                    "limits" => Retention::Limits,
                    _ => return Err(invalid(ENV_RETENTION, &v, "`interest` or `limits`")),
                };
            }
            if let Some(v) = get(ENV_MAX_AGE) {
                js.max_age = Some(parse_duration(ENV_MAX_AGE, &v)?);
            }
            if let Some(v) = get(ENV_REQUEST_TIMEOUT) {
                js.request_timeout = parse_duration(ENV_REQUEST_TIMEOUT, &v)?;
            }
            opts.jetstream = Some(js);
        }
        Ok(opts)
    }
}

/// `a, nats://b:4222,,c` -> `["a", "nats://b:4222", "c"]`.
fn split_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `500ms`, `5s`, `2m`, `1h`, or a plain number of seconds: [`env::parse_duration`] on whole
/// numbers, the only ones these variables have taken (their tests hold `1.5s` to be an error).
pub(crate) fn parse_duration(var: &str, value: &str) -> Result<Duration> {
    Some(value)
        .filter(|v| !v.contains('.'))
        .and_then(env::parse_duration)
        .ok_or_else(|| {
            let expected =
                "a duration such as 500ms, 5s, 2m or 1h (plain whole numbers are seconds)";
            env::invalid_from(ERROR_ID, var, value, expected)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<NatsOptions> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NatsOptions::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_are_core_nats_on_loopback() {
        let opts = from(&[]).expect("defaults");
        assert_eq!(opts, NatsOptions::default());
        assert_eq!(opts.servers, ["127.0.0.1:4222"]);
        assert!(opts.jetstream.is_none());
    }

    #[test]
    fn reads_every_variable() {
        let opts = from(&[
            (ENV_ADDRESS, "nats://a:4222, b:4223 ,"),
            (ENV_CREDENTIALS, "/etc/nats/user.creds"),
            (ENV_TOKEN, "s3cret"),
            (ENV_USER, "bob"),
            (ENV_PASSWORD, "pw"),
            (ENV_TLS, "true"),
            (ENV_TLS_CA, "/ca.pem"),
            (ENV_TLS_CERT, "/cert.pem"),
            (ENV_TLS_KEY, "/key.pem"),
            (ENV_CONNECT_TIMEOUT, "750ms"),
            (ENV_ENVELOPE, "gomicro"),
            (ENV_JETSTREAM, "1"),
            (ENV_STREAM_PREFIX, "ORDERS"),
            (ENV_CONSUMER_PREFIX, "svc"),
            (ENV_ACK_WAIT, "10s"),
            (ENV_NACK_DELAY, "250ms"),
            (ENV_MAX_DELIVER, "-1"),
            (ENV_DEAD_LETTER, "block"),
            (ENV_STORAGE, "memory"),
            (ENV_RETENTION, "limits"),
            (ENV_MAX_AGE, "2h"),
            (ENV_REQUEST_TIMEOUT, "3"),
        ])
        .expect("all set");
        assert_eq!(opts.servers, ["nats://a:4222", "b:4223"]);
        assert_eq!(
            opts.credentials_file,
            Some(PathBuf::from("/etc/nats/user.creds"))
        );
        assert_eq!(opts.token.as_deref(), Some("s3cret"));
        assert_eq!(opts.user.as_deref(), Some("bob"));
        assert_eq!(opts.password.as_deref(), Some("pw"));
        assert!(opts.tls_required);
        assert_eq!(opts.tls_ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(opts.tls_cert, Some(PathBuf::from("/cert.pem")));
        assert_eq!(opts.tls_key, Some(PathBuf::from("/key.pem")));
        assert_eq!(opts.connect_timeout, Duration::from_millis(750));
        assert_eq!(opts.envelope, Envelope::GoMicro);
        let js = opts.jetstream.clone().expect("jetstream on");
        assert_eq!(js.stream_prefix, "ORDERS");
        assert_eq!(js.consumer_prefix, "svc");
        assert_eq!(js.ack_wait, Duration::from_secs(10));
        assert_eq!(js.nack_delay, Duration::from_millis(250));
        assert_eq!(js.max_deliver, -1);
        assert_eq!(js.dead_letter, PoisonPolicy::Block);
        assert_eq!(
            JetStreamOptions::default()
                .dead_letter
                .destination("orders.new")
                .as_deref(),
            Some("dlq.orders.new")
        );
        assert_eq!(js.storage, Storage::Memory);
        assert_eq!(js.retention, Retention::Limits);
        assert_eq!(js.max_age, Some(Duration::from_secs(7200)));
        assert_eq!(js.request_timeout, Duration::from_secs(3));
        let shown = format!("{opts:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("\"pw\""),
            "{shown}"
        );
    }

    #[test]
    fn jetstream_settings_need_jetstream_on() {
        let opts = from(&[(ENV_JETSTREAM, "0"), (ENV_ACK_WAIT, "1s")]).expect("parses");
        assert!(opts.jetstream.is_none());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = from(&[(ENV_JETSTREAM, "maybe")]).expect_err("bad bool");
        assert!(err.detail.contains(ENV_JETSTREAM), "{}", err.detail);
        let err = from(&[(ENV_CONNECT_TIMEOUT, "soon")]).expect_err("bad duration");
        assert!(err.detail.contains(ENV_CONNECT_TIMEOUT), "{}", err.detail);
        let err = from(&[(ENV_JETSTREAM, "1"), (ENV_STORAGE, "tape")]).expect_err("bad storage");
        assert!(err.detail.contains("`file` or `memory`"), "{}", err.detail);
        assert_eq!(err.code, 400);
    }

    #[test]
    fn durations() {
        let d = |v| parse_duration("X", v).expect(v);
        assert_eq!(d("15"), Duration::from_secs(15));
        assert_eq!(d("15s"), Duration::from_secs(15));
        assert_eq!(d("20ms"), Duration::from_millis(20));
        assert_eq!(d("3m"), Duration::from_secs(180));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert!(parse_duration("X", "1.5s").is_err());
        assert!(parse_duration("X", "s").is_err());
    }

    #[test]
    fn an_empty_address_keeps_the_default() {
        assert_eq!(
            NatsOptions::from_address(" , ").servers,
            [DEFAULT_SERVER.to_string()]
        );
    }
}
