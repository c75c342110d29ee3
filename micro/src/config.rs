//! Configuration from environment variables and command-line flags, with Go Micro's names.
//!
//! | env | flag | meaning |
//! |---|---|---|
//! | `MICRO_SERVER_NAME` | `--server_name` | the service name |
//! | `MICRO_SERVER_VERSION` | `--server_version` | the service version |
//! | `MICRO_SERVER_ADDRESS` | `--server_address` | where to listen (`127.0.0.1:0` by default) |
//! | `MICRO_SERVER_ADVERTISE` | `--server_advertise` | the address to register instead |
//! | `MICRO_REGISTRY` | `--registry` | `mdns` (default), `memory`, `etcd`, ... |
//! | `MICRO_REGISTRY_ADDRESS` | `--registry_address` | the registry's address(es), comma separated |
//! | `MICRO_BROKER` | `--broker` | `memory`, `http`, `kafka`, ... |
//! | `MICRO_BROKER_ADDRESS` | `--broker_address` | the broker's address(es) |
//! | `MICRO_TRANSPORT` | `--transport` | `http` (default), `grpc` |
//! | `MICRO_SELECTOR` | `--selector` | the registry selector's strategy, `random` (default), `roundrobin`, `p2c`; or `static` (fixed addresses: `MICRO_SELECTOR_ADDRESSES`, else `{service}[.MICRO_SELECTOR_DOMAIN]:MICRO_SELECTOR_PORT`), `dns` (feature `dns`: SRV, then A/AAAA records of the name) |
//! | `MICRO_CLIENT_RETRIES` | `--client_retries` | retries after a failed call (1) |
//! | `MICRO_CLIENT_RETRY` | `--client_retry` | what is retried: `unreached` (default: only calls no handler can have run) or `gomicro` (timeouts and server errors too) |
//! | `MICRO_CLIENT_REQUEST_TIMEOUT` | `--client_request_timeout` | a call's deadline (`5s`) |
//! | `MICRO_REGISTER_TTL` | `--register_ttl` | registration lifetime, seconds or a duration (90) |
//! | `MICRO_REGISTER_INTERVAL` | `--register_interval` | re-registration period (30) |
//! | `MICRO_SERVER_MAX_CALLS` | `--server_max_calls` | calls in flight at once; more get a fast `503` (10000) |
//! | `MICRO_SERVER_MAX_REQUEST_BYTES` | `--server_max_request_bytes` | request bytes held at once by the calls in flight; past it a `503` (`256MiB`) |
//!
//! Flags take `--name value` or `--name=value`, and `-` may stand for `_`. Flags win over the
//! environment, and both win over values set in code, as in Go Micro. Other arguments are left
//! alone for the program to read.

use std::time::Duration;

use micro_core::{env, Error, Result};

/// Settings read from the environment and flags; `None` where nothing was said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `MICRO_SERVER_NAME`.
    pub server_name: Option<String>,
    /// `MICRO_SERVER_VERSION`.
    pub server_version: Option<String>,
    /// `MICRO_SERVER_ADDRESS`.
    pub server_address: Option<String>,
    /// `MICRO_SERVER_ADVERTISE`.
    pub server_advertise: Option<String>,
    /// `MICRO_REGISTRY`.
    pub registry: Option<String>,
    /// `MICRO_REGISTRY_ADDRESS`.
    pub registry_address: Option<String>,
    /// `MICRO_BROKER`.
    pub broker: Option<String>,
    /// `MICRO_BROKER_ADDRESS`.
    pub broker_address: Option<String>,
    /// `MICRO_TRANSPORT`.
    pub transport: Option<String>,
    /// `MICRO_SELECTOR`.
    pub selector: Option<String>,
    /// `MICRO_CLIENT_RETRIES`.
    pub client_retries: Option<u32>,
    /// `MICRO_CLIENT_RETRY`.
    pub client_retry: Option<micro_core::rpc::RetryPolicy>,
    /// `MICRO_CLIENT_REQUEST_TIMEOUT`.
    pub client_request_timeout: Option<Duration>,
    /// `MICRO_REGISTER_TTL`.
    pub register_ttl: Option<Duration>,
    /// `MICRO_REGISTER_INTERVAL`.
    pub register_interval: Option<Duration>,
    /// `MICRO_SERVER_MAX_CALLS`.
    pub server_max_calls: Option<usize>,
    /// `MICRO_SERVER_MAX_REQUEST_BYTES`.
    pub server_max_request_bytes: Option<usize>,
}

