//! The plugin table: every registry, broker and transport by the name `MICRO_*` settings use,
//! and the cargo feature that compiles it in.
//!
//! Adding a plugin adds one line to the table below and one arm to the matching constructor.

use std::sync::{Arc, OnceLock};

use micro_core::selector::Strategy;
use micro_core::{Broker, Error, Registry, Result, Selector, Transport};

use crate::broker::MemoryBroker;
use crate::registry::MemoryRegistry;
use crate::selector::{RegistrySelector, SelectorOptions};

/// What kind of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `MICRO_REGISTRY`.
    Registry,
    /// `MICRO_BROKER`.
    Broker,
    /// `MICRO_TRANSPORT`.
    Transport,
    /// `MICRO_SELECTOR`, for selectors that read something else than the registry (the
    /// registry selector's strategies, `random`, `roundrobin` and `p2c`, are not plugins).
    Selector,
}

/// One known plugin: its kind, name, and the feature of `micro` that compiles it in (`None`
/// when always there).
#[derive(Debug, Clone, Copy)]
pub struct Plugin {
    /// Registry, broker or transport.
    pub kind: Kind,
    /// The name in `MICRO_*` settings.
    pub name: &'static str,
    /// The cargo feature of `micro` that enables it.
    pub feature: Option<&'static str>,
    /// Whether this build has it.
    pub enabled: bool,
}

/// Every plugin Micro knows, compiled in or not.
#[rustfmt::skip]
pub const PLUGINS: &[Plugin] = &[
    plugin(Kind::Registry, "memory", None, true),
    plugin(Kind::Registry, "mdns", Some("mdns"), cfg!(feature = "mdns")),
    plugin(Kind::Registry, "etcd", Some("etcd"), cfg!(feature = "etcd")),
    plugin(Kind::Registry, "consul", Some("consul"), cfg!(feature = "consul")),
    plugin(Kind::Registry, "kubernetes", Some("kubernetes"), cfg!(feature = "kubernetes")),
    plugin(Kind::Registry, "nats", Some("nats-registry"), cfg!(feature = "nats-registry")),
    plugin(Kind::Registry, "zookeeper", Some("zookeeper"), cfg!(feature = "zookeeper")),
    plugin(Kind::Broker, "memory", None, true),
    plugin(Kind::Broker, "http", Some("http-broker"), cfg!(feature = "http-broker")),
    plugin(Kind::Broker, "kafka", Some("kafka"), cfg!(feature = "kafka")),
    plugin(Kind::Broker, "rabbitmq", Some("rabbitmq"), cfg!(feature = "rabbitmq")),
    plugin(Kind::Broker, "nats", Some("nats"), cfg!(feature = "nats")),
    plugin(Kind::Broker, "redis", Some("redis"), cfg!(feature = "redis")),
    plugin(Kind::Broker, "mqtt", Some("mqtt"), cfg!(feature = "mqtt")),
    plugin(Kind::Transport, "memory", None, true),
    plugin(Kind::Transport, "http", Some("http"), cfg!(feature = "http")),
    plugin(Kind::Transport, "grpc", Some("grpc"), cfg!(feature = "grpc")),
    plugin(Kind::Selector, "static", None, true),
    plugin(Kind::Selector, "dns", Some("dns"), cfg!(feature = "dns")),
];

const fn plugin(
    kind: Kind,
    name: &'static str,
    feature: Option<&'static str>,
    enabled: bool,
) -> Plugin {
    Plugin {
        kind,
        name,
        feature,
        enabled,
    }
}

/// The default registry of this build: mdns when compiled in, else memory.
pub fn default_registry() -> &'static str {
    if cfg!(feature = "mdns") {
        "mdns"
    } else {
        "memory"
    }
}

/// The default broker of this build: http when compiled in, else memory.
pub fn default_broker() -> &'static str {
    if cfg!(feature = "http-broker") {
        "http"
    } else {
        "memory"
    }
}

/// The default transport of this build.
pub fn default_transport() -> &'static str {
    "http"
}

fn check(kind: Kind, name: &str) -> Result<()> {
    let label = match kind {
        Kind::Registry => "registry",
        Kind::Broker => "broker",
        Kind::Transport => "transport",
        Kind::Selector => "selector",
    };
    match PLUGINS.iter().find(|p| p.kind == kind && p.name == name) {
        Some(p) if p.enabled => Ok(()),
        Some(p) => Err(Error::configuration(
            "micro.plugins",
            format!(
                "{label} {name:?} is not compiled in: enable the cargo feature `{}` of the micro crate",
                p.feature.unwrap_or(name)
            ),
        )),
        None => {
            let known: Vec<&str> = PLUGINS
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| p.name)
                .collect();
            Err(Error::configuration(
                "micro.plugins",
                format!("unknown {label} {name:?}; known: {}", known.join(", ")),
            ))
        }
    }
}

