//! A Consul registry for Micro for Rust, readable and writable by Go Micro services.
//!
//! [`ConsulRegistry`] keeps each node of a service as one Consul service instance in the local
//! agent, the way Go Micro's Consul plugin does, so Rust and Go services in the same Consul
//! find each other. It talks to the agent's HTTP API directly (hyper, rustls); no Consul client
//! crate is involved.
//!
//! # Running a Consul agent for development
//!
//! ```text
//! consul agent -dev            # HTTP API on 127.0.0.1:8500, UI at http://127.0.0.1:8500/ui
//! MICRO_REGISTRY=consul MICRO_REGISTRY_ADDRESS=127.0.0.1:8500 cargo run --example ...
//! ```
//!
//! In production, point it at the agent on the same host (every Consul node runs one); the
//! agent forwards to the servers.
//!
//! # Options and environment
//!
//! [`ConsulOptions`] holds the agent address (`127.0.0.1:8500` by default; `http://` or
//! `https://` allowed), an ACL token, the datacenter to look services up in, TLS settings,
//! the timeout of every request (10 s) and how long a watch's blocking query waits (5 min).
//! [`ConsulOptions::from_env`] reads Micro's setting and Consul's own variables:
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_REGISTRY_ADDRESS` | the agent address (wins over `CONSUL_HTTP_ADDR`) |
//! | `CONSUL_HTTP_ADDR` | the agent address, as the `consul` CLI reads it |
//! | `CONSUL_HTTP_TOKEN` / `CONSUL_HTTP_TOKEN_FILE` | the ACL token, sent as `X-Consul-Token` |
//! | `CONSUL_HTTP_SSL=true` | HTTPS for an address without a scheme |
//! | `CONSUL_CACERT` | the CA file (PEM) to trust instead of the system's roots |
//! | `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY` | client certificate and key for mutual TLS |
//! | `CONSUL_TLS_SERVER_NAME` | the name expected on the agent's certificate |
//!
//! [`ConsulRegistry::new`] sends nothing, so it succeeds while Consul is down; every call is
//! bounded by the request timeout and, when the agent cannot be reached, fails with a 503
//! error naming `consul at <address>`.
//!
//! # Layout in Consul (Go Micro's)
//!
//! - One Consul service per node: `ID` = node id, `Name` = service name, `Address`/`Port`
//!   from the node address, service metadata in `Meta` (where Consul's rules allow).
//! - Tags carry the rest (see [`tags`]): `t-` + hex(zlib(`{"k":"v"}`)) per node metadata pair,
//!   `e-` + hex(zlib(endpoint JSON)) per endpoint, `v-` + hex(zlib(version)); the legacy
//!   `t=`, `e=`, `v=` forms with raw JSON are read too.
//! - A TTL check `service:<node id>` of the register TTL, deregistered by Consul after
//!   max(TTL, 1 min) + 5 s critical. Registering again passes the check, and registers anew
//!   only when the registration changed or the agent forgot it (a restarted agent).
//! - Lookups read `/v1/health/service/<name>?passing`, dropping any instance with a critical
//!   check; listing reads `/v1/catalog/services`; watches are blocking queries on both.
//! - Instances or tags that do not decode (written by someone else) are skipped with a
//!   warning and never hide the valid ones.
//!
//! # Example
//!
//! ```no_run
//! use micro_core::registry::RegisterOptions;
//! use micro_core::{Node, Registry, Service};
//! use micro_registry_consul::{ConsulOptions, ConsulRegistry};
//!
//! # async fn run() -> micro_core::Result<()> {
//! let registry = ConsulRegistry::new(ConsulOptions::from_env())?;
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

mod client;
mod options;
mod registry;
pub mod tags;
mod watch;

pub use options::{
    ConsulOptions, TlsOptions, ADDRESS_ENV, CA_CERT_ENV, CLIENT_CERT_ENV, CLIENT_KEY_ENV,
    DEFAULT_ADDRESS, MICRO_ADDRESS_ENV, SSL_ENV, TLS_SERVER_NAME_ENV, TOKEN_ENV, TOKEN_FILE_ENV,
};
pub use registry::ConsulRegistry;
