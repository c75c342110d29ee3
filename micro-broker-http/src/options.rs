//! [`HttpBrokerOptions`]: where the broker listens, how it registers its subscribers, and its
//! limits, from code or from the environment.

use std::time::Duration;

use micro_core::{env, Error, MetadataLimits, Result};

use crate::ID;

const MIB: usize = 1024 * 1024;

/// `MICRO_BROKER_ADDRESS`: the address the broker's HTTP server listens on.
pub const ADDRESS_ENV: &str = "MICRO_BROKER_ADDRESS";
/// `MICRO_BROKER_ADVERTISE`: the address registered for subscribers instead of the listener's.
pub const ADVERTISE_ENV: &str = "MICRO_BROKER_ADVERTISE";
/// `MICRO_REGISTER_TTL`: how long a subscriber's registry entry lives (shared with the server).
pub const REGISTER_TTL_ENV: &str = "MICRO_REGISTER_TTL";
/// `MICRO_REGISTER_INTERVAL`: how often subscribers register again (shared with the server).
pub const REGISTER_INTERVAL_ENV: &str = "MICRO_REGISTER_INTERVAL";
/// `MICRO_BROKER_HTTP_MAX_BODY`: the largest request body the broker's server reads.
pub const MAX_BODY_ENV: &str = "MICRO_BROKER_HTTP_MAX_BODY";
/// `MICRO_BROKER_HTTP_TIMEOUT`: how long one delivery (a POST and its handler) may take.
pub const TIMEOUT_ENV: &str = "MICRO_BROKER_HTTP_TIMEOUT";
/// `MICRO_BROKER_HTTP_CACHE_TTL`: how long a registry lookup serves publishing at most.
pub const CACHE_TTL_ENV: &str = "MICRO_BROKER_HTTP_CACHE_TTL";
/// The variable for [`HttpBrokerOptions::max_connections`].
pub const MAX_CONNECTIONS_ENV: &str = "MICRO_BROKER_HTTP_MAX_CONNECTIONS";
/// The variable that sets [`HttpBrokerOptions::idle_timeout`].
pub const IDLE_TIMEOUT_ENV: &str = "MICRO_BROKER_HTTP_IDLE_TIMEOUT";

/// The options of an [`HttpBroker`](crate::HttpBroker).
///
/// `HttpBrokerOptions::default()` listens on a free loopback port; [`HttpBrokerOptions::from_env`]
/// reads the variables named on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBrokerOptions {
    /// Where the HTTP server listens, `host:port` (port 0 picks a free one).
    /// `MICRO_BROKER_ADDRESS`, default `127.0.0.1:0`.
    pub address: String,
    /// The `host:port` other processes reach this broker at, registered as the subscribers'
    /// node address. Without it the listener's address is used; when that is a wildcard
    /// (`0.0.0.0`), the first private IPv4 address of this host (or 127.0.0.1).
    /// `MICRO_BROKER_ADVERTISE`, default none.
    pub advertise: Option<String>,
    /// How long a subscriber's registry entry lives without being registered again.
    /// `MICRO_REGISTER_TTL`, default 60 s (Go Micro's http broker).
    pub register_ttl: Duration,
    /// How often each subscriber registers again while it lives.
    /// `MICRO_REGISTER_INTERVAL`, default 30 s (Go Micro's http broker).
    pub register_interval: Duration,
    /// The largest request body (the JSON envelope, so about 4/3 of the message body) the
    /// server reads; larger ones are answered 413. `MICRO_BROKER_HTTP_MAX_BODY`, default 4 MiB.
    pub max_body_bytes: usize,
    /// How long one delivery may take: on the publishing side the whole POST including the
    /// subscriber's handler, on the receiving side the reading of the request body.
    /// `MICRO_BROKER_HTTP_TIMEOUT`, default 30 s.
    pub request_timeout: Duration,
    /// How long a registry lookup of the subscribers serves publishing before it is made
    /// again (in the background while a registry watch runs). Registry watch events and this
    /// broker's own subscribe/unsubscribe refresh it sooner. `MICRO_BROKER_HTTP_CACHE_TTL`,
    /// default 1 s.
    pub cache_ttl: Duration,
    /// How many header entries and bytes one received envelope may carry; past them the
    /// publisher is answered 431 and the message is dropped. `MICRO_MAX_HEADERS` (default 512)
    /// and `MICRO_MAX_HEADER_BYTES` (default 64 KiB).
    pub header_limits: MetadataLimits,
    /// How many connections the receiving server holds open at once; past it a new one is
    /// closed at once (publishers retry on another connection once one frees up), and those
    /// open keep being served. `MICRO_BROKER_HTTP_MAX_CONNECTIONS`, default 1024.
    pub max_connections: usize,
    /// How long the receiving server keeps a connection on which no request started: an idle
    /// kept-alive connection, or one still sending its first request's head a byte at a time
    /// (a slowloris), is closed after between one and two of these (checked once a period).
    /// Keep it above publishers' pool idle time (Go Micro's and this broker's own, 60 s), so
    /// that they do not find pooled connections closed. `MICRO_BROKER_HTTP_IDLE_TIMEOUT`,
    /// default 90 s.
    pub idle_timeout: Duration,
}

