//! [`GrpcOptions`]: limits, compression, keepalive, timeouts and TLS, from code or from the
//! environment.

use std::time::Duration;

use micro_core::{env, Result};

use crate::{TlsOptions, ID};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The settings of [`GrpcTransport`](crate::GrpcTransport), for both its client and its server
/// side.
///
/// `GrpcOptions::default()` suits most services; [`GrpcOptions::from_env`] reads the
/// `MICRO_GRPC_*` variables named on each field and `MICRO_TLS_*` for [`tls`](Self::tls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcOptions {
    /// The largest message this side accepts, request or reply; a larger one fails its call
    /// with `RESOURCE_EXHAUSTED`. `MICRO_GRPC_MAX_RECV_MSG_SIZE` (or `MICRO_GRPC_MAX_MSG_SIZE`
    /// for both limits), default 4 MiB, gRPC's own default.
    pub max_recv_message_bytes: usize,
    /// The largest message this side sends; a larger one is refused with `RESOURCE_EXHAUSTED`
    /// before it leaves. `MICRO_GRPC_MAX_SEND_MSG_SIZE` (or `MICRO_GRPC_MAX_MSG_SIZE`),
    /// default 4 MiB.
    pub max_send_message_bytes: usize,
    /// Whether to compress what this side sends with gzip: requests always, replies when the
    /// caller accepts gzip. Gzip is always accepted on receipt. Off by default, because a
    /// server that does not accept gzip (a tonic server without it enabled, say) rejects
    /// compressed requests. `MICRO_GRPC_GZIP` (`true`/`false`).
    pub gzip: bool,
    /// How often an HTTP/2 ping checks that the peer is still there: the server pings its
    /// clients, the client pings servers while calls are in flight. `None` turns pings off.
    /// `MICRO_GRPC_KEEPALIVE_INTERVAL` (`0` for off), default 30 s. Against Go servers with
    /// gRPC's default enforcement (pings at most every 5 minutes without data), raise it.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    /// `MICRO_GRPC_KEEPALIVE_TIMEOUT`, default 20 s.
    pub keepalive_timeout: Duration,
    /// The longest a connection (TCP and TLS handshake) may take; a dial's own
    /// `connect_timeout` can only shorten it. `MICRO_GRPC_CONNECT_TIMEOUT`, default 5 s.
    pub connect_timeout: Duration,
    /// Whether the server answers gRPC server reflection (`grpc.reflection.v1` and
    /// `v1alpha`) with the file descriptor sets of its handlers, so that grpcurl and other
    /// tools can list and call its services. `MICRO_GRPC_REFLECTION` (`true`/`false`),
    /// default on: the registry already publishes every endpoint and its fields.
    pub reflection: bool,
    /// The most connections the server holds open at once; past it a new connection is
    /// closed at once while those open keep being served. `MICRO_GRPC_MAX_CONNECTIONS`,
    /// default 16 384 (mind `ulimit -n`).
    pub max_connections: usize,
    /// How long a server connection may go without a call in flight before it is closed
    /// (with a `GOAWAY`, after which gRPC clients reconnect on their next call), as gRPC's
    /// `MaxConnectionIdle`. `MICRO_GRPC_IDLE_TIMEOUT`, default 5 minutes.
    pub idle_timeout: Duration,
    /// How long one reply may wait to be taken by a caller that stopped reading (its
    /// flow-control window full) before the call fails; once a connection closes, how long its
    /// calls get to finish before it is cut. `MICRO_GRPC_WRITE_TIMEOUT`, default 30 s.
    pub write_timeout: Duration,
    /// TLS for both sides, or `None` for plaintext HTTP/2 (h2c). `MICRO_TLS_CERT`,
    /// `MICRO_TLS_KEY`, `MICRO_TLS_CA`: see [`TlsOptions`].
    pub tls: Option<TlsOptions>,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            max_recv_message_bytes: 4 * MIB,
            max_send_message_bytes: 4 * MIB,
            gzip: false,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            reflection: true,
            max_connections: 16_384,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

