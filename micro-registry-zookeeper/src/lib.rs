//! The ZooKeeper registry of Micro for Rust, on the [`zookeeper_client`] crate, sharing Go
//! Micro's paths.
//!
//! [`ZookeeperRegistry`] implements [`micro_core::Registry`] (its name is `zookeeper`): Rust
//! services and Go Micro services using the ZooKeeper registry
//! (`go-micro/plugins/v4/registry/zookeeper`) find each other in the same ZooKeeper.
//!
//! # Starting ZooKeeper
//!
//! On Debian or Ubuntu, `apt-get install zookeeperd` installs ZooKeeper (3.8 on Debian 12) and
//! starts it as a system service on port 2181. A throwaway server on loopback, for
//! development, from the same package:
//!
//! ```text
//! mkdir -p /tmp/zk && cat > /tmp/zk/zoo.cfg <<EOF
//! tickTime=500
//! dataDir=/tmp/zk/data
//! clientPort=2181
//! clientPortAddress=127.0.0.1
//! admin.enableServer=false
//! EOF
//! java -cp /usr/share/java/zookeeper.jar org.apache.zookeeper.server.ZooKeeperServerMain /tmp/zk/zoo.cfg
//! ```
//!
//! Watches use ZooKeeper's persistent recursive watches, so the server must be 3.6 or later.
//! The registry does not need ZooKeeper to be up when it is made: it connects on first use and
//! again after its session ended. While ZooKeeper is unreachable every call fails within the
//! request timeout with a 503 that names it, `zookeeper at 127.0.0.1:2181: ... (is ZooKeeper
//! running and reachable there?)`.
//!
//! # Layout (Go Micro's)
//!
//! Node `greeter-1` of service `greeter` is the znode `/micro-registry/greeter/greeter-1` (a
//! `/` inside either part becomes `-`); its data is the [`Service`](micro_core::Service) JSON
//! holding only that node. `/micro-registry` and `/micro-registry/<service>` are persistent,
//! open to everyone (Go Micro's world ACL). Go Micro writes its nodes persistent and removes
//! them on deregistration; this crate writes them **ephemeral**, so that a process that dies
//! leaves the registry when its session times out, and deletes a node whose register TTL passes
//! without a new registration (ZooKeeper has no TTL for ephemeral nodes). Readers see no
//! difference. A lookup lists `/micro-registry/<service>` and reads each child, merging the
//! nodes per version; children that are not service nodes (invalid JSON, too large, another
//! service's name, children of their own) are skipped with a warning. A watch is a
//! persistent recursive watch on the prefix (or on one service's directory).
//!
//! # Options and environment
//!
//! [`ZookeeperOptions`] in code, or [`ZookeeperOptions::from_env`]:
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_REGISTRY_ADDRESS` | comma-separated servers, `host:port`; `127.0.0.1:2181` by default |
//! | `MICRO_ZOOKEEPER_PREFIX` | the path prefix, `/micro-registry` (Go Micro's) |
//! | `MICRO_ZOOKEEPER_SESSION_TIMEOUT` | the session timeout: how long after a process is gone its nodes go, `10s` |
//! | `MICRO_ZOOKEEPER_REQUEST_TIMEOUT` | how long one request (connecting included) may take, `5s` |
//! | `MICRO_ZOOKEEPER_MAX_NODES` | how many services a listing, and nodes of a service a lookup, reads at most, `10000` |
//! | `MICRO_ZOOKEEPER_MAX_NODE_BYTES` | the largest node data read, `1MiB` |
//!
//! # Example
//!
//! ```no_run
//! use micro_core::registry::RegisterOptions;
//! use micro_core::{Node, Registry, Service};
//! use micro_registry_zookeeper::{ZookeeperOptions, ZookeeperRegistry};
//!
//! # async fn run() -> micro_core::Result<()> {
//! let registry = ZookeeperRegistry::new(ZookeeperOptions::from_address("127.0.0.1:2181"))?;
//! let mut service = Service::new("greeter", "latest");
//! service.nodes.push(Node {
//!     id: "greeter-1".into(),
//!     address: "127.0.0.1:9090".into(),
//!     metadata: [("protocol".to_string(), "mucp".to_string())].into(),
//! });
//! registry.register(&service, RegisterOptions::default()).await?;
//! let found = registry.get_service("greeter").await?;
//! assert_eq!(found[0].nodes[0].address, "127.0.0.1:9090");
//! registry.deregister(&service).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `testing`: `testing::ZookeeperServer`, a private ZooKeeper on a free loopback port for
//!   tests.

mod layout;
mod options;
mod registry;
#[cfg(feature = "testing")]
pub mod testing;

pub use options::{
    ZookeeperOptions, ADDRESS_ENV, DEFAULT_PREFIX, DEFAULT_SERVER, MAX_NODES_ENV,
    MAX_NODE_BYTES_ENV, PREFIX_ENV, REQUEST_TIMEOUT_ENV, SESSION_TIMEOUT_ENV,
};
pub use registry::ZookeeperRegistry;

/// The `id` of every error this registry returns.
const ERROR_ID: &str = "micro.registry.zookeeper";