impl Default for HttpBrokerOptions {
    fn default() -> Self {
        HttpBrokerOptions {
            address: "127.0.0.1:0".to_string(),
            advertise: None,
            register_ttl: Duration::from_secs(60),
            register_interval: Duration::from_secs(30),
            max_body_bytes: 4 * MIB,
            request_timeout: Duration::from_secs(30),
            cache_ttl: Duration::from_secs(1),
            header_limits: MetadataLimits::default(),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

impl HttpBrokerOptions {
    /// The defaults, overridden by whichever variables are set (see each field).
    ///
    /// Sizes are bytes, optionally with a `K`/`KiB`, `M`/`MiB` or `G`/`GiB` suffix (`4MiB`);
    /// durations are seconds, or a number with a unit (`500ms`, `90s`, `2m`, `1.5h`), read like
    /// every Micro setting by [`micro_core::env`]. A value that does not parse is an error
    /// naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`HttpBrokerOptions::from_env`], with variables looked up through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut o = HttpBrokerOptions::default();
        let text = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = text(ADDRESS_ENV) {
            o.address = v;
        }
        if let Some(v) = text(ADVERTISE_ENV) {
            o.advertise = Some(v);
        }
        let duration = |name: &str, into: &mut Duration| -> Result<()> {
            if let Some(v) = text(name) {
                *into = env::parse_duration(&v).ok_or_else(|| {
                    env::invalid_from(
                        ID,
                        name,
                        &v,
                        "a duration, e.g. 30 (seconds), 500ms, 90s or 2m",
                    )
                })?;
            }
            Ok(())
        };
        duration(REGISTER_TTL_ENV, &mut o.register_ttl)?;
        duration(REGISTER_INTERVAL_ENV, &mut o.register_interval)?;
        duration(TIMEOUT_ENV, &mut o.request_timeout)?;
        duration(CACHE_TTL_ENV, &mut o.cache_ttl)?;
        duration(IDLE_TIMEOUT_ENV, &mut o.idle_timeout)?;
        if let Some(v) = text(MAX_BODY_ENV) {
            o.max_body_bytes = env::parse_size(&v).ok_or_else(|| {
                env::invalid_from(
                    ID,
                    MAX_BODY_ENV,
                    &v,
                    "a size in bytes, e.g. 4194304, 64KiB or 4MiB",
                )
            })?;
        }
        if let Some(v) = text(MAX_CONNECTIONS_ENV) {
            o.max_connections = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                env::invalid_from(ID, MAX_CONNECTIONS_ENV, &v, "a whole number above 0")
            })?;
        }
        o.header_limits = MetadataLimits::from_vars(&var)?;
        o.validate()?;
        Ok(o)
    }

