//! Load balancing: a [`Selector`] turns a service name into a [`Picker`] over its nodes.

use std::fmt;
use std::sync::Arc;

use crate::registry::{Node, Service};
use crate::{Error, Result};

/// How a picker chooses among the nodes that pass the filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Uniformly at random (Go Micro's default).
    #[default]
    Random,
    /// In turn.
    RoundRobin,
    /// Power of two choices: two random nodes, the one with fewer calls in flight.
    LeastInFlight,
}

impl Strategy {
    /// Reads a strategy name: `random`, `roundrobin` (or `round_robin`), `p2c`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "random" => Some(Strategy::Random),
            "roundrobin" | "round_robin" | "round-robin" => Some(Strategy::RoundRobin),
            "p2c" | "leastinflight" | "least_in_flight" => Some(Strategy::LeastInFlight),
            _ => None,
        }
    }
}

/// Keeps only some services or nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Services of this version.
    Version(String),
    /// Nodes whose metadata has this key with this value.
    Label(String, String),
    /// Services that serve this endpoint.
    Endpoint(String),
}

impl Filter {
    /// Applies the filter, dropping services left without nodes.
    pub fn apply(&self, services: Vec<Service>) -> Vec<Service> {
        let mut out: Vec<Service> = match self {
            Filter::Version(v) => services.into_iter().filter(|s| &s.version == v).collect(),
            Filter::Endpoint(e) => services
                .into_iter()
                .filter(|s| s.endpoints.iter().any(|x| &x.name == e))
                .collect(),
            Filter::Label(k, v) => services
                .into_iter()
                .map(|mut s| {
                    s.nodes.retain(|n| n.metadata.get(k) == Some(v));
                    s
                })
                .collect(),
        };
        out.retain(|s| !s.nodes.is_empty());
        out
    }
}

/// Options for one [`Selector::select`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectOptions {
    /// All must pass.
    pub filters: Vec<Filter>,
    /// Overrides the selector's strategy for this selection.
    pub strategy: Option<Strategy>,
}

/// Chooses nodes for one call, its retries included.
pub trait Picker: Send + fmt::Debug {
    /// The next node. Nodes this picker has not returned yet are preferred, so that a retry
    /// lands on another node when there is one. Nodes are shared, not copied, per call.
    fn pick(&mut self) -> Result<Arc<Node>>;
}

/// How a call to a node went, reported through [`Selector::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered (an application error is an answer).
    Success,
    /// The node could not be reached or failed: eject it for a while.
    Failure,
}

/// A selector plugin.
#[async_trait::async_trait]
pub trait Selector: Send + Sync + fmt::Debug {
    /// A picker over the nodes of `service` that pass the filters; a 404 [`Error`] when there are
    /// none.
    async fn select(&self, service: &str, opts: &SelectOptions) -> Result<Box<dyn Picker>>;

    /// Reports the outcome of a call to a node picked earlier.
    fn mark(&self, service: &str, node: &Node, outcome: Outcome);

    /// Forgets what is cached about `service` (all services when `None`).
    fn reset(&self, service: Option<&str>);
}

/// The error for a service with no node to call.
pub fn no_nodes(service: &str) -> Error {
    Error::not_found(
        "micro.selector",
        format!("service {service}: no node is registered"),
    )
}
