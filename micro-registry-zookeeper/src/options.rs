//! [`ZookeeperOptions`]: where ZooKeeper is, the path prefix, timeouts and the bounds on what
//! is read; in code or from `MICRO_*` environment variables.

use std::time::Duration;

use micro_core::{env, Result};

use crate::ERROR_ID;

/// Comma-separated servers, `host:port` (Go Micro's name).
pub const ADDRESS_ENV: &str = "MICRO_REGISTRY_ADDRESS";
/// The path every service lives under.
pub const PREFIX_ENV: &str = "MICRO_ZOOKEEPER_PREFIX";
/// The session timeout asked of ZooKeeper: how long after this process is gone (or cut off)
/// ZooKeeper removes its nodes.
pub const SESSION_TIMEOUT_ENV: &str = "MICRO_ZOOKEEPER_SESSION_TIMEOUT";
/// How long one request (connecting included) may take.
pub const REQUEST_TIMEOUT_ENV: &str = "MICRO_ZOOKEEPER_REQUEST_TIMEOUT";
/// How many nodes of one service (and how many services) one lookup reads at most.
pub const MAX_NODES_ENV: &str = "MICRO_ZOOKEEPER_MAX_NODES";
/// How large one node's data may be.
pub const MAX_NODE_BYTES_ENV: &str = "MICRO_ZOOKEEPER_MAX_NODE_BYTES";

/// The server used when none is configured (Go Micro's default too).
pub const DEFAULT_SERVER: &str = "127.0.0.1:2181";
/// Go Micro's path prefix (`go-micro/plugins/v4/registry/zookeeper`).
pub const DEFAULT_PREFIX: &str = "/micro-registry";

/// How a [`ZookeeperRegistry`](crate::ZookeeperRegistry) reaches ZooKeeper.
///
/// `Default` is a local ZooKeeper on `127.0.0.1:2181` with Go Micro's prefix;
/// [`from_env`](Self::from_env) reads the `MICRO_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZookeeperOptions {
    /// The ensemble: `host:port` each.
    pub servers: Vec<String>,
    /// The path every service lives under, `/micro-registry` (Go Micro's).
    pub prefix: String,
    /// The session timeout asked of ZooKeeper (the server bounds it by its own tick time):
    /// a process that dies loses its nodes this long after. Default 10 s.
    pub session_timeout: Duration,
    /// How long one request may take, connecting included. Default 5 s.
    pub request_timeout: Duration,
    /// How many services a listing, and how many nodes of one service a lookup, reads at
    /// most. Default 10 000.
    pub max_nodes: usize,
    /// How large one node's data may be; larger nodes are skipped. Default 1 MiB (ZooKeeper's
    /// own limit, `jute.maxbuffer`).
    pub max_node_bytes: usize,
}

impl Default for ZookeeperOptions {
    fn default() -> Self {
        ZookeeperOptions {
            servers: vec![DEFAULT_SERVER.to_string()],
            prefix: DEFAULT_PREFIX.to_string(),
            session_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            max_nodes: 10_000,
            max_node_bytes: 1 << 20,
        }
    }
}

impl ZookeeperOptions {
    /// The defaults with the servers of `address` (comma-separated); an empty address keeps
    /// `127.0.0.1:2181`.
    pub fn from_address(address: &str) -> Self {
        ZookeeperOptions::default().with_address(address)
    }

    /// These options with the servers of `address`; an empty address changes nothing.
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

    /// These options with another path prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The options the environment describes, over the defaults:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `MICRO_REGISTRY_ADDRESS` | comma-separated servers, `127.0.0.1:2181` by default |
    /// | `MICRO_ZOOKEEPER_PREFIX` | the path prefix, `/micro-registry` |
    /// | `MICRO_ZOOKEEPER_SESSION_TIMEOUT` | the session timeout, `10s` |
    /// | `MICRO_ZOOKEEPER_REQUEST_TIMEOUT` | the per-request timeout, `5s` |
    /// | `MICRO_ZOOKEEPER_MAX_NODES` | services listed / nodes of a service read at most, `10000` |
    /// | `MICRO_ZOOKEEPER_MAX_NODE_BYTES` | the largest node data read, `1MiB` |
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
                .ok_or_else(|| env::invalid_from(ERROR_ID, var, v, "a duration (like 10s)"))
        };
        let size = |var: &str, v: &str, what: &str| {
            env::parse_size(v)
                .filter(|n| *n > 0)
                .ok_or_else(|| env::invalid_from(ERROR_ID, var, v, what))
        };
        let mut opts = ZookeeperOptions::default();
        if let Some(address) = get(ADDRESS_ENV) {
            opts = opts.with_address(&address);
        }
        if let Some(prefix) = get(PREFIX_ENV) {
            if !prefix.starts_with('/') || prefix.len() < 2 {
                return Err(env::invalid_from(
                    ERROR_ID,
                    PREFIX_ENV,
                    &prefix,
                    "an absolute path below the root (like /micro-registry)",
                ));
            }
            opts.prefix = prefix;
        }
        if let Some(v) = get(SESSION_TIMEOUT_ENV) {
            opts.session_timeout = duration(SESSION_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(REQUEST_TIMEOUT_ENV) {
            opts.request_timeout = duration(REQUEST_TIMEOUT_ENV, &v)?;
        }
        if let Some(v) = get(MAX_NODES_ENV) {
            opts.max_nodes = size(MAX_NODES_ENV, &v, "a positive count (like 10000)")?;
        }
        if let Some(v) = get(MAX_NODE_BYTES_ENV) {
            opts.max_node_bytes = size(MAX_NODE_BYTES_ENV, &v, "a positive size (like 1MiB)")?;
        }
        Ok(opts)
    }

    /// The prefix without a trailing `/` (`/micro-registry`).
    pub(crate) fn normalized_prefix(&self) -> String {
        let p = self.prefix.trim_end_matches('/');
        if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<ZookeeperOptions> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ZookeeperOptions::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_go_micro_s() {
        let opts = from(&[]).expect("defaults");
        assert_eq!(opts, ZookeeperOptions::default());
        assert_eq!(opts.normalized_prefix(), "/micro-registry");
        assert_eq!(opts.servers, ["127.0.0.1:2181"]);
    }

    #[test]
    fn reads_every_variable() {
        let opts = from(&[
            (ADDRESS_ENV, "127.0.0.1:2181, 127.0.0.1:2182"),
            (PREFIX_ENV, "/elsewhere/"),
            (SESSION_TIMEOUT_ENV, "4s"),
            (REQUEST_TIMEOUT_ENV, "1500ms"),
            (MAX_NODES_ENV, "100"),
            (MAX_NODE_BYTES_ENV, "64K"),
        ])
        .expect("valid");
        assert_eq!(opts.servers, ["127.0.0.1:2181", "127.0.0.1:2182"]);
        assert_eq!(opts.normalized_prefix(), "/elsewhere");
        assert_eq!(opts.session_timeout, Duration::from_secs(4));
        assert_eq!(opts.request_timeout, Duration::from_millis(1500));
        assert_eq!(opts.max_nodes, 100);
        assert_eq!(opts.max_node_bytes, 64 << 10);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            (PREFIX_ENV, "relative"),
            (PREFIX_ENV, "/"),
            (SESSION_TIMEOUT_ENV, "later"),
            (MAX_NODES_ENV, "0"),
            (MAX_NODE_BYTES_ENV, "big"),
        ] {
            let err = from(&[(var, value)]).expect_err("invalid");
            assert!(err.detail.contains(var), "{}", err.detail);
        }
    }
}
