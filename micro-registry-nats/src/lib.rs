//! The NATS registry of Micro for Rust, on [`async_nats`], speaking Go Micro's NATS registry
//! protocol.
//!
//! [`NatsRegistry`] implements [`micro_core::Registry`] (its name is `nats`): Rust services and
//! Go Micro services using the NATS registry (`go-micro/plugins/v4/registry/nats`) on the same
//! NATS find each other.
//!
//! # Starting NATS
//!
//! On Debian or Ubuntu, `apt-get install nats-server`, then, for development on loopback:
//!
//! ```text
//! nats-server -a 127.0.0.1 -p 4222
//! ```
//!
//! The registry does not need NATS to be up when it is made: it connects on first use, and
//! async-nats reconnects after a failure. While NATS is unreachable every call fails with a
//! 503 that names it, `nats at 127.0.0.1:4222: ... (is nats-server running there?)`.
//!
//! # The protocol (Go Micro's)
//!
//! NATS stores nothing: every process answers for the services it registered itself.
//!
//! - **Lookup**: a message on the query subject `micro.registry.nats.query` with a reply
//!   inbox; the body is Go Micro's `registry.Result`, whose JSON keys are capitalised:
//!   `{"Action":"get","Service":{"name":"greeter",...}}` for one service,
//!   `{"Action":"list","Service":null}` for all. Every process that has such a service
//!   answers on the inbox with one message per version: the [`Service`](micro_core::Service)
//!   JSON with the nodes of that process. The asker merges the answers that arrive within the
//!   query timeout (100 ms, as Go Micro), by version.
//! - **Announcements**: registering publishes `{"Action":"create","Service":{...}}` on the
//!   watch subject `micro.registry.nats.watch`, deregistering `{"Action":"delete",...}`; a
//!   watch subscribes to it. Go Micro announces every registration (every 30 s); this crate
//!   announces `create` for new nodes, `update` for changed ones and nothing for repeats, and
//!   reads all three.
//! - **Liveness**: there is no TTL on the wire. A process that stops answers nothing, so its
//!   nodes leave lookups at once; a process that dies without deregistering announces no
//!   `delete`, so watchers keep its nodes until they look up again (Micro's selector ejects
//!   a node that fails). This crate also drops a node whose TTL passes without a new
//!   registration, and announces its `delete`.
//!
//! Go Micro v5's built-in NATS registry uses `micro.nats.query` and `micro.nats.watch`: set
//! `MICRO_NATS_QUERY_SUBJECT` and `MICRO_NATS_WATCH_SUBJECT` to talk with it.
//!
//! Peer input is bounded: a lookup reads at most `max_answers` answers, each at most
//! `max_message_bytes`; messages that are too large or not Go Micro's JSON are skipped with a
//! log line.
//!
//! # Options and environment
//!
//! [`NatsRegistryOptions`] in code, or [`NatsRegistryOptions::from_env`]:
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_REGISTRY_ADDRESS` | comma-separated servers, `host:port` or `nats://host:port`; `127.0.0.1:4222` by default |
//! | `MICRO_NATS_QUERY_SUBJECT` | the lookup subject, `micro.registry.nats.query` |
//! | `MICRO_NATS_WATCH_SUBJECT` | the announcement subject, `micro.registry.nats.watch` |
//! | `MICRO_NATS_QUERY_TIMEOUT` | how long a lookup collects answers, `100ms` |
//! | `MICRO_NATS_MAX_ANSWERS` | how many answers a lookup reads at most, `4096` |
//! | `MICRO_NATS_MAX_MESSAGE_BYTES` | the largest answer, query or announcement read, `1MiB` |
//! | `MICRO_NATS_CONNECT_TIMEOUT` | how long connecting may take, `5s` |
//! | `MICRO_NATS_TOKEN`, `MICRO_NATS_USER`, `MICRO_NATS_PASSWORD` | authentication (the NATS broker reads the same) |
//!
//! # Example
//!
//! ```no_run
//! use micro_core::registry::RegisterOptions;
//! use micro_core::{Node, Registry, Service};
//! use micro_registry_nats::{NatsRegistry, NatsRegistryOptions};
//!
//! # async fn run() -> micro_core::Result<()> {
//! let registry = NatsRegistry::new(NatsRegistryOptions::from_address("127.0.0.1:4222"))?;
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

mod options;
mod registry;
mod wire;

pub use options::{
    NatsRegistryOptions, ADDRESS_ENV, CONNECT_TIMEOUT_ENV, DEFAULT_QUERY_SUBJECT,
    DEFAULT_QUERY_TIMEOUT, DEFAULT_SERVER, DEFAULT_WATCH_SUBJECT, MAX_ANSWERS_ENV,
    MAX_MESSAGE_BYTES_ENV, PASSWORD_ENV, QUERY_SUBJECT_ENV, QUERY_TIMEOUT_ENV, TOKEN_ENV, USER_ENV,
    WATCH_SUBJECT_ENV,
};
pub use registry::NatsRegistry;

/// The `id` of every error this registry returns.
const ERROR_ID: &str = "micro.registry.nats";