/// The settings: (flag name, env name).
pub(crate) const KEYS: &[(&str, &str)] = &[
    ("server_name", "MICRO_SERVER_NAME"),
    ("server_version", "MICRO_SERVER_VERSION"),
    ("server_address", "MICRO_SERVER_ADDRESS"),
    ("server_advertise", "MICRO_SERVER_ADVERTISE"),
    ("registry", "MICRO_REGISTRY"),
    ("registry_address", "MICRO_REGISTRY_ADDRESS"),
    ("broker", "MICRO_BROKER"),
    ("broker_address", "MICRO_BROKER_ADDRESS"),
    ("transport", "MICRO_TRANSPORT"),
    ("selector", "MICRO_SELECTOR"),
    ("client_retries", "MICRO_CLIENT_RETRIES"),
    ("client_retry", "MICRO_CLIENT_RETRY"),
    ("client_request_timeout", "MICRO_CLIENT_REQUEST_TIMEOUT"),
    ("register_ttl", "MICRO_REGISTER_TTL"),
    ("register_interval", "MICRO_REGISTER_INTERVAL"),
    ("server_max_calls", "MICRO_SERVER_MAX_CALLS"),
    ("server_max_request_bytes", "MICRO_SERVER_MAX_REQUEST_BYTES"),
];

impl Config {
    /// The environment, then this process's flags over it.
    pub fn load() -> Result<Self> {
        let env = Self::from_env()?;
        let (flags, _) = Self::from_args(std::env::args().skip(1))?;
        Ok(env.merge(flags))
    }

    /// Reads the `MICRO_*` environment variables.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok(), true)
    }

    /// Reads flags, returning the settings and the arguments that are not Micro's.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<(Self, Vec<String>)> {
        let mut found: Vec<(String, String)> = Vec::new();
        let mut rest = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                rest.push(arg);
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.replace('-', "_"), Some(v.to_string())),
                None => (flag.replace('-', "_"), None),
            };
            if !KEYS.iter().any(|(k, _)| *k == name) {
                rest.push(arg);
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| {
                    Error::configuration("micro.config", format!("flag --{name} needs a value"))
                })?,
            };
            found.push((name, value));
        }
        let config = Self::from_lookup(
            |key| {
                found
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            },
            false,
        )?;
        Ok((config, rest))
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>, env: bool) -> Result<Self> {
        let read = |flag: &str| -> Option<(String, String)> {
            let (f, e) = KEYS.iter().find(|(f, _)| *f == flag)?;
            let key = if env { *e } else { *f };
            let label = if env { e.to_string() } else { format!("--{f}") };
            get(key).filter(|v| !v.is_empty()).map(|v| (label, v))
        };
        let text = |flag: &str| read(flag).map(|(_, v)| v);
        let duration = |flag: &str| -> Result<Option<Duration>> {
            read(flag)
                .map(|(label, v)| {
                    parse_duration(&v).ok_or_else(|| {
                        env::invalid(&label, &v, "a duration (like 90, 5s or 500ms)")
                    })
                })
                .transpose()
        };
        let client_retries = read("client_retries")
            .map(|(label, v)| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| env::invalid(&label, &v, "a whole number"))
            })
            .transpose()?;
        let server_max_calls = read("server_max_calls")
            .map(|(label, v)| {
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| env::invalid(&label, &v, "a whole number above 0"))
            })
            .transpose()?;
        let server_max_request_bytes = read("server_max_request_bytes")
            .map(|(label, v)| {
                env::parse_size(&v)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| env::invalid(&label, &v, "a size above 0, like 256MiB"))
            })
            .transpose()?;
        let client_retry = read("client_retry")
            .map(|(label, v)| {
                micro_core::rpc::RetryPolicy::parse(&v)
                    .ok_or_else(|| env::invalid(&label, &v, "unreached or gomicro"))
            })
            .transpose()?;
        Ok(Config {
            server_name: text("server_name"),
            server_version: text("server_version"),
            server_address: text("server_address"),
            server_advertise: text("server_advertise"),
            registry: text("registry"),
            registry_address: text("registry_address"),
            broker: text("broker"),
            broker_address: text("broker_address"),
            transport: text("transport"),
            selector: text("selector"),
            client_retries,
            client_retry,
            client_request_timeout: duration("client_request_timeout")?,
            register_ttl: duration("register_ttl")?,
            register_interval: duration("register_interval")?,
            server_max_calls,
            server_max_request_bytes,
        })
    }

    /// These settings with `over`'s set values replacing them.
    pub fn merge(self, over: Config) -> Config {
        Config {
            server_name: over.server_name.or(self.server_name),
            server_version: over.server_version.or(self.server_version),
            server_address: over.server_address.or(self.server_address),
            server_advertise: over.server_advertise.or(self.server_advertise),
            registry: over.registry.or(self.registry),
            registry_address: over.registry_address.or(self.registry_address),
            broker: over.broker.or(self.broker),
            broker_address: over.broker_address.or(self.broker_address),
            transport: over.transport.or(self.transport),
            selector: over.selector.or(self.selector),
            client_retries: over.client_retries.or(self.client_retries),
            client_retry: over.client_retry.or(self.client_retry),
            client_request_timeout: over.client_request_timeout.or(self.client_request_timeout),
            register_ttl: over.register_ttl.or(self.register_ttl),
            register_interval: over.register_interval.or(self.register_interval),
            server_max_calls: over.server_max_calls.or(self.server_max_calls),
            server_max_request_bytes: over
                .server_max_request_bytes
                .or(self.server_max_request_bytes),
        }
    }
}