impl GrpcOptions {
    /// The defaults, overridden by whichever `MICRO_GRPC_*` variables are set, with TLS when
    /// any `MICRO_TLS_*` variable is set.
    ///
    /// Sizes are bytes, optionally with a `K`/`KiB`, `M`/`MiB` or `G`/`GiB` suffix (`16MiB`), as
    /// [`micro_core::env::parse_size`] reads them; durations are seconds, or a number with `ms`,
    /// `s` or `m` (`500ms`, `30s`, `5m`, also `1.5s`, `us`, `ns`:
    /// [`micro_core::env::parse_duration`] without hours); switches are
    /// [`micro_core::env::parse_bool`]'s. A value that does not parse, or a PEM file that cannot
    /// be read or used, is a `400` naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut o = GrpcOptions::default();
        let size = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| {
                    env::parse_size(&v).ok_or_else(|| {
                        env::invalid_from(
                            ID,
                            name,
                            &v,
                            "a size in bytes, e.g. 4194304, 512KiB or 16MiB",
                        )
                    })
                })
                .transpose()
        };
        if let Some(both) = size("MICRO_GRPC_MAX_MSG_SIZE")? {
            o.max_recv_message_bytes = both;
            o.max_send_message_bytes = both;
        }
        if let Some(n) = size("MICRO_GRPC_MAX_RECV_MSG_SIZE")? {
            o.max_recv_message_bytes = n;
        }
        if let Some(n) = size("MICRO_GRPC_MAX_SEND_MSG_SIZE")? {
            o.max_send_message_bytes = n;
        }
        if let Some(n) = size("MICRO_GRPC_MAX_CONNECTIONS")? {
            o.max_connections = n.max(1);
        }
        let switch = |name: &str| -> Result<Option<bool>> {
            var(name)
                .map(|v| {
                    env::parse_bool(&v)
                        .ok_or_else(|| env::invalid_from(ID, name, &v, "true or false"))
                })
                .transpose()
        };
        if let Some(on) = switch("MICRO_GRPC_GZIP")? {
            o.gzip = on;
        }
        if let Some(on) = switch("MICRO_GRPC_REFLECTION")? {
            o.reflection = on;
        }
        let duration = |name: &str| -> Result<Option<Duration>> {
            var(name)
                .map(|v| {
                    parse_duration(&v).ok_or_else(|| {
                        env::invalid_from(
                            ID,
                            name,
                            &v,
                            "a duration, e.g. 20 (seconds), 500ms, 30s or 5m",
                        )
                    })
                })
                .transpose()
        };
        if let Some(d) = duration("MICRO_GRPC_KEEPALIVE_INTERVAL")? {
            o.keepalive_interval = (!d.is_zero()).then_some(d);
        }
        if let Some(d) = duration("MICRO_GRPC_KEEPALIVE_TIMEOUT")? {
            o.keepalive_timeout = d;
        }
        if let Some(d) = duration("MICRO_GRPC_CONNECT_TIMEOUT")? {
            o.connect_timeout = d;
        }
        if let Some(d) = duration("MICRO_GRPC_IDLE_TIMEOUT")? {
            o.idle_timeout = d;
        }
        if let Some(d) = duration("MICRO_GRPC_WRITE_TIMEOUT")? {
            o.write_timeout = d;
        }
        o.tls = TlsOptions::from_vars(&var)?;
        Ok(o)
    }

    /// These options with TLS on both sides.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// These options with both message size limits set to `bytes`.
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_recv_message_bytes = bytes;
        self.max_send_message_bytes = bytes;
        self
    }

    /// These options with gzip compression of what this side sends on or off.
    pub fn with_gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
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

    fn from(vars: &[(&str, &str)]) -> Result<GrpcOptions> {
        GrpcOptions::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn nothing_set_gives_defaults() {
        let o = from(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o, GrpcOptions::default());
        assert_eq!(o.max_recv_message_bytes, 4 * MIB);
        assert!(o.tls.is_none());
    }

    #[test]
    fn env_overrides_defaults() {
        let o = from(&[
            ("MICRO_GRPC_MAX_MSG_SIZE", "16MiB"),
            ("MICRO_GRPC_MAX_SEND_MSG_SIZE", "512KiB"),
            ("MICRO_GRPC_GZIP", "true"),
            ("MICRO_GRPC_KEEPALIVE_INTERVAL", "0"),
            ("MICRO_GRPC_KEEPALIVE_TIMEOUT", "500ms"),
            ("MICRO_GRPC_CONNECT_TIMEOUT", "2m"),
            ("MICRO_GRPC_REFLECTION", "false"),
            ("MICRO_GRPC_MAX_CONNECTIONS", "10"),
            ("MICRO_GRPC_IDLE_TIMEOUT", "1m"),
            ("MICRO_GRPC_WRITE_TIMEOUT", "3s"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.max_recv_message_bytes, 16 * MIB);
        assert_eq!(o.max_send_message_bytes, 512 * KIB);
        assert!(o.gzip);
        assert_eq!(o.keepalive_interval, None);
        assert_eq!(o.keepalive_timeout, Duration::from_millis(500));
        assert_eq!(o.connect_timeout, Duration::from_secs(120));
        assert!(!o.reflection);
        assert_eq!(o.max_connections, 10);
        assert_eq!(o.idle_timeout, Duration::from_secs(60));
        assert_eq!(o.write_timeout, Duration::from_secs(3));
        let o = from(&[
            ("MICRO_GRPC_MAX_RECV_MSG_SIZE", "1024"),
            ("MICRO_GRPC_GZIP", "off"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (o.max_recv_message_bytes, o.max_send_message_bytes),
            (1024, 4 * MIB)
        );
        assert!(!o.gzip);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("MICRO_GRPC_MAX_MSG_SIZE", "lots"),
            ("MICRO_GRPC_GZIP", "maybe"),
            ("MICRO_GRPC_REFLECTION", "perhaps"),
            ("MICRO_GRPC_KEEPALIVE_INTERVAL", "5h"),
            ("MICRO_TLS_CA", "/nonexistent/ca.pem"),
        ] {
            let e = from(&[(name, value)]).err().unwrap_or_default();
            assert_eq!(e.code, 400, "{name}");
            assert!(e.detail.contains(name), "{e}");
        }
    }
}