/// The process-wide in-memory registry, shared by every service that picks `memory`.
pub fn memory_registry() -> MemoryRegistry {
    static SHARED: OnceLock<MemoryRegistry> = OnceLock::new();
    SHARED.get_or_init(MemoryRegistry::new).clone()
}

/// The process-wide in-memory broker, shared by every service that picks `memory`.
pub fn memory_broker() -> MemoryBroker {
    static SHARED: OnceLock<MemoryBroker> = OnceLock::new();
    SHARED.get_or_init(MemoryBroker::new).clone()
}

/// The registry called `name`, at `address` where it has one.
pub fn registry(name: &str, address: Option<&str>) -> Result<Arc<dyn Registry>> {
    check(Kind::Registry, name)?;
    match name {
        #[cfg(feature = "etcd")]
        "etcd" => {
            let mut opts = micro_registry_etcd::EtcdOptions::from_env();
            if let Some(a) = address {
                opts = opts.with_address(a);
            }
            Ok(Arc::new(micro_registry_etcd::EtcdRegistry::new(opts)?))
        }
        #[cfg(feature = "consul")]
        "consul" => {
            let mut opts = micro_registry_consul::ConsulOptions::from_env();
            if let Some(a) = address {
                opts = opts.with_address(a);
            }
            Ok(Arc::new(micro_registry_consul::ConsulRegistry::new(opts)?))
        }
        #[cfg(feature = "kubernetes")]
        "kubernetes" => Ok(Arc::new(
            micro_registry_kubernetes::KubernetesRegistry::new(
                micro_registry_kubernetes::KubernetesOptions::from_env()?.with_address(address),
            ),
        )),
        #[cfg(feature = "nats-registry")]
        "nats" => {
            let mut opts = micro_registry_nats::NatsRegistryOptions::from_env()?;
            if let Some(a) = address {
                opts = opts.with_address(a);
            }
            Ok(Arc::new(micro_registry_nats::NatsRegistry::new(opts)?))
        }
        #[cfg(feature = "zookeeper")]
        "zookeeper" => {
            let mut opts = micro_registry_zookeeper::ZookeeperOptions::from_env()?;
            if let Some(a) = address {
                opts = opts.with_address(a);
            }
            Ok(Arc::new(micro_registry_zookeeper::ZookeeperRegistry::new(
                opts,
            )?))
        }
        #[cfg(feature = "mdns")]
        "mdns" => Ok(Arc::new(micro_registry_mdns::MdnsRegistry::new(
            micro_registry_mdns::MdnsOptions::from_env()?,
        )?)),
        _ => {
            let _ = address;
            Ok(Arc::new(memory_registry()))
        }
    }
}

/// The broker called `name`, at `address` where it has one. Brokers that find their peers
/// through service discovery (the http broker) use `registry`.
pub fn broker(
    name: &str,
    address: Option<&str>,
    registry: &Arc<dyn Registry>,
) -> Result<Arc<dyn Broker>> {
    check(Kind::Broker, name)?;
    match name {
        #[cfg(feature = "kafka")]
        "kafka" => {
            let mut opts = micro_broker_kafka::KafkaOptions::from_env()?;
            if let Some(a) = address {
                opts = opts.with_brokers(a);
            }
            Ok(Arc::new(micro_broker_kafka::KafkaBroker::new(opts)?))
        }
        #[cfg(feature = "nats")]
        "nats" => {
            let mut opts = micro_broker_nats::NatsOptions::from_env()?;
            if let Some(a) = address {
                opts = opts.with_servers(a);
            }
            Ok(Arc::new(micro_broker_nats::NatsBroker::new(opts)?))
        }
        #[cfg(feature = "rabbitmq")]
        "rabbitmq" => {
            let mut opts = micro_broker_rabbitmq::RabbitOptions::from_env()?;
            if let Some(a) = address {
                opts = opts.with_address(a);
            }
            Ok(Arc::new(micro_broker_rabbitmq::RabbitBroker::new(opts)?))
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let mut opts = micro_broker_redis::RedisOptions::from_env()?;
            if let Some(a) = address {
                opts = opts.with_address(a);
            }
            Ok(Arc::new(micro_broker_redis::RedisBroker::new(opts)?))
        }
        #[cfg(feature = "mqtt")]
        "mqtt" => {
            let mut opts = micro_broker_mqtt::MqttOptions::from_env()?;
            if let Some(a) = address {
                opts.address = a.to_string();
            }
            Ok(Arc::new(micro_broker_mqtt::MqttBroker::new(opts)?))
        }
        #[cfg(feature = "http-broker")]
        "http" => {
            let mut opts = micro_broker_http::HttpBrokerOptions::from_env()?;
            if let Some(a) = address {
                opts = opts.with_address(a);
            }
            Ok(Arc::new(micro_broker_http::HttpBroker::new(
                registry.clone(),
                opts,
            )?))
        }
        _ => {
            let _ = (address, registry);
            Ok(Arc::new(memory_broker()))
        }
    }
}

