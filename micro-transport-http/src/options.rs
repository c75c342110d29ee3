//! [`HttpOptions`]: the limits and timeouts of the transport, from code or from the environment.

use std::time::Duration;

use micro_core::env::{self, parse_size};
use micro_core::{MetadataLimits, Result};

use crate::{TlsOptions, ID};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// The limits and timeouts of [`HttpTransport`](crate::HttpTransport), for both its client and
/// its server side.
///
/// `HttpOptions::default()` suits most services; [`HttpOptions::from_env`] reads the
/// `MICRO_HTTP_*` variables named on each field, and `MICRO_TLS_*` for [`tls`](Self::tls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// The largest request or response head: hyper's HTTP/1 read buffer (at least 8 KiB) and
    /// the HTTP/2 header list; also the largest header of a stream frame.
    /// `MICRO_HTTP_MAX_HEADER_BYTES`, default 64 KiB.
    pub max_header_bytes: usize,
    /// The most header entries of one request head (HTTP/1; HTTP/2 heads are bounded by
    /// [`max_header_bytes`](Self::max_header_bytes)) or one stream frame; more is refused (431
    /// on a request head, a 431 Micro error ending the stream for a frame).
    /// `MICRO_MAX_HEADERS`, default 512.
    pub max_headers: usize,
    /// The largest unary request or reply body, and the largest body of one stream frame.
    /// `MICRO_HTTP_MAX_BODY`, default 4 MiB.
    pub max_body_bytes: usize,
    /// How long a server connection may go without a request in flight before it is closed.
    /// A request head must also arrive within this time: on HTTP/1 it is hyper's header read
    /// timeout, which starts as soon as the connection waits for the next request. Keep it
    /// above Go Micro's connection pool TTL (60 s) so Go clients do not find their pooled
    /// connections closed. `MICRO_HTTP_IDLE_TIMEOUT`, default 90 s.
    pub idle_timeout: Duration,
    /// How long a unary body, or the rest of a stream frame once its first byte arrived, may
    /// take to arrive. `MICRO_HTTP_BODY_TIMEOUT`, default 30 s.
    pub body_read_timeout: Duration,
    /// How many idle keep-alive connections the client keeps per address.
    /// `MICRO_HTTP_POOL_MAX_IDLE`, default 256. Each call in flight holds a connection of its
    /// own (HTTP/1.1), and a connection finding the pool full is closed: keep this above the
    /// calls a client makes at once to one node, or every call past it pays a new connection.
    pub pool_max_idle_per_host: usize,
    /// How long the client keeps an idle pooled connection; keep it below the server's
    /// `idle_timeout`. `MICRO_HTTP_POOL_IDLE_TIMEOUT`, default 60 s.
    pub pool_idle_timeout: Duration,
    /// The most connections the server holds open at once; past it a new connection is
    /// closed at once while those open keep being served. `MICRO_HTTP_MAX_CONNECTIONS`,
    /// default 16 384 (mind `ulimit -n`).
    pub max_connections: usize,
    /// How long one stream message may wait to be taken by a peer that stopped reading (its
    /// flow-control window full) before the stream fails with a `408`; a stream's first
    /// message must also arrive within [`body_read_timeout`](Self::body_read_timeout) of the
    /// stream's opening. `MICRO_HTTP_WRITE_TIMEOUT`, default 30 s.
    pub write_timeout: Duration,
    /// TLS for both sides, or `None` for plaintext (HTTP/1.1 and h2c). With it the server
    /// speaks only TLS on its port and the client dials every address with TLS.
    /// `MICRO_TLS_CERT`, `MICRO_TLS_KEY`, `MICRO_TLS_CA`: see [`TlsOptions::from_env`].
    pub tls: Option<TlsOptions>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_header_bytes: 64 * KIB,
            max_headers: MetadataLimits::default().max_entries,
            max_body_bytes: 4 * MIB,
            idle_timeout: Duration::from_secs(90),
            body_read_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 256,
            pool_idle_timeout: Duration::from_secs(60),
            max_connections: 16_384,
            write_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

