//! The default registry of Micro for Rust: multicast DNS, speaking Go Micro's record layout.
//!
//! Services find each other with no infrastructure: each process answers mDNS queries for the
//! nodes it registered, and a lookup multicasts a query and gathers the answers for 100 ms.
//! Rust and Go Micro services on the same network see each other.
//!
//! # Loopback by default
//!
//! [`MdnsRegistry`] sends and listens on the loopback interface only, so discovery spans the
//! processes of one host and no packet leaves it. LAN-wide discovery is an explicit choice:
//!
//! - `MICRO_MDNS_INTERFACE=eth0` (an interface name): that LAN;
//! - `MICRO_MDNS_INTERFACE=all`: every IPv4 interface, as Go Micro does;
//! - unset, `lo` or `loopback`: loopback only.
//!
//! or in code, [`MdnsOptions::interface`] = [`Interface::Name`] / [`Interface::All`].
//!
//! # Host setup for loopback
//!
//! Multicast on `lo` needs, on Linux, as root (once per boot; the project's test script runs
//! it):
//!
//! ```text
//! ip link set lo up multicast on
//! ip route add 224.0.0.0/4 dev lo
//! ```
//!
//! The registry pins its own multicast to `lo` (IP_MULTICAST_IF) and joins the group there,
//! so on the kernels tried (6.x) it works even without these two; `lo` must be up, though
//! (a fresh network namespace has it down). The route also sends the multicast of programs
//! that choose no interface, such as Go Micro services on this host, through `lo`, so that
//! they meet ours there. When the group cannot be joined or reached, [`MdnsRegistry::new`]
//! and lookups fail with an error that names the interface and repeats these commands.
//!
//! # Go Micro on loopback: packets from 0.0.0.0 (or another interface's address)
//!
//! Go Micro's mDNS sockets are bound to `0.0.0.0` and choose the multicast interface by index
//! (or leave it to the route), so Linux picks their source address. On `lo` it will not pick
//! the host-scoped 127.0.0.1 for a multicast destination: on a host with no other address
//! their queries and announcements carry the source **0.0.0.0**, and with another interface
//! up they carry that interface's address (192.0.2.2, say). A socket that sets
//! `IP_MULTICAST_IF 127.0.0.1`, as ours do, sends from 127.0.0.1.
//!
//! In loopback mode the registry accepts, besides 127.0.0.0/8, packets with such a source
//! only when they were sent to the group and arrived on `lo`. The source alone would not
//! prove that (Linux also takes 0.0.0.0 from the LAN in a limited broadcast or a 224.0.0.x
//! multicast), so on Linux a second socket, bound to `224.0.0.251:<port>` and a member of the
//! group on `lo` only (IP_MULTICAST_ALL off), is the only one that handles them: the kernel
//! delivers to it nothing but the group's datagrams that came through `lo`, and what comes
//! through `lo` was sent by this host. Such a querier is answered by unicast at 127.0.0.1 on
//! its port, which reaches its socket bound to `0.0.0.0:<port>` (at the group when it asks
//! from the mDNS port itself). A packet from a non-loopback source that arrives any other way
//! is dropped, no reply goes to anything but loopback or the group through `lo`, and parsing
//! is unchanged. On other systems only 127.0.0.0/8 is heard.
//!
//! # Wire format (Go Micro's)
//!
//! Under the domain `micro.`, node `greeter-1` of service `greeter` is the instance
//! `greeter-1.greeter.micro.` with SRV (port), A or AAAA (address) and TXT records, found
//! through the PTR `greeter.micro.`; records live 120 s and a goodbye resends them with TTL 0.
//! The TXT record is hex(zlib(JSON)) cut into 255-character strings, the JSON being
//! `{"Service":..,"Version":..,"Endpoints":[..],"Metadata":{node metadata}}`. Each service
//! is also listed as `greeter._services.micro.` (SRV port 9999) under the PTR
//! `_services.micro.`, which is what [`list_services`](micro_core::Registry::list_services)
//! asks for. Service-level metadata is not carried, as in Go Micro. Multicast is IPv4
//! (224.0.0.251); nodes with IPv6 addresses are published with AAAA records.
//!
//! Several processes share port 5353 (SO_REUSEPORT); answers to a lookup come back by
//! unicast to the socket that asked. A registration lives for its TTL (zero: until
//! deregistered): a process that stops calling `register` stops being answered for, and
//! says goodbye. A watch reports the changes after it started: announcements and goodbyes as
//! they arrive, and, by polling every second (configurable), nodes that vanished without a
//! goodbye.
//!
//! # Bounds
//!
//! Anyone on the network can announce services and nodes, so what the registry keeps of them
//! is bounded: a watch, or a listing, tracks at most [`MdnsOptions::max_services`] services
//! (`MICRO_MDNS_MAX_SERVICES`, 1024), and a watch or lookup at most
//! [`MdnsOptions::max_nodes_per_service`] nodes of one service
//! (`MICRO_MDNS_MAX_NODES_PER_SERVICE`, 256). Past a bound, new services or nodes are left out
//! with a warning (at most one every 10 s per watch); those already tracked keep working, and
//! one that leaves makes room.
//!
//! # Example
//!
//! ```no_run
//! use micro_core::registry::RegisterOptions;
//! use micro_core::{Node, Registry, Service};
//! use micro_registry_mdns::{MdnsOptions, MdnsRegistry};
//!
//! # async fn run() -> micro_core::Result<()> {
//! let registry = MdnsRegistry::new(MdnsOptions::from_env()?)?;
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

#[doc(hidden)]
pub mod fuzzing;
mod net;
mod options;
mod records;
mod registry;
mod txt;

pub use options::{
    Interface, MdnsOptions, DEFAULT_MAX_NODES_PER_SERVICE, DEFAULT_MAX_SERVICES, DEFAULT_PORT,
    INTERFACE_ENV, MAX_NODES_ENV, MAX_SERVICES_ENV,
};
pub use registry::MdnsRegistry;

/// The `id` of errors raised by this registry.
const ERROR_ID: &str = "micro.registry.mdns";
