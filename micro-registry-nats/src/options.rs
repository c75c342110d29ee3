//! [`NatsRegistryOptions`]: where NATS is, which subjects Go Micro's registry uses, and how long
//! and how much a lookup may collect; in code or from `MICRO_*` environment variables.

use std::fmt;
use std::time::Duration;

use micro_core::{env, Result};

use crate::ERROR_ID;

/// Comma-separated servers (`host:port`, `nats://host:port`).
pub const ADDRESS_ENV: &str = "MICRO_REGISTRY_ADDRESS";
/// The subject lookups are broadcast on.
pub const QUERY_SUBJECT_ENV: &str = "MICRO_NATS_QUERY_SUBJECT";
/// The subject registrations and deregistrations are announced on.
pub const WATCH_SUBJECT_ENV: &str = "MICRO_NATS_WATCH_SUBJECT";
/// How long a lookup collects answers (`100ms`, `1s`).
pub const QUERY_TIMEOUT_ENV: &str = "MICRO_NATS_QUERY_TIMEOUT";
/// How many answers one lookup reads at most.
pub const MAX_ANSWERS_ENV: &str = "MICRO_NATS_MAX_ANSWERS";
/// How large one answer, query or watch message may be (`1MiB`).
pub const MAX_MESSAGE_BYTES_ENV: &str = "MICRO_NATS_MAX_MESSAGE_BYTES";
/// How long connecting may take.
pub const CONNECT_TIMEOUT_ENV: &str = "MICRO_NATS_CONNECT_TIMEOUT";
/// A token for token authentication (shared with the NATS broker).
pub const TOKEN_ENV: &str = "MICRO_NATS_TOKEN";
/// A user name for user/password authentication (shared with the NATS broker).
pub const USER_ENV: &str = "MICRO_NATS_USER";
/// The password of [`USER_ENV`].
pub const PASSWORD_ENV: &str = "MICRO_NATS_PASSWORD";

/// The server used when none is configured.
pub const DEFAULT_SERVER: &str = "127.0.0.1:4222";
/// Go Micro v4's query subject (`go-micro/plugins/v4/registry/nats`). Go Micro v5's built-in
/// NATS registry uses `micro.nats.query`.
pub const DEFAULT_QUERY_SUBJECT: &str = "micro.registry.nats.query";
/// Go Micro v4's watch subject. Go Micro v5's built-in NATS registry uses `micro.nats.watch`.
pub const DEFAULT_WATCH_SUBJECT: &str = "micro.registry.nats.watch";
/// Go Micro's lookup wait: every node that has the service answers within it.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_millis(100);

/// How a [`NatsRegistry`](crate::NatsRegistry) reaches NATS and talks with its peers.
///
/// `Default` is a local NATS on `127.0.0.1:4222` with Go Micro v4's subjects and lookup wait;
/// [`from_env`](Self::from_env) reads the `MICRO_*` variables. `Debug` hides the token and the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsRegistryOptions {
    /// Server URLs: `host:port` or `nats://host:port`; async-nats connects to one and fails
    /// over to the others.
    pub servers: Vec<String>,
    /// The subject lookups are broadcast on; every registry with services answers there.
    pub query_subject: String,
    /// The subject registrations and deregistrations are announced on.
    pub watch_subject: String,
    /// How long a lookup collects answers. Peers answer at once, but a lookup cannot know how
    /// many there are, so it always waits this long. Default 100 ms, as Go Micro.
    pub query_timeout: Duration,
    /// How many answers one lookup reads at most; the rest are dropped. Default 4096.
    pub max_answers: usize,
    /// How large one answer, query or watch message may be; larger ones are dropped. Default
    /// 1 MiB (NATS's own default payload limit).
    pub max_message_bytes: usize,
    /// How long connecting may take. Default 5 s.
    pub connect_timeout: Duration,
    /// A token for token authentication.
    pub token: Option<String>,
    /// A user for user/password authentication.
    pub user: Option<String>,
    /// The password of `user`.
    pub password: Option<String>,
}

impl Default for NatsRegistryOptions {
    fn default() -> Self {
        NatsRegistryOptions {
            servers: vec![DEFAULT_SERVER.to_string()],
            query_subject: DEFAULT_QUERY_SUBJECT.to_string(),
            watch_subject: DEFAULT_WATCH_SUBJECT.to_string(),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_answers: 4096,
            max_message_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            token: None,
            user: None,
            password: None,
        }
    }
}

