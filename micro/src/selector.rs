//! The registry-backed selector: a cache of services fed by registry watch, three strategies,
//! filters, and ejection of failing nodes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_core::registry::{Event, EventKind};
use micro_core::selector::{no_nodes, Outcome, Picker, SelectOptions, Strategy};
use micro_core::{Node, Registry, Result, Selector, Service};
use rand::RngExt;

pub use micro_core::selector::{Filter, Strategy as SelectorStrategy};

/// Options for [`RegistrySelector`].
#[derive(Debug, Clone)]
pub struct SelectorOptions {
    /// The default strategy.
    pub strategy: Strategy,
    /// How long a cached service is trusted without a watch event before it is read again.
    pub cache_ttl: Duration,
    /// How long a node that failed is left out.
    pub eject_for: Duration,
}

impl Default for SelectorOptions {
    fn default() -> Self {
        SelectorOptions {
            strategy: Strategy::Random,
            cache_ttl: Duration::from_secs(60),
            eject_for: Duration::from_secs(10),
        }
    }
}

/// A selector over a registry. Lookups are cached; a single registry watch keeps the cache
/// current, so a node that deregisters or expires leaves the pool as soon as the registry
/// reports it. While the registry is unreachable the last known nodes keep being served.
#[derive(Debug, Clone)]
pub struct RegistrySelector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<dyn Registry>,
    opts: SelectorOptions,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    cache: HashMap<String, Cached>,
    ejected: HashMap<String, Instant>,
    in_flight: HashMap<String, Arc<AtomicUsize>>,
    round_robin: HashMap<String, Arc<AtomicUsize>>,
    watching: bool,
}

#[derive(Debug)]
struct Cached {
    services: Vec<Service>,
    fetched: Instant,
    /// The nodes of `services`, ready for selections without filters; rebuilt on each change,
    /// so that a selection copies no node and costs the same for 10 nodes or 1000.
    pool: Arc<Pool>,
    /// The service's round-robin turn (kept in `State::round_robin` across refreshes).
    turn: Arc<AtomicUsize>,
}

/// The nodes a picker chooses among, with their in-flight counters, shared by every picker
/// made from one state of the cache.
#[derive(Debug, Default)]
struct Pool {
    nodes: Vec<Arc<Node>>,
    in_flight: Vec<Arc<AtomicUsize>>,
}

impl Pool {
    /// The nodes of `services`, each with its counter from `counters` (made when missing).
    fn new(services: &[Service], counters: &mut HashMap<String, Arc<AtomicUsize>>) -> Arc<Pool> {
        let nodes: Vec<Arc<Node>> = services
            .iter()
            .flat_map(|s| s.nodes.iter().cloned().map(Arc::new))
            .collect();
        let in_flight = nodes
            .iter()
            .map(|n| match counters.get(&n.id) {
                Some(c) => c.clone(),
                None => counters.entry(n.id.clone()).or_default().clone(),
            })
            .collect();
        Arc::new(Pool { nodes, in_flight })
    }
}

