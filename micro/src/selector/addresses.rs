//! [`StaticAddresses`]: services at fixed addresses, for the `static` selector.

use std::collections::BTreeMap;

use micro_core::env::invalid;
use micro_core::registry::{RegisterOptions, Watcher};
use micro_core::{Error, Node, Registry, Result, Service};

/// Where the `static` selector (`MICRO_SELECTOR=static`) sends each service's calls, for
/// fleets whose balancing is done outside Micro (a Kubernetes Service, a load balancer, DNS
/// round robin): the addresses listed for the service, else Go Micro's rule, the service's
/// name as a host name, `{service}[.{domain}]:{port}` (port 8080 by default).
///
/// It is the registry the selector reads, and only that: registering with it is refused. The
/// selector around it balances, retries and ejects over the listed addresses as it does over
/// registered nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticAddresses {
    domain: Option<String>,
    port: u16,
    listed: BTreeMap<String, Vec<String>>,
}

impl Default for StaticAddresses {
    fn default() -> Self {
        StaticAddresses {
            domain: None,
            port: 8080,
            listed: BTreeMap::new(),
        }
    }
}

impl StaticAddresses {
    /// Every service at `{service}:8080`, until told more.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `.{domain}` to service names (`greeter.default.svc.cluster.local`).
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The port of services without listed addresses.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The addresses (`host:port`) of `service`, instead of its name.
    pub fn addresses<A: Into<String>>(
        mut self,
        service: impl Into<String>,
        addresses: impl IntoIterator<Item = A>,
    ) -> Self {
        let list = addresses.into_iter().map(Into::into).collect();
        self.listed.insert(service.into(), list);
        self
    }

    /// From `MICRO_SELECTOR_DOMAIN`, `MICRO_SELECTOR_PORT` and `MICRO_SELECTOR_ADDRESSES`
    /// (`greeter=10.0.0.1:8080 10.0.0.2:8080;blog=blog.internal:9090`).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut addresses = StaticAddresses::new();
        if let Some(domain) = var("MICRO_SELECTOR_DOMAIN") {
            addresses = addresses.domain(domain.trim());
        }
        if let Some(port) = var("MICRO_SELECTOR_PORT") {
            let parsed = port.trim().parse().ok().filter(|p| *p > 0);
            let port = parsed.ok_or_else(|| invalid("MICRO_SELECTOR_PORT", &port, "a port"))?;
            addresses = addresses.port(port);
        }
        if let Some(text) = var("MICRO_SELECTOR_ADDRESSES") {
            for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
                let expected = "service=host:port host:port;service=host:port";
                let Some((service, list)) = entry.split_once('=') else {
                    return Err(invalid("MICRO_SELECTOR_ADDRESSES", &text, expected));
                };
                let list: Vec<&str> = list.split([' ', ',']).filter(|a| !a.is_empty()).collect();
                if service.trim().is_empty() || list.is_empty() {
                    return Err(invalid("MICRO_SELECTOR_ADDRESSES", &text, expected));
                }
                addresses = addresses.addresses(service.trim(), list);
            }
        }
        Ok(addresses)
    }

    /// The addresses `service`'s calls go to.
    pub fn of(&self, service: &str) -> Vec<String> {
        if let Some(listed) = self.listed.get(service) {
            return listed.clone();
        }
        match &self.domain {
            Some(domain) => vec![format!("{service}.{domain}:{}", self.port)],
            None => vec![format!("{service}:{}", self.port)],
        }
    }
}

/// A service at these addresses, as a registry would describe it: a node per address, named
/// by it.
fn service_at(name: &str, addresses: impl IntoIterator<Item = String>) -> Service {
    let mut service = Service::new(name, "");
    service.nodes = addresses
        .into_iter()
        .map(|address| Node {
            id: address.clone(),
            address,
            ..Node::default()
        })
        .collect();
    service
}

#[async_trait::async_trait]
impl Registry for StaticAddresses {
    fn name(&self) -> &str {
        "static"
    }

    async fn register(&self, service: &Service, _: RegisterOptions) -> Result<()> {
        Err(read_only(&service.name))
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        Err(read_only(&service.name))
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        Ok(vec![service_at(name, self.of(name))])
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        Ok(self
            .listed
            .iter()
            .map(|(name, list)| service_at(name, list.clone()))
            .collect())
    }

    async fn watch(&self, _service: Option<&str>) -> Result<Watcher> {
        // Nothing ever changes.
        Ok(Box::pin(futures_util::stream::pending()))
    }
}

fn read_only(service: &str) -> Error {
    Error::new(
        "micro.selector.static",
        405,
        format!("cannot register {service}: static addresses are read, not registered"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<StaticAddresses> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        StaticAddresses::from_vars(|name| vars.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn listed_addresses_else_the_name_as_go_micro_does() -> Result<()> {
        let addresses = from(&[
            ("MICRO_SELECTOR_DOMAIN", "svc.cluster.local"),
            ("MICRO_SELECTOR_PORT", "9090"),
            (
                "MICRO_SELECTOR_ADDRESSES",
                "greeter=127.0.0.1:1 127.0.0.1:2; blog=b:3",
            ),
        ])?;
        assert_eq!(addresses.of("greeter"), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(addresses.of("blog"), ["b:3"]);
        assert_eq!(addresses.of("shop"), ["shop.svc.cluster.local:9090"]);
        assert_eq!(StaticAddresses::new().of("shop"), ["shop:8080"]);
        for (var, value) in [
            ("MICRO_SELECTOR_PORT", "http"),
            ("MICRO_SELECTOR_ADDRESSES", "greeter"),
            ("MICRO_SELECTOR_ADDRESSES", "greeter="),
        ] {
            let e = from(&[(var, value)]).expect_err("refused");
            assert!(e.detail.contains(var), "{e}");
        }
        Ok(())
    }
}