impl fmt::Debug for NatsRegistryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsRegistryOptions")
            .field("servers", &self.servers)
            .field("query_subject", &self.query_subject)
            .field("watch_subject", &self.watch_subject)
            .field("query_timeout", &self.query_timeout)
            .field("max_answers", &self.max_answers)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl NatsRegistryOptions {
    /// The defaults with the servers of `address` (comma-separated); an empty address keeps
    /// `127.0.0.1:4222`.
    pub fn from_address(address: &str) -> Self {
        NatsRegistryOptions::default().with_address(address)
    }

    /// These options with the servers of `address` (comma-separated); an empty address
    /// changes nothing.
    pub fn with_address(mut self, address: &str) -> Self {
        let servers: Vec<String> = address
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !servers.is_empty() {
            self.servers = servers;
        }
        self
    }

    /// These options with other query and watch subjects (Go Micro v5's built-in registry:
    /// `micro.nats.query` and `micro.nats.watch`).
    pub fn with_subjects(mut self, query: impl Into<String>, watch: impl Into<String>) -> Self {
        self.query_subject = query.into();
        self.watch_subject = watch.into();
        self
    }

    /// These options with another lookup wait.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// The options the environment describes, over the defaults:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `MICRO_REGISTRY_ADDRESS` | comma-separated servers, `127.0.0.1:4222` by default |
    /// | `MICRO_NATS_QUERY_SUBJECT` | lookup subject, `micro.registry.nats.query` |
    /// | `MICRO_NATS_WATCH_SUBJECT` | announcement subject, `micro.registry.nats.watch` |
    /// | `MICRO_NATS_QUERY_TIMEOUT` | how long a lookup collects answers, `100ms` |
    /// | `MICRO_NATS_MAX_ANSWERS` | answers one lookup reads at most, `4096` |
    /// | `MICRO_NATS_MAX_MESSAGE_BYTES` | largest answer or announcement read, `1MiB` |
    /// | `MICRO_NATS_CONNECT_TIMEOUT` | how long connecting may take, `5s` |
    /// | `MICRO_NATS_TOKEN`, `MICRO_NATS_USER`, `MICRO_NATS_PASSWORD` | authentication |
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
        let duration = |var: &str, v: &str| {
            env::parse_duration(v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| env::invalid_from(ERROR_ID, var, v, "a duration (like 100ms or 1s)"))
        };
        let count = |var: &str, v: &str, what: &str| {
            env::parse_size(v)
                .filter(|n| *n > 0)
                .ok_or_else(|| env::invalid_from(ERROR_ID, var, v, what))
        };
        let mut opts = NatsRegistryOptions::default();
        if let Some(address) = get(ADDRESS_ENV) {
            opts = opts.with_address(&address);
        }
        if let Some(subject) = get(QUERY_SUBJECT_ENV) {
            opts.query_subject = subject;
        }
        if let Some(subject) = get(WATCH_SUBJECT_ENV) {
            opts.watch_subject = subject;
        }
        if let Some(v) = get(QUERY_TIMEOUT_ENV) {
            opts.query_timeout = duration(QUERY_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(CONNECT_TIMEOUT_ENV) {
            opts.connect_timeout = duration(CONNECT_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(MAX_ANSWERS_ENV) {
            opts.max_answers = count(MAX_ANSWERS_ENV, &v, "a positive count (like 4096)")?;
        }
        if let Some(v) = get(MAX_MESSAGE_BYTES_ENV) {
            opts.max_message_bytes =
                count(MAX_MESSAGE_BYTES_ENV, &v, "a positive size (like 1MiB)")?;
        }
        opts.token = get(TOKEN_ENV);
        opts.user = get(USER_ENV);
        opts.password = get(PASSWORD_ENV);
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<NatsRegistryOptions> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NatsRegistryOptions::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_go_micro_v4() {
        let opts = from(&[]).expect("defaults");
        assert_eq!(opts, NatsRegistryOptions::default());
        assert_eq!(opts.query_subject, "micro.registry.nats.query");
        assert_eq!(opts.watch_subject, "micro.registry.nats.watch");
        assert_eq!(opts.query_timeout, Duration::from_millis(100));
    }

    #[test]
    fn reads_every_variable() {
        let opts = from(&[
            (ADDRESS_ENV, "127.0.0.1:4222, nats://127.0.0.1:4333"),
            (QUERY_SUBJECT_ENV, "micro.nats.query"),
            (WATCH_SUBJECT_ENV, "micro.nats.watch"),
            (QUERY_TIMEOUT_ENV, "250ms"),
            (MAX_ANSWERS_ENV, "10"),
            (MAX_MESSAGE_BYTES_ENV, "64KiB"),
            (CONNECT_TIMEOUT_ENV, "2s"),
            (USER_ENV, "u"),
            (PASSWORD_ENV, "secret"),
        ])
        .expect("valid");
        assert_eq!(opts.servers, ["127.0.0.1:4222", "nats://127.0.0.1:4333"]);
        assert_eq!(opts.query_subject, "micro.nats.query");
        assert_eq!(opts.watch_subject, "micro.nats.watch");
        assert_eq!(opts.query_timeout, Duration::from_millis(250));
        assert_eq!(opts.max_answers, 10);
        assert_eq!(opts.max_message_bytes, 64 << 10);
        assert_eq!(opts.connect_timeout, Duration::from_secs(2));
        assert!(!format!("{opts:?}").contains("secret"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            (QUERY_TIMEOUT_ENV, "soon"),
            (QUERY_TIMEOUT_ENV, "0"),
            (MAX_ANSWERS_ENV, "0"),
            (MAX_MESSAGE_BYTES_ENV, "lots"),
        ] {
            let err = from(&[(var, value)]).expect_err("invalid");
            assert!(err.detail.contains(var), "{}", err.detail);
        }
    }
}