impl RegistrySelector {
    /// A selector over `registry`.
    pub fn new(registry: Arc<dyn Registry>, opts: SelectorOptions) -> Self {
        RegistrySelector {
            inner: Arc::new(Inner {
                registry,
                opts,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn services(&self, name: &str) -> Result<Vec<Service>> {
        self.ensure_watch();
        let cached = match self.state().cache.get(name) {
            Some(c) if c.fetched.elapsed() < self.inner.opts.cache_ttl => {
                return Ok(c.services.clone());
            }
            Some(c) => Some(c.services.clone()),
            None => None,
        };
        match self.inner.registry.get_service(name).await {
            Ok(services) => {
                let mut state = self.state();
                let state = &mut *state;
                let pool = Pool::new(&services, &mut state.in_flight);
                let turn = state
                    .round_robin
                    .entry(name.to_string())
                    .or_default()
                    .clone();
                state.cache.insert(
                    name.to_string(),
                    Cached {
                        services: services.clone(),
                        fetched: Instant::now(),
                        pool,
                        turn,
                    },
                );
                Ok(services)
            }
            // Not found is an answer; anything else is an outage, and stale nodes beat none.
            Err(e) if e.code == 404 => {
                self.state().cache.remove(name);
                Err(no_nodes(name))
            }
            Err(e) => match cached {
                Some(services) => {
                    tracing::warn!(service = name, error = %e, "registry unavailable, using cached nodes");
                    Ok(services)
                }
                None => Err(e),
            },
        }
    }

    fn ensure_watch(&self) {
        {
            let mut state = self.state();
            if state.watching {
                return;
            }
            state.watching = true;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(watch_loop(weak));
    }

    fn apply(&self, event: Event) {
        let mut state = self.state();
        let state = &mut *state;
        let Some(cached) = state.cache.get_mut(&event.service.name) else {
            return;
        };
        let incoming = event.service;
        match event.kind {
            EventKind::Create | EventKind::Update => {
                match cached
                    .services
                    .iter_mut()
                    .find(|s| s.version == incoming.version)
                {
                    Some(s) => {
                        for n in &incoming.nodes {
                            s.nodes.retain(|x| x.id != n.id);
                            s.nodes.push(n.clone());
                        }
                        if !incoming.endpoints.is_empty() {
                            s.endpoints = incoming.endpoints.clone();
                        }
                    }
                    None => cached.services.push(incoming),
                }
            }
            EventKind::Delete => {
                let gone: HashSet<&str> = incoming.nodes.iter().map(|n| n.id.as_str()).collect();
                for s in cached.services.iter_mut() {
                    s.nodes.retain(|n| !gone.contains(n.id.as_str()));
                }
                cached.services.retain(|s| !s.nodes.is_empty());
            }
        }
        cached.pool = Pool::new(&cached.services, &mut state.in_flight);
    }

    /// A picker over `pool`, with the nodes ejected now left out.
    fn picker(
        state: &mut State,
        service: &str,
        pool: Arc<Pool>,
        turn: Option<Arc<AtomicUsize>>,
        strategy: Strategy,
    ) -> Result<Box<dyn Picker>> {
        if pool.nodes.is_empty() {
            return Err(no_nodes(service));
        }
        let mut ejected = Vec::new();
        if !state.ejected.is_empty() {
            let now = Instant::now();
            state.ejected.retain(|_, until| *until > now);
            if pool.nodes.iter().any(|n| state.ejected.contains_key(&n.id)) {
                ejected = pool
                    .nodes
                    .iter()
                    .map(|n| state.ejected.contains_key(&n.id))
                    .collect();
            }
        }
        let counter = match turn {
            Some(c) => c,
            None => state
                .round_robin
                .entry(service.to_string())
                .or_default()
                .clone(),
        };
        Ok(Box::new(NodePicker {
            pool,
            ejected,
            first: None,
            tried: Vec::new(),
            strategy,
            counter,
        }))
    }

    fn mark_all_stale(&self) {
        let long_ago = Instant::now()
            .checked_sub(self.inner.opts.cache_ttl)
            .unwrap_or_else(Instant::now);
        for c in self.state().cache.values_mut() {
            c.fetched = long_ago;
        }
    }
}

async fn watch_loop(weak: Weak<Inner>) {
    let mut failures: u32 = 0;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let selector = RegistrySelector { inner };
        let registry = selector.inner.registry.clone();
        match registry.watch(None).await {
            Ok(mut events) => {
                failures = 0;
                // Events may have been missed before the watch started.
                selector.mark_all_stale();
                drop(selector);
                while let Some(event) = events.next().await {
                    let Some(inner) = weak.upgrade() else { return };
                    let selector = RegistrySelector { inner };
                    match event {
                        Ok(e) => selector.apply(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "registry watch reported an error");
                            selector.mark_all_stale();
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(registry = registry.name(), error = %e, "cannot watch the registry; retrying");
                selector.mark_all_stale();
            }
        }
        failures = failures.saturating_add(1);
        let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
        tokio::time::sleep(backoff).await;
    }
}

#[async_trait::async_trait]
impl Selector for RegistrySelector {
    async fn select(&self, service: &str, opts: &SelectOptions) -> Result<Box<dyn Picker>> {
        let strategy = opts.strategy.unwrap_or(self.inner.opts.strategy);
        if opts.filters.is_empty() {
            // The common case, on every call: a fresh cache entry is served as it is.
            let mut state = self.state();
            if state.watching {
                if let Some(c) = state.cache.get(service) {
                    if c.fetched.elapsed() < self.inner.opts.cache_ttl {
                        let (pool, turn) = (c.pool.clone(), c.turn.clone());
                        return Self::picker(&mut state, service, pool, Some(turn), strategy);
                    }
                }
            }
        }
        let mut services = self.services(service).await?;
        for f in &opts.filters {
            services = f.apply(services);
        }
        let mut state = self.state();
        let state = &mut *state;
        let pool = Pool::new(&services, &mut state.in_flight);
        Self::picker(state, service, pool, None, strategy)
    }

    fn mark(&self, _service: &str, node: &Node, outcome: Outcome) {
        let mut state = self.state();
        if let Some(n) = state.in_flight.get(&node.id) {
            // Saturating: a mark without a pick must not wrap around.
            let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
        match outcome {
            Outcome::Success => {
                state.ejected.remove(&node.id);
            }
            Outcome::Failure => {
                let until = Instant::now() + self.inner.opts.eject_for;
                state.ejected.insert(node.id.clone(), until);
            }
        }
    }

    fn reset(&self, service: Option<&str>) {
        let mut state = self.state();
        match service {
            Some(s) => {
                state.cache.remove(s);
            }
            None => state.cache.clear(),
        }
    }
}

/// Picks among a snapshot of nodes.
#[derive(Debug)]
struct NodePicker {
    pool: Arc<Pool>,
    /// Whether each node of the pool is ejected; empty when none is.
    ejected: Vec<bool>,
    /// The pool index returned first, and those returned after it (retries are rare: the
    /// first pick allocates nothing).
    first: Option<usize>,
    tried: Vec<usize>,
    strategy: Strategy,
    counter: Arc<AtomicUsize>,
}

impl NodePicker {
    /// One of `len` candidates (`at(k)` is the pool index of candidate `k`), by the strategy.
    fn choose(&self, len: usize, at: impl Fn(usize) -> usize) -> usize {
        match self.strategy {
            Strategy::Random => at(rand::rng().random_range(0..len)),
            Strategy::RoundRobin => at(self.counter.fetch_add(1, Ordering::Relaxed) % len),
            Strategy::LeastInFlight => {
                let mut rng = rand::rng();
                let a = at(rng.random_range(0..len));
                let b = at(rng.random_range(0..len));
                let load = |i: usize| self.pool.in_flight[i].load(Ordering::Relaxed);
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        }
    }
}

impl Picker for NodePicker {
    fn pick(&mut self) -> Result<Arc<Node>> {
        let n = self.pool.nodes.len();
        let chosen = if self.first.is_none() && self.ejected.is_empty() {
            // The first pick with nothing ejected: every node is a candidate, no list needed.
            self.choose(n, |i| i)
        } else {
            // Prefer nodes neither ejected nor tried; relax each rule when it leaves nothing.
            let is_ejected = |i: usize| self.ejected.get(i).copied().unwrap_or(false);
            let was_tried = |i: usize| self.first == Some(i) || self.tried.contains(&i);
            let mut candidates: Vec<usize> = (0..n)
                .filter(|&i| !is_ejected(i) && !was_tried(i))
                .collect();
            if candidates.is_empty() {
                candidates = (0..n).filter(|&i| !was_tried(i)).collect();
            }
            if candidates.is_empty() {
                self.first = None;
                self.tried.clear();
                candidates = (0..n).collect();
            }
            self.choose(candidates.len(), |k| candidates[k])
        };
        self.pool.in_flight[chosen].fetch_add(1, Ordering::Relaxed);
        match self.first {
            None => self.first = Some(chosen),
            Some(_) => self.tried.push(chosen),
        }
        Ok(self.pool.nodes[chosen].clone())
    }
}

/// A picker for a direct-address call: always that address.
#[derive(Debug)]
pub(crate) struct DirectPicker(Arc<Node>);

impl DirectPicker {
    pub(crate) fn new(address: &str) -> Self {
        DirectPicker(Arc::new(Node {
            id: address.to_string(),
            address: address.to_string(),
            ..Default::default()
        }))
    }
}

impl Picker for DirectPicker {
    fn pick(&mut self) -> Result<Arc<Node>> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;
    use micro_core::registry::RegisterOptions;

    fn service(version: &str, ids: &[&str]) -> Service {
        let mut s = Service::new("greeter", version);
        for id in ids {
            let mut n = Node {
                id: id.to_string(),
                address: format!("{id}:1"),
                ..Default::default()
            };
            n.metadata.insert("zone".into(), format!("z-{id}"));
            s.nodes.push(n);
        }
        s
    }

    async fn setup(ids: &[&str], strategy: Strategy) -> (MemoryRegistry, RegistrySelector) {
        let reg = MemoryRegistry::new();
        reg.register(&service("latest", ids), RegisterOptions::default())
            .await
            .expect("register");
        let opts = SelectorOptions {
            strategy,
            ..Default::default()
        };
        let sel = RegistrySelector::new(Arc::new(reg.clone()), opts);
        (reg, sel)
    }

    #[tokio::test]
    async fn round_robin_visits_every_node_in_turn() {
        let (_reg, sel) = setup(&["a", "b", "c"], Strategy::RoundRobin).await;
        let mut seen = Vec::new();
        for _ in 0..6 {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            seen.push(p.pick().expect("node").id.clone());
        }
        assert_eq!(&seen[0..3].iter().collect::<HashSet<_>>().len(), &3);
        assert_eq!(seen[0..3], seen[3..6]);
    }

    #[tokio::test]
    async fn a_retry_goes_to_another_node() {
        let (_reg, sel) = setup(&["a", "b"], Strategy::Random).await;
        for _ in 0..20 {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            let first = p.pick().expect("node");
            let second = p.pick().expect("node");
            assert_ne!(first.id, second.id);
        }
    }

    #[tokio::test]
    async fn failed_nodes_are_ejected_then_readmitted() {
        let reg = MemoryRegistry::new();
        reg.register(&service("latest", &["a", "b"]), RegisterOptions::default())
            .await
            .expect("register");
        let sel = RegistrySelector::new(
            Arc::new(reg),
            SelectorOptions {
                eject_for: Duration::from_millis(300),
                ..Default::default()
            },
        );
        let a = Node {
            id: "a".into(),
            ..Default::default()
        };
        sel.mark("greeter", &a, Outcome::Failure);
        for _ in 0..20 {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            assert_eq!(p.pick().expect("node").id, "b");
        }
        // Re-admission: wait (bounded) until `a` is picked again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            if p.pick().expect("node").id == "a" {
                break;
            }
            assert!(Instant::now() < deadline, "node a was never re-admitted");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn least_in_flight_avoids_the_busy_node() {
        let (_reg, sel) = setup(&["a", "b"], Strategy::LeastInFlight).await;
        // Keep `a` busy: pick it many times without marking.
        let mut busy = 0;
        while busy < 50 {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            if p.pick().expect("node").id == "a" {
                busy += 1;
            } else {
                let b = Node {
                    id: "b".into(),
                    ..Default::default()
                };
                sel.mark("greeter", &b, Outcome::Success);
            }
        }
        for _ in 0..20 {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            let n = p.pick().expect("node");
            // Two choices among two nodes: b wins unless both draws hit a.
            if n.id == "b" {
                sel.mark("greeter", &n, Outcome::Success);
                return;
            }
        }
        panic!("the idle node was never chosen");
    }

    #[tokio::test]
    async fn filters_by_version_label_and_endpoint() {
        let reg = MemoryRegistry::new();
        let mut v1 = service("v1", &["a"]);
        v1.endpoints.push(micro_core::Endpoint {
            name: "Greeter.Hello".into(),
            ..Default::default()
        });
        reg.register(&v1, RegisterOptions::default())
            .await
            .expect("register");
        reg.register(&service("v2", &["b", "c"]), RegisterOptions::default())
            .await
            .expect("register");
        let sel = RegistrySelector::new(Arc::new(reg), SelectorOptions::default());
        let pick = |filters: Vec<Filter>| {
            let sel = sel.clone();
            async move {
                let opts = SelectOptions {
                    filters,
                    strategy: None,
                };
                sel.select("greeter", &opts)
                    .await
                    .map(|mut p| p.pick().expect("node").id.clone())
            }
        };
        assert_eq!(
            pick(vec![Filter::Version("v1".into())]).await.expect("v1"),
            "a"
        );
        assert_eq!(
            pick(vec![Filter::Label("zone".into(), "z-c".into())])
                .await
                .expect("label"),
            "c"
        );
        assert_eq!(
            pick(vec![Filter::Endpoint("Greeter.Hello".into())])
                .await
                .expect("endpoint"),
            "a"
        );
        let none = pick(vec![Filter::Version("v9".into())])
            .await
            .expect_err("no v9");
        assert_eq!(none.code, 404);
    }

    #[tokio::test]
    async fn watch_removes_a_deregistered_node_from_the_pool() {
        let (reg, sel) = setup(&["a", "b"], Strategy::RoundRobin).await;
        sel.select("greeter", &SelectOptions::default())
            .await
            .expect("prime the cache");
        reg.deregister(&service("latest", &["a"]))
            .await
            .expect("deregister");
        let deadline = Instant::now() + Duration::from_secs(5);
        'wait: loop {
            for _ in 0..4 {
                let mut p = sel
                    .select("greeter", &SelectOptions::default())
                    .await
                    .expect("select");
                if p.pick().expect("node").id == "a" {
                    assert!(Instant::now() < deadline, "node a stayed in the pool");
                    tokio::task::yield_now().await;
                    continue 'wait;
                }
            }
            break;
        }
    }

    #[tokio::test]
    async fn watch_adds_a_registered_node_to_the_pool() {
        let (reg, sel) = setup(&["a"], Strategy::RoundRobin).await;
        sel.select("greeter", &SelectOptions::default())
            .await
            .expect("prime the cache");
        reg.register(&service("latest", &["b"]), RegisterOptions::default())
            .await
            .expect("register");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            if p.pick().expect("node").id == "b" {
                break;
            }
            assert!(Instant::now() < deadline, "node b never joined the pool");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn unknown_service_is_404() {
        let (_reg, sel) = setup(&["a"], Strategy::Random).await;
        let err = sel
            .select("nope", &SelectOptions::default())
            .await
            .expect_err("unknown");
        assert_eq!(err.code, 404);
        assert!(err.detail.contains("nope"));
    }
}