    /// These options listening on `address` (`host:port`).
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// These options registering subscribers at `address` instead of the listener's.
    pub fn with_advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// These options with another register TTL and re-register interval.
    pub fn with_register(mut self, ttl: Duration, interval: Duration) -> Self {
        self.register_ttl = ttl;
        self.register_interval = interval;
        self
    }

    /// These options with another body limit.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// These options with another delivery timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// These options with another lookup cache lifetime.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// These options with the receiving server's idle timeout set to `timeout`.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Checks that the options can work together.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::bad_request(ID, detail));
        if self.address.trim().is_empty() {
            return bad("the broker's listen address is empty; set MICRO_BROKER_ADDRESS to host:port, e.g. 127.0.0.1:0".into());
        }
        if self.register_ttl.is_zero() || self.register_interval.is_zero() {
            return bad(format!(
                "register TTL ({:?}) and interval ({:?}) must be more than zero",
                self.register_ttl, self.register_interval
            ));
        }
        if self.register_interval >= self.register_ttl {
            return bad(format!(
                "the register interval ({:?}) must be shorter than the register TTL ({:?}), or subscribers drop out of the registry between renewals",
                self.register_interval, self.register_ttl
            ));
        }
        if self.max_body_bytes == 0 {
            return bad("the body limit must be more than zero bytes".into());
        }
        if self.request_timeout.is_zero() {
            return bad("the request timeout must be more than zero".into());
        }
        if self.idle_timeout.is_zero() {
            return bad("the idle timeout must be more than zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults() {
        let o = HttpBrokerOptions::default();
        assert_eq!(o.address, "127.0.0.1:0");
        assert_eq!(o.max_body_bytes, 4 * MIB);
        assert!(o.validate().is_ok());
        assert_eq!(HttpBrokerOptions::from_vars(|_| None).ok(), Some(o));
    }

    #[test]
    fn env_overrides_defaults() {
        let o = HttpBrokerOptions::from_vars(vars(&[
            (ADDRESS_ENV, "0.0.0.0:8001"),
            (ADVERTISE_ENV, "10.0.0.5:8001"),
            (REGISTER_TTL_ENV, "90"),
            (REGISTER_INTERVAL_ENV, "15s"),
            (MAX_BODY_ENV, "1MiB"),
            (TIMEOUT_ENV, "500ms"),
            (CACHE_TTL_ENV, "2s"),
            (IDLE_TIMEOUT_ENV, "3s"),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.address, "0.0.0.0:8001");
        assert_eq!(o.advertise.as_deref(), Some("10.0.0.5:8001"));
        assert_eq!(o.register_ttl, Duration::from_secs(90));
        assert_eq!(o.register_interval, Duration::from_secs(15));
        assert_eq!(o.max_body_bytes, MIB);
        assert_eq!(o.request_timeout, Duration::from_millis(500));
        assert_eq!(o.cache_ttl, Duration::from_secs(2));
        assert_eq!(o.idle_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = HttpBrokerOptions::from_vars(vars(&[(TIMEOUT_ENV, "soon")]))
            .err()
            .unwrap_or_default();
        assert_eq!(e.code, 400);
        assert!(
            e.detail.contains("MICRO_BROKER_HTTP_TIMEOUT=\"soon\""),
            "{e}"
        );
        let e = HttpBrokerOptions::from_vars(vars(&[(REGISTER_INTERVAL_ENV, "2m")]))
            .err()
            .unwrap_or_default();
        assert!(e.detail.contains("shorter than the register TTL"), "{e}");
        let e = HttpBrokerOptions::from_vars(vars(&[(IDLE_TIMEOUT_ENV, "0")]))
            .err()
            .unwrap_or_default();
        assert!(e.detail.contains("idle timeout"), "{e}");
    }
}
