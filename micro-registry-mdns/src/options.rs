//! What the registry listens on and how long it waits: [`MdnsOptions`] and [`Interface`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The environment variable that picks the interface: unset, `lo` or `loopback` for loopback
/// only, an interface name (`eth0`) for that LAN, or `all` for every interface.
pub const INTERFACE_ENV: &str = "MICRO_MDNS_INTERFACE";

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
}

impl Default for MdnsOptions {
    fn default() -> Self {
        MdnsOptions {
            interface: Interface::Loopback,
            port: DEFAULT_PORT,
            query_timeout: Duration::from_millis(100),
            domain: "micro".to_string(),
            watch_interval: Duration::from_secs(1),
        }
    }
}

impl MdnsOptions {
    /// The defaults, with the interface taken from `MICRO_MDNS_INTERFACE` when it is set.
    pub fn from_env() -> Self {
        let mut opts = MdnsOptions::default();
        if let Ok(v) = std::env::var(INTERFACE_ENV) {
            // Parsing an interface cannot fail: any other word is an interface name.
            opts.interface = v.parse().unwrap_or_default();
        }
        opts
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
}
