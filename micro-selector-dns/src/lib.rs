//! The `dns` selector of Micro for Rust: a service's nodes are what DNS says its name is, for
//! fleets whose discovery and balancing live outside Micro (a Kubernetes Service, Consul DNS,
//! a DNS round robin). `MICRO_SELECTOR=dns` picks it (cargo feature `dns` of `micro`).
//!
//! The name looked up is `{service}` or, with a domain, `{service}.{domain}`
//! (`greeter.default.svc.cluster.local`). Like Go Micro's dns selector it asks for SRV
//! records first, each a node at its target and port; a name with no SRV record is looked up
//! as a host (A and AAAA), each address a node at the configured port (8080 by default).
//! Answers are cached for [`DnsOptions::ttl`] and kept while DNS is unreachable; the selector
//! balances, retries and ejects over them as over registered nodes.
//!
//! [`DnsResolver`] is what the selector reads in place of a registry:
//!
//! ```no_run
//! # fn main() -> micro_core::Result<()> {
//! use std::sync::Arc;
//! use micro_selector_dns::{DnsOptions, DnsResolver};
//!
//! let resolver = DnsResolver::new(DnsOptions::from_env()?.domain("default.svc.cluster.local"))?;
//! let lookups: Arc<dyn micro_core::Registry> = Arc::new(resolver);
//! # Ok(())
//! # }
//! ```
//!
//! Settings: `MICRO_SELECTOR_DOMAIN`, `MICRO_SELECTOR_PORT` (shared with the `static`
//! selector), `MICRO_SELECTOR_DNS_SERVER` (`ip:port` of the one name server to ask, instead of
//! the system's `/etc/resolv.conf`), `MICRO_SELECTOR_DNS_TTL` (how long answers are kept, 30 s
//! by default).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use micro_core::env::{invalid, parse_duration};
use micro_core::registry::{RegisterOptions, Watcher};
use micro_core::{Error, Node, Registry, Result, Service};

const ID: &str = "micro.selector.dns";

/// The most nodes one name gives: a bigger answer is cut there.
const MAX_NODES: usize = 1024;

/// How the `dns` selector looks names up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOptions {
    /// Appended to service names (`MICRO_SELECTOR_DOMAIN`); none by default, so the system's
    /// search domains apply.
    pub domain: Option<String>,
    /// The port of nodes found by A/AAAA records (`MICRO_SELECTOR_PORT`, 8080).
    pub port: u16,
    /// The one name server to ask (`MICRO_SELECTOR_DNS_SERVER`); the system's otherwise.
    pub server: Option<SocketAddr>,
    /// How long answers are trusted before they are asked again (`MICRO_SELECTOR_DNS_TTL`,
    /// 30 s).
    pub ttl: Duration,
    /// How long one lookup may take.
    pub timeout: Duration,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            domain: None,
            port: 8080,
            server: None,
            ttl: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
        }
    }
}

impl DnsOptions {
    /// The defaults, changed by the `MICRO_SELECTOR_*` variables that are set.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`DnsOptions::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut opts = DnsOptions::default();
        if let Some(domain) = var("MICRO_SELECTOR_DOMAIN") {
            opts.domain = Some(domain.trim().trim_matches('.').to_string());
        }
        if let Some(port) = var("MICRO_SELECTOR_PORT") {
            let parsed = port.trim().parse().ok().filter(|p| *p > 0);
            opts.port = parsed.ok_or_else(|| invalid("MICRO_SELECTOR_PORT", &port, "a port"))?;
        }
        if let Some(server) = var("MICRO_SELECTOR_DNS_SERVER") {
            let parsed = server.trim().parse().ok();
            let expected = "an ip:port, like 127.0.0.1:53";
            opts.server = Some(
                parsed.ok_or_else(|| invalid("MICRO_SELECTOR_DNS_SERVER", &server, expected))?,
            );
        }
        if let Some(ttl) = var("MICRO_SELECTOR_DNS_TTL") {
            opts.ttl = parse_duration(&ttl)
                .ok_or_else(|| invalid("MICRO_SELECTOR_DNS_TTL", &ttl, "a duration like 30s"))?;
        }
        Ok(opts)
    }

    /// Appends `.{domain}` to service names.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Asks only the name server at `server`.
    pub fn server(mut self, server: SocketAddr) -> Self {
        self.server = Some(server);
        self
    }

    /// The port of nodes found by A/AAAA records.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