/// The transport called `name`.
pub fn transport(name: &str) -> Result<Arc<dyn Transport>> {
    check(Kind::Transport, name)?;
    match name {
        #[cfg(feature = "http")]
        "http" => Ok(Arc::new(micro_transport_http::HttpTransport::new(
            micro_transport_http::HttpOptions::from_env()?,
        ))),
        #[cfg(feature = "grpc")]
        "grpc" => Ok(Arc::new(micro_transport_grpc::GrpcTransport::from_env()?)),
        "memory" => Ok(Arc::new(crate::transport::MemoryTransport)),
        _ => Err(Error::internal(
            "micro.plugins",
            format!("transport {name:?} has no constructor"),
        )),
    }
}

/// The selector called `name`, choosing by `strategy`: the registry selector over fixed
/// addresses (`static`, [`crate::selector::StaticAddresses`]) or over DNS (`dns`, the
/// `micro-selector-dns` crate), each configured from the environment.
pub fn selector(name: &str, strategy: Strategy) -> Result<Arc<dyn Selector>> {
    check(Kind::Selector, name)?;
    let defaults = SelectorOptions::default();
    // DNS answers are asked again after their own time; static addresses never change.
    let (source, cache_ttl): (Arc<dyn Registry>, _) = match name {
        #[cfg(feature = "dns")]
        "dns" => {
            let dns = micro_selector_dns::DnsOptions::from_env()?;
            let ttl = dns.ttl;
            (Arc::new(micro_selector_dns::DnsResolver::new(dns)?), ttl)
        }
        "static" => (
            Arc::new(crate::selector::StaticAddresses::from_env()?),
            defaults.cache_ttl,
        ),
        _ => {
            return Err(Error::internal(
                "micro.plugins",
                format!("selector {name:?} has no constructor"),
            ))
        }
    };
    let opts = SelectorOptions {
        strategy,
        cache_ttl,
        ..defaults
    };
    Ok(Arc::new(RegistrySelector::new(source, opts)))
}

/// Every compiled-in transport whose protocol is not `protocol`, one per protocol, so that a
/// client whose own transport speaks `protocol` can also call nodes that register another
/// (`protocol=grpc` next to `mucp`).
pub fn other_transports(protocol: &str) -> Result<Vec<Arc<dyn Transport>>> {
    let mut others: Vec<Arc<dyn Transport>> = Vec::new();
    for p in PLUGINS
        .iter()
        .filter(|p| p.kind == Kind::Transport && p.enabled)
    {
        let t = transport(p.name)?;
        if t.protocol() != protocol && others.iter().all(|o| o.protocol() != t.protocol()) {
            others.push(t);
        }
    }
    Ok(others)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_plugins_name_their_feature() {
        let shared: Arc<dyn Registry> = Arc::new(memory_registry());
        for p in PLUGINS.iter().filter(|p| !p.enabled) {
            let err = match p.kind {
                Kind::Registry => registry(p.name, None).map(|_| ()),
                Kind::Broker => broker(p.name, None, &shared).map(|_| ()),
                Kind::Transport => transport(p.name).map(|_| ()),
                Kind::Selector => selector(p.name, Strategy::Random).map(|_| ()),
            }
            .expect_err("not compiled in");
            let feature = p.feature.unwrap_or(p.name);
            assert!(
                err.detail.contains(&format!("feature `{feature}`")),
                "{}",
                err.detail
            );
        }
    }

    #[test]
    fn unknown_plugins_list_the_known_ones() {
        let err = registry("eureka", None).expect_err("unknown");
        assert!(err.detail.contains("memory, mdns, etcd"), "{}", err.detail);
    }

    #[test]
    fn memory_plugins_are_shared() {
        let a = registry("memory", None).expect("memory");
        assert_eq!(a.name(), "memory");
        let registry: Arc<dyn Registry> = Arc::new(memory_registry());
        let memory = broker("memory", None, &registry).expect("memory");
        assert_eq!(memory.name(), "memory");
    }

    #[test]
    fn other_transports_speak_other_protocols() {
        let others = other_transports("mucp").expect("transports");
        assert!(others.iter().all(|t| t.protocol() != "mucp"));
        let grpc = others.iter().any(|t| t.protocol() == "grpc");
        assert_eq!(grpc, cfg!(feature = "grpc"));
    }
}
