//! What the registry listens on and how long it waits: [`MdnsOptions`] and [`Interface`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use micro_core::{env, Result};

use crate::ERROR_ID;

/// The environment variable that picks the interface: unset, `lo` or `loopback` for loopback
/// only, an interface name (`eth0`) for that LAN, or `all` for every interface.
pub const INTERFACE_ENV: &str = "MICRO_MDNS_INTERFACE";

/// The environment variable that bounds how many services a watch (or a listing) tracks.
pub const MAX_SERVICES_ENV: &str = "MICRO_MDNS_MAX_SERVICES";

/// The environment variable that bounds how many nodes of one service a watch (or a lookup)
/// tracks.
pub const MAX_NODES_ENV: &str = "MICRO_MDNS_MAX_NODES_PER_SERVICE";

/// Services a watch or listing tracks at most, by default.
pub const DEFAULT_MAX_SERVICES: usize = 1024;

/// Nodes of one service a watch or lookup tracks at most, by default.
pub const DEFAULT_MAX_NODES_PER_SERVICE: usize = 256;

/// The standard mDNS port.
pub const DEFAULT_PORT: u16 = 5353;

/// Which network interface the registry sends and listens on.
///
/// The default keeps every packet on the loopback interface, so services find each other on
/// this host and nothing leaves it. LAN-wide discovery is an explicit choice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Interface {
    /// Loopback only (`lo`, 127.0.0.1): processes on this host find each other.
    #[default]
    Loopback,
    /// One named interface, `eth0`: discovery across that LAN (and only there).
    Name(String),
    /// Every interface with an IPv4 address, as Go Micro does.
    All,
}

impl FromStr for Interface {
    type Err = std::convert::Infallible;

    /// Reads `MICRO_MDNS_INTERFACE` syntax: empty, `lo` or `loopback`, `all`, or a name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Ok(match s.to_ascii_lowercase().as_str() {
            "" | "lo" | "loopback" => Interface::Loopback,
            "all" | "*" => Interface::All,
            _ => Interface::Name(s.to_string()),
        })
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::Loopback => f.write_str("loopback"),
            Interface::Name(n) => f.write_str(n),
            Interface::All => f.write_str("all"),
        }
    }
}

/// Options of an [`MdnsRegistry`](crate::MdnsRegistry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsOptions {
    /// Where packets go; loopback by default.
    pub interface: Interface,
    /// The UDP port of the multicast group, 5353 by default. Tests use a private one so that
    /// they do not see each other (every registry that should meet must use the same port).
    pub port: u16,
    /// How long a lookup collects answers, 100 ms by default as in Go Micro.
    pub query_timeout: Duration,
    /// The DNS domain services live under, `micro` by default (Go Micro's).
    pub domain: String,
    /// How often a watch asks again to notice nodes that vanished without a goodbye, 1 s by
    /// default. Registrations and goodbyes are reported as soon as their packet arrives.
    pub watch_interval: Duration,
    /// How many services a watch of every service, or a listing, tracks at most (1024 by
    /// default): anyone on the network can announce services, and each one tracked costs
    /// memory and a question in every poll. Past it, new services are left out with a warning
    /// (at most one every 10 s per watch); those tracked keep working.
    pub max_services: usize,
    /// How many nodes of one service a watch or lookup tracks at most (256 by default); past
    /// it, new nodes are left out the same way.
    pub max_nodes_per_service: usize,
}

impl Default for MdnsOptions {
    fn default() -> Self {
        MdnsOptions {
            interface: Interface::Loopback,
            port: DEFAULT_PORT,
            query_timeout: Duration::from_millis(100),
            domain: "micro".to_string(),
            watch_interval: Duration::from_secs(1),
            max_services: DEFAULT_MAX_SERVICES,
            max_nodes_per_service: DEFAULT_MAX_NODES_PER_SERVICE,
        }
    }
}

impl MdnsOptions {
    /// The defaults, with what the environment sets:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `MICRO_MDNS_INTERFACE` | `lo` (default), an interface name, or `all` |
    /// | `MICRO_MDNS_MAX_SERVICES` | services a watch or listing tracks at most, 1024 |
    /// | `MICRO_MDNS_MAX_NODES_PER_SERVICE` | nodes of one service a watch or lookup tracks at most, 256 |
    ///
    /// A bound that is not a positive whole number is a 400 that names the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), with variables looked up through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut opts = MdnsOptions::default();
        if let Some(v) = var(INTERFACE_ENV) {
            // Parsing an interface cannot fail: any other word is an interface name.
            opts.interface = v.parse().unwrap_or_default();
        }
        let bound = |name: &str, into: &mut usize| -> Result<()> {
            let Some(v) = var(name).map(|v| v.trim().to_string()) else {
                return Ok(());
            };
            if v.is_empty() {
                return Ok(());
            }
            *into = v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                env::invalid_from(ERROR_ID, name, &v, "a whole number above 0, e.g. 1024")
            })?;
            Ok(())
        };
        bound(MAX_SERVICES_ENV, &mut opts.max_services)?;
        bound(MAX_NODES_ENV, &mut opts.max_nodes_per_service)?;
        Ok(opts)
    }

    /// These options on another port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// These options with another lookup timeout.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// These options with other bounds on the services and the nodes per service tracked.
    pub fn with_bounds(mut self, max_services: usize, max_nodes_per_service: usize) -> Self {
        self.max_services = max_services.max(1);
        self.max_nodes_per_service = max_nodes_per_service.max(1);
        self
    }

    /// These options with another watch interval.
    pub fn with_watch_interval(mut self, interval: Duration) -> Self {
        self.watch_interval = interval;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_words() {
        assert_eq!("".parse::<Interface>(), Ok(Interface::Loopback));
        assert_eq!("lo".parse::<Interface>(), Ok(Interface::Loopback));
        assert_eq!("Loopback".parse::<Interface>(), Ok(Interface::Loopback));
        assert_eq!("all".parse::<Interface>(), Ok(Interface::All));
        assert_eq!(
            " eth0 ".parse::<Interface>(),
            Ok(Interface::Name("eth0".into()))
        );
    }

    #[test]
    fn defaults_match_go_micro() {
        let o = MdnsOptions::default();
        assert_eq!(o.interface, Interface::Loopback);
        assert_eq!(o.port, 5353);
        assert_eq!(o.query_timeout, Duration::from_millis(100));
        assert_eq!(o.domain, "micro");
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn bounds_from_the_environment() {
        let o = MdnsOptions::from_vars(vars(&[])).expect("defaults");
        assert_eq!(o.max_services, DEFAULT_MAX_SERVICES);
        assert_eq!(o.max_nodes_per_service, DEFAULT_MAX_NODES_PER_SERVICE);
        let o = MdnsOptions::from_vars(vars(&[
            (MAX_SERVICES_ENV, " 10 "),
            (MAX_NODES_ENV, "3"),
            (INTERFACE_ENV, "lo"),
        ]))
        .expect("valid");
        assert_eq!((o.max_services, o.max_nodes_per_service), (10, 3));
        assert_eq!(o.interface, Interface::Loopback);
        for (var, bad) in [
            (MAX_NODES_ENV, "0"),
            (MAX_NODES_ENV, "-1"),
            (MAX_SERVICES_ENV, "many"),
            (MAX_SERVICES_ENV, "1.5"),
        ] {
            let err = MdnsOptions::from_vars(vars(&[(var, bad)])).expect_err(bad);
            assert_eq!(err.code, 400, "{err}");
            assert!(err.detail.contains(var), "{err}");
        }
    }
}
