//! The etcd registry of Micro for Rust, on the [`etcd_client`] crate, sharing Go Micro's keys.
//!
//! [`EtcdRegistry`] implements [`micro_core::Registry`] (its name is `etcd`): Rust and Go Micro
//! services registered in the same etcd find each other.
//!
//! # Starting etcd
//!
//! On Debian or Ubuntu, `apt-get install etcd-server` installs `/usr/bin/etcd` (and starts it
//! as a system service on `127.0.0.1:2379`). A throwaway etcd on loopback, for development:
//!
//! ```text
//! etcd --name dev --data-dir /tmp/etcd-dev \
//!   --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
//!   --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
//!   --initial-cluster dev=http://127.0.0.1:2380
//! ```
//!
//! The registry does not need etcd to be up when it is made: it connects on first use and again
//! after a failure. While etcd is unreachable every call fails within the request timeout with
//! a 503 that names it, `etcd at 127.0.0.1:2379: ... (is etcd running and reachable there?)`.
//!
//! # Options and environment
//!
//! [`EtcdOptions`] in code, or [`EtcdOptions::from_env`]:
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_REGISTRY_ADDRESS` | comma-separated endpoints, `host[:port]` or `http(s)://host:port`; `127.0.0.1:2379` by default |
//! | `MICRO_ETCD_USERNAME`, `MICRO_ETCD_PASSWORD` | etcd user and password (Go Micro's `ETCD_USERNAME`, `ETCD_PASSWORD` are read when these are unset) |
//! | `MICRO_ETCD_TLS_CA` | PEM file of the CA that signed etcd's certificate; any `MICRO_ETCD_TLS_*` turns TLS on (the system's roots when no CA is given) |
//! | `MICRO_ETCD_TLS_CERT`, `MICRO_ETCD_TLS_KEY` | PEM files of a client certificate and its key, for etcd's `--client-cert-auth` |
//! | `MICRO_ETCD_TLS_DOMAIN` | the name etcd's certificate must carry, when not the endpoint's host |
//!
//! The key prefix (`/micro/registry/`), the connect timeout and the per-request timeout (5 s
//! each), the keys per read request ([`EtcdOptions::read_page`], 100) and the bytes one lookup
//! or listing reads at most ([`EtcdOptions::max_read_bytes`], 64 MiB) are set in code.
//!
//! # Large services, lost leaders and broken watches
//!
//! A lookup or listing reads its prefix page after page, all pages at one revision, and asks
//! for a page again in halves when etcd's answer is larger than the client accepts (4 MiB): a
//! service with many nodes or large entries reads whole. Past `max_read_bytes` the remaining
//! entries are left out with a warning; an entry that alone is over 4 MiB is skipped with one.
//!
//! Every request says it needs a leader (etcd's `hasleader`): a member cut off from the others
//! refuses at once, and ends the watches it serves rather than keeping them open and silent.
//! When etcd ends a watch (that, a restart, a broken connection), the watch reports it once as
//! an `Err` item and opens itself again from the first revision it has not reported, so no
//! change is missed; if etcd has compacted that revision away, it says so and goes on from the
//! present. It ends only when dropped.
//!
//! # Layout (Go Micro's)
//!
//! Node `greeter-1` of service `greeter` is the key `/micro/registry/greeter/greeter-1` (a `/`
//! inside either part becomes `-`); its value is the [`Service`](micro_core::Service) JSON
//! holding only that node, and it is attached to a lease of the register TTL (none for a zero
//! TTL). A lookup reads the prefix `/micro/registry/greeter/` and merges the nodes per version;
//! a watch is a prefix watch. Entries that are not service nodes (invalid JSON, keys of another
//! shape) are skipped with a warning.
//!
//! # Example
//!
//! ```no_run
//! use micro_core::registry::RegisterOptions;
//! use micro_core::{Node, Registry, Service};
//! use micro_registry_etcd::{EtcdOptions, EtcdRegistry};
//!
//! # async fn run() -> micro_core::Result<()> {
//! let registry = EtcdRegistry::new(EtcdOptions::from_address("127.0.0.1:2379"))?;
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
//! - `testing`: `testing::EtcdServer`, a private etcd on free loopback ports for tests.

#[doc(hidden)]
pub mod fuzzing;
mod layout;
mod options;
mod registry;
#[cfg(feature = "testing")]
pub mod testing;

pub use options::{
    EtcdOptions, EtcdTls, ADDRESS_ENV, DEFAULT_ENDPOINT, DEFAULT_MAX_READ_BYTES, DEFAULT_PREFIX,
    DEFAULT_READ_PAGE, PASSWORD_ENV, TLS_CA_ENV, TLS_CERT_ENV, TLS_DOMAIN_ENV, TLS_KEY_ENV,
    USERNAME_ENV,
};
pub use registry::EtcdRegistry;
