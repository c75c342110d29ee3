//! Load balancing: a [`Selector`] turns a service name into a [`Picker`] over its nodes.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    ///
    /// The [`Pick`] counts as a call in flight to its node until it is dropped: hold it for
    /// the whole attempt.
    fn pick(&mut self) -> Result<Pick>;
}

/// A node chosen for one attempt, counted as a call in flight to that node while it lives.
///
/// The count falls when the pick is dropped, however the attempt ends: answered, failed,
/// cancelled, timed out or unwound by a panic. That is why it is a guard and not a call to
/// make: a cancelled future runs no more code, but it does drop what it holds. Outcomes for
/// ejection are reported apart, with [`Selector::mark`].
///
/// Making one allocates nothing: it shares the node and the counter with the picker.
pub struct Pick {
    node: Arc<Node>,
    in_flight: Option<Arc<AtomicUsize>>,
}

impl Pick {
    /// A pick counted in nothing (a direct-address call, say).
    pub fn untracked(node: Arc<Node>) -> Self {
        Pick {
            node,
            in_flight: None,
        }
    }

    /// A pick counted in `in_flight`: one more now, one less when it is dropped.
    pub fn tracked(node: Arc<Node>, in_flight: Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::Relaxed);
        Pick {
            node,
            in_flight: Some(in_flight),
        }
    }

    /// The node, shared (an [`crate::rpc::Attempt`] carries it).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Deref for Pick {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if let Some(counter) = &self.in_flight {
            // Only what `tracked` added is taken away, so this cannot wrap; Relaxed is
            // enough for a load estimate that no other memory depends on.
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("node", &self.node.id)
            .field("address", &self.node.address)
            .finish()
    }
}

/// How a call to a node went, reported through [`Selector::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered (an application error is an answer).
    Success,
    /// The node could not be reached, failed, or did not answer within the call's deadline:
    /// eject it for a while.
    Failure,
}

/// A selector plugin.
#[async_trait::async_trait]
pub trait Selector: Send + Sync + fmt::Debug {
    /// A picker over the nodes of `service` that pass the filters; a 404 [`Error`] when there are
    /// none.
    async fn select(&self, service: &str, opts: &SelectOptions) -> Result<Box<dyn Picker>>;

    /// Reports the outcome of a call to a node picked earlier, for ejection. The call's
    /// in-flight count is the [`Pick`]'s business, not this one's: a call that ends with no
    /// outcome to report (cancelled, say) need not be marked at all.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Arc<Node> {
        Arc::new(Node {
            id: id.to_string(),
            address: format!("{id}:1"),
            ..Default::default()
        })
    }

    #[test]
    fn a_pick_counts_in_flight_until_dropped() {
        let counter = Arc::new(AtomicUsize::new(0));
        let first = Pick::tracked(node("a"), counter.clone());
        let second = Pick::tracked(node("a"), counter.clone());
        assert_eq!(counter.load(Ordering::Relaxed), 2);
        assert_eq!(first.id, "a", "a pick reads as its node");
        assert_eq!(second.node().address, "a:1");
        drop(first);
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        drop(second);
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_pick_held_by_a_panicking_attempt_is_released() {
        let counter = Arc::new(AtomicUsize::new(0));
        let held = counter.clone();
        let unwound = std::panic::catch_unwind(move || {
            let _pick = Pick::tracked(node("a"), held);
            panic!("the attempt panicked");
        });
        assert!(unwound.is_err());
        assert_eq!(counter.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_pick_shares_its_node_rather_than_copying_it() {
        let shared = node("a");
        let pick = Pick::untracked(shared.clone());
        assert!(Arc::ptr_eq(pick.node(), &shared));
        assert_eq!(pick.address, "a:1");
    }
}
