//! The interfaces of Micro for Rust.
//!
//! This crate is the whole vocabulary of the framework, and nothing else: it opens no socket and
//! pulls in no runtime. Read it top to bottom and you know every concept:
//!
//! - [`registry`]: where services announce themselves ([`Registry`], [`Service`], [`Node`]).
//! - [`selector`]: how a client picks one node of a service ([`Selector`]).
//! - [`transport`]: how request and response messages cross the network ([`Transport`]).
//! - [`codec`]: how typed messages become bytes, chosen by `Content-Type` ([`Codec`]).
//! - [`broker`]: asynchronous publish/subscribe ([`Broker`]).
//! - [`rpc`]: the untyped request, response and stream seen by [`Client`] and [`Server`].
//! - [`Error`] and [`Metadata`]: Go Micro's error model and the case-insensitive header map,
//!   with [`MetadataLimits`] bounding what a peer may send.
//! - [`mod@env`]: how durations, sizes and switches are written in `MICRO_*` variables, and the error
//!   for one that does not read.
//!
//! Implementations live elsewhere: the `micro` crate holds the client, server, selector and the
//! in-memory registry and broker; each plugin crate (`micro-registry-etcd`, `micro-broker-kafka`,
//! ...) implements one of these traits. All traits are object safe, so the runtime can pick
//! plugins by name from configuration and hold them as `Arc<dyn Registry>` and so on.

pub mod broker;
pub mod codec;
pub mod env;
mod error;
pub mod headers;
pub mod metadata;
pub mod registry;
pub mod rpc;
pub mod selector;
pub mod transport;

pub use broker::Broker;
pub use codec::{Codec, Message};
pub use error::{status_text, Error, GrpcCode};
pub use metadata::{Metadata, MetadataLimits};
pub use registry::{Endpoint, Node, Registry, Service, Value};
pub use rpc::{Client, Server};
pub use selector::Selector;
pub use transport::Transport;

/// A boxed, sendable future, as returned by the object-safe traits of this crate.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A boxed, sendable stream.
pub type BoxStream<'a, T> = std::pin::Pin<Box<dyn futures_core::Stream<Item = T> + Send + 'a>>;

/// The result type used throughout Micro.
pub type Result<T, E = Error> = std::result::Result<T, E>;