// The reader of `MICRO_CLIENT_REQUEST_TIMEOUT` and the like, here too for programs that read
// flags of their own (the pubsub example's `--interval`).
pub use micro_core::env::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_flags_in_both_forms_and_leaves_the_rest() {
        let (c, rest) = Config::from_args(args(&[
            "--registry",
            "memory",
            "--server_address=127.0.0.1:9090",
            "--name",
            "John",
            "--client-retries",
            "3",
            "--client_request_timeout=250ms",
            "--register_ttl",
            "10",
            "--client_retry=gomicro",
        ]))
        .expect("valid flags");
        assert_eq!(c.client_retry, Some(micro_core::rpc::RetryPolicy::GoMicro));
        assert_eq!(c.registry.as_deref(), Some("memory"));
        assert_eq!(c.server_address.as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(c.client_retries, Some(3));
        assert_eq!(c.client_request_timeout, Some(Duration::from_millis(250)));
        assert_eq!(c.register_ttl, Some(Duration::from_secs(10)));
        assert_eq!(rest, args(&["--name", "John"]));
    }

    #[test]
    fn reads_the_environment_names() {
        let env = |k: &str| match k {
            "MICRO_REGISTRY" => Some("etcd".to_string()),
            "MICRO_REGISTRY_ADDRESS" => Some("127.0.0.1:2379".to_string()),
            "MICRO_REGISTER_INTERVAL" => Some("15".to_string()),
            _ => None,
        };
        let c = Config::from_lookup(env, true).expect("valid env");
        assert_eq!(c.registry.as_deref(), Some("etcd"));
        assert_eq!(c.registry_address.as_deref(), Some("127.0.0.1:2379"));
        assert_eq!(c.register_interval, Some(Duration::from_secs(15)));
    }

    #[test]
    fn flags_win_over_env() {
        let env = Config {
            registry: Some("mdns".into()),
            broker: Some("memory".into()),
            ..Default::default()
        };
        let flags = Config {
            registry: Some("etcd".into()),
            ..Default::default()
        };
        let c = env.merge(flags);
        assert_eq!(c.registry.as_deref(), Some("etcd"));
        assert_eq!(c.broker.as_deref(), Some("memory"));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = Config::from_args(args(&["--client_retries", "many"])).expect_err("not a number");
        assert!(err.detail.contains("--client_retries"), "{}", err.detail);
        let err = Config::from_args(args(&["--client_retry", "always"])).expect_err("no policy");
        assert!(
            err.detail.contains("unreached or gomicro"),
            "{}",
            err.detail
        );
        let err = Config::from_args(args(&["--register_ttl", "soon"])).expect_err("not a duration");
        assert!(err.detail.contains("--register_ttl"), "{}", err.detail);
        let err = Config::from_args(args(&["--registry"])).expect_err("no value");
        assert!(err.detail.contains("needs a value"), "{}", err.detail);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}