/// Service names to nodes through DNS: what the `dns` selector reads instead of a registry.
/// Registering with it is refused.
pub struct DnsResolver {
    resolver: TokioResolver,
    opts: DnsOptions,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl DnsResolver {
    /// A resolver with `opts`: the system's name servers unless `opts.server` names one.
    pub fn new(opts: DnsOptions) -> Result<Self> {
        let built = match opts.server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let name_server = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
                let config = ResolverConfig::from_name_servers(vec![name_server]);
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
                builder.options_mut().timeout = opts.timeout;
                builder.build()
            }
            None => TokioResolver::builder_tokio().and_then(|mut builder| {
                builder.options_mut().timeout = opts.timeout;
                builder.build()
            }),
        };
        let resolver = built
            .map_err(|e| Error::internal(ID, format!("cannot set up the DNS resolver: {e}")))?;
        Ok(DnsResolver { resolver, opts })
    }

    /// The name looked up for `service`.
    fn name_of(&self, service: &str) -> String {
        match &self.opts.domain {
            Some(domain) => format!("{service}.{domain}"),
            None => service.to_string(),
        }
    }

    /// The addresses of `service`: SRV targets, else the host's addresses at the port.
    pub async fn addresses(&self, service: &str) -> Result<Vec<String>> {
        let name = self.name_of(service);
        let lookups = async {
            match self.resolver.srv_lookup(name.as_str()).await {
                Ok(found) => {
                    let targets: Vec<String> = found
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::SRV(srv) => {
                                let host = srv.target.to_utf8();
                                let host = host.trim_end_matches('.');
                                Some(format!("{host}:{}", srv.port))
                            }
                            _ => None,
                        })
                        .take(MAX_NODES)
                        .collect();
                    if !targets.is_empty() {
                        return Ok(targets);
                    }
                }
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => {}
                Err(e) => return Err(unreachable(&name, &e)),
            }
            match self.resolver.lookup_ip(name.as_str()).await {
                Ok(ips) => Ok(ips
                    .iter()
                    .take(MAX_NODES)
                    .map(|ip| SocketAddr::new(ip, self.opts.port).to_string())
                    .collect()),
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
                Err(e) => Err(unreachable(&name, &e)),
            }
        };
        let limit = self.opts.timeout * 2;
        let found = tokio::time::timeout(limit, lookups).await.map_err(|_| {
            Error::timeout(
                ID,
                format!("DNS did not answer for {name} within {limit:?}"),
            )
        })??;
        if found.is_empty() {
            return Err(Error::not_found(
                ID,
                format!("service {service}: DNS has no SRV, A or AAAA record for {name}"),
            ));
        }
        Ok(found)
    }
}

fn unreachable(name: &str, e: &impl std::fmt::Display) -> Error {
    Error::new(ID, 503, format!("cannot look up {name} in DNS: {e}"))
}

#[async_trait::async_trait]
impl Registry for DnsResolver {
    fn name(&self) -> &str {
        "dns"
    }

    async fn register(&self, service: &Service, _: RegisterOptions) -> Result<()> {
        Err(read_only(&service.name))
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        Err(read_only(&service.name))
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        let mut service = Service::new(name, "");
        service.nodes = self
            .addresses(name)
            .await?
            .into_iter()
            .map(|address| Node {
                id: address.clone(),
                address,
                ..Node::default()
            })
            .collect();
        Ok(vec![service])
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        // DNS cannot be listed.
        Ok(Vec::new())
    }

    async fn watch(&self, _service: Option<&str>) -> Result<Watcher> {
        // DNS says nothing unasked: answers are asked again when the selector's cache expires.
        Ok(Box::pin(futures_util::stream::pending()))
    }
}

fn read_only(service: &str) -> Error {
    Error::new(
        ID,
        405,
        format!("cannot register {service}: DNS names are looked up, not registered"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_its_settings() -> Result<()> {
        let vars: HashMap<&str, &str> = [
            ("MICRO_SELECTOR_DOMAIN", "svc.cluster.local."),
            ("MICRO_SELECTOR_PORT", "9090"),
            ("MICRO_SELECTOR_DNS_SERVER", "127.0.0.1:5353"),
            ("MICRO_SELECTOR_DNS_TTL", "5s"),
        ]
        .into_iter()
        .collect();
        let opts = DnsOptions::from_vars(|n| vars.get(n).map(|v| v.to_string()))?;
        assert_eq!(opts.domain.as_deref(), Some("svc.cluster.local"));
        assert_eq!(opts.port, 9090);
        assert_eq!(opts.server, Some(SocketAddr::from(([127, 0, 0, 1], 5353))));
        assert_eq!(opts.ttl, Duration::from_secs(5));
        let bad =
            DnsOptions::from_vars(|n| (n == "MICRO_SELECTOR_DNS_SERVER").then(|| "dns".into()));
        assert!(bad.is_err_and(|e| e.detail.contains("MICRO_SELECTOR_DNS_SERVER")));
        Ok(())
    }
}