impl HttpOptions {
    /// The defaults, overridden by whichever `MICRO_HTTP_*` variables are set, with TLS when
    /// any `MICRO_TLS_*` variable is set ([`TlsOptions::from_env`]).
    ///
    /// Sizes are bytes, optionally with a `K`/`KiB`, `M`/`MiB` or `G`/`GiB` suffix (`4MiB`), as
    /// [`micro_core::env::parse_size`] reads them; durations are seconds, or a number with `ms`,
    /// `s` or `m` (`500ms`, `90s`, also `1.5s`, `us`, `ns`: [`micro_core::env::parse_duration`]
    /// without hours). A value that does not parse, or a PEM file that cannot be read or used,
    /// is a `400` naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut o = HttpOptions::default();
        let size = |name: &str, into: &mut usize| -> Result<()> {
            if let Some(v) = var(name) {
                *into = parse_size(&v).ok_or_else(|| {
                    env::invalid_from(ID, name, &v, "a size in bytes, e.g. 4194304, 64KiB or 4MiB")
                })?;
            }
            Ok(())
        };
        size("MICRO_HTTP_MAX_HEADER_BYTES", &mut o.max_header_bytes)?;
        o.max_headers = MetadataLimits::from_vars(&var)?.max_entries;
        size("MICRO_HTTP_MAX_BODY", &mut o.max_body_bytes)?;
        size("MICRO_HTTP_POOL_MAX_IDLE", &mut o.pool_max_idle_per_host)?;
        size("MICRO_HTTP_MAX_CONNECTIONS", &mut o.max_connections)?;
        o.max_connections = o.max_connections.max(1);
        let duration = |name: &str, into: &mut Duration| -> Result<()> {
            if let Some(v) = var(name) {
                *into = parse_duration(&v).ok_or_else(|| {
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
        duration("MICRO_HTTP_IDLE_TIMEOUT", &mut o.idle_timeout)?;
        duration("MICRO_HTTP_BODY_TIMEOUT", &mut o.body_read_timeout)?;
        duration("MICRO_HTTP_POOL_IDLE_TIMEOUT", &mut o.pool_idle_timeout)?;
        duration("MICRO_HTTP_WRITE_TIMEOUT", &mut o.write_timeout)?;
        o.tls = TlsOptions::from_vars(&var)?;
        Ok(o)
    }

    /// These options with TLS on both sides.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How much of an oversized HTTP/1 request body the server reads and throws away so the
    /// connection can serve the next request: four times `max_body_bytes`, at most 64 MiB.
    /// Beyond it the connection is closed instead.
    pub fn drain_limit(&self) -> usize {
        self.max_body_bytes
            .saturating_mul(4)
            .min(64 * MIB)
            .max(self.max_body_bytes)
    }
}

/// [`env::parse_duration`] short of hours: these variables have never taken `h`, and their tests
/// hold `5h` to be an error.
fn parse_duration(s: &str) -> Option<Duration> {
    env::parse_duration(s).filter(|_| !s.trim_end().ends_with('h'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_defaults() {
        let vars = [
            ("MICRO_HTTP_MAX_BODY", "1MiB"),
            ("MICRO_HTTP_MAX_HEADER_BYTES", "16384"),
            ("MICRO_HTTP_IDLE_TIMEOUT", "2m"),
            ("MICRO_HTTP_BODY_TIMEOUT", "500ms"),
            ("MICRO_HTTP_POOL_MAX_IDLE", "4"),
            ("MICRO_HTTP_POOL_IDLE_TIMEOUT", "10"),
            ("MICRO_HTTP_MAX_CONNECTIONS", "100"),
            ("MICRO_HTTP_WRITE_TIMEOUT", "5s"),
        ];
        let o = HttpOptions::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.max_body_bytes, MIB);
        assert_eq!(o.max_header_bytes, 16384);
        assert_eq!(o.idle_timeout, Duration::from_secs(120));
        assert_eq!(o.body_read_timeout, Duration::from_millis(500));
        assert_eq!(o.pool_max_idle_per_host, 4);
        assert_eq!(o.pool_idle_timeout, Duration::from_secs(10));
        assert_eq!(o.max_connections, 100);
        assert_eq!(o.write_timeout, Duration::from_secs(5));
        assert_eq!(o.drain_limit(), 4 * MIB);
    }

    #[test]
    fn nothing_set_gives_defaults() {
        let o = HttpOptions::from_vars(|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o, HttpOptions::default());
        assert_eq!(o.drain_limit(), 16 * MIB);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = HttpOptions::from_vars(|name| {
            (name == "MICRO_HTTP_MAX_BODY").then(|| "lots".to_string())
        })
        .err()
        .unwrap_or_default();
        assert_eq!(e.code, 400);
        assert!(e.detail.contains("MICRO_HTTP_MAX_BODY=\"lots\""), "{e}");
        assert_eq!(parse_duration("5h"), None);
        assert_eq!(parse_size("3 KiB"), Some(3 * KIB));
    }
}
