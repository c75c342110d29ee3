//! The registry-backed selector: a cache of services fed by registry watch, three strategies,
//! filters, and ejection of failing nodes. Over [`StaticAddresses`] (or a DNS resolver, the
//! `micro-selector-dns` crate) instead of a registry, it is the `static` (or `dns`) selector.

mod addresses;

pub use addresses::StaticAddresses;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_core::registry::{Event, EventKind};
use micro_core::selector::{no_nodes, Outcome, Pick, Picker, SelectOptions, Strategy};
use micro_core::{Node, Registry, Result, Selector, Service};
use rand::RngExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
/// reports it. An entry older than [`SelectorOptions::cache_ttl`] keeps being served while one
/// background read (per service, at a time) asks the registry again, so once a service has
/// been found no call waits on the registry; while the registry is unreachable the last known
/// nodes keep being served.
///
/// A service not cached yet is read by that same one read per service: however many calls
/// select it at once, the registry is asked once and they all get its answer (the nodes, or
/// the error). They wait as long as that read, which the registry bounds by its own timeout
/// (etcd's request timeout, mDNS's query timeout, ...). The read runs on its own task, so a
/// caller that gives up (its call timed out or was dropped) neither cancels it for the others
/// nor loses its answer for the cache.
///
/// What it keeps per node (in-flight counters, ejections) and per service (the cache entry,
/// the round-robin turn) is dropped once the node or service has left the registry and no
/// picker or [`Pick`] still refers to it, so churn does not make it grow. The watch task ends
/// when the last clone of the selector is dropped.
#[derive(Debug, Clone)]
pub struct RegistrySelector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Arc<dyn Registry>,
    opts: SelectorOptions,
    state: Mutex<State>,
    /// Cancelled when the selector is dropped. The watch task holds the selector only
    /// weakly, but a weak reference is only looked at when an event arrives: a watch that
    /// stays silent (or a registry that never answers the watch) would keep the task, and
    /// its stream, alive forever without this.
    closed: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

#[derive(Debug, Default)]
struct State {
    cache: HashMap<String, Cached>,
    ejected: HashMap<String, Instant>,
    in_flight: HashMap<String, Arc<AtomicUsize>>,
    round_robin: HashMap<String, Arc<AtomicUsize>>,
    /// The registry read under way for each service (at most one): selections of a service
    /// not cached yet wait on it, and an expired entry is not read twice at once. Its answer
    /// is sent once the cache holds it, and the entry is removed in the same step.
    reading: HashMap<String, watch::Sender<Option<Result<Vec<Service>>>>>,
    watching: bool,
}

impl State {
    /// Forgets what belongs to nodes and services that are gone. Called after every change to
    /// the cache, so that nodes and services coming and going leave nothing behind.
    fn prune(&mut self) {
        // The cache's pools hold every known node's counter and every cached service's turn,
        // and so do live pickers and picks; one held by this map alone belongs to something
        // that has left. Nothing else can take a new reference meanwhile: that is done from
        // these maps, under the same lock.
        self.in_flight.retain(|_, c| Arc::strong_count(c) > 1);
        self.round_robin.retain(|_, c| Arc::strong_count(c) > 1);
        // Ejections are not tied to the cache (a reset must not readmit a failing node), so
        // only expiry and `left` remove them.
        if !self.ejected.is_empty() {
            let now = Instant::now();
            self.ejected.retain(|_, until| *until > now);
        }
    }

    /// Caches what the registry answered for `name`.
    fn store(&mut self, name: &str, services: Vec<Service>) {
        let pool = Pool::new(&services, &mut self.in_flight);
        let turn = self
            .round_robin
            .entry(name.to_string())
            .or_default()
            .clone();
        let fresh: HashSet<&str> = pool.nodes.iter().map(|n| n.id.as_str()).collect();
        // A refresh may have dropped nodes that left without the watch seeing it.
        if let Some(old) = self.cache.get(name) {
            let old = old.pool.clone();
            self.left(
                old.nodes
                    .iter()
                    .map(|n| n.id.as_str())
                    .filter(|id| !fresh.contains(id)),
            );
        }
        drop(fresh);
        self.cache.insert(
            name.to_string(),
            Cached {
                services,
                fetched: Instant::now(),
                pool,
                turn,
            },
        );
        self.prune();
    }

    /// Drops the cache entry of a service the registry no longer knows.
    fn forget(&mut self, name: &str) {
        if let Some(gone) = self.cache.remove(name) {
            self.left(gone.pool.nodes.iter().map(|n| n.id.as_str()));
            drop(gone);
            self.prune();
        }
    }

    /// Forgets the ejections of nodes the registry says have left.
    fn left<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        if !self.ejected.is_empty() {
            for id in ids {
                self.ejected.remove(id);
            }
        }
    }
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
                closed: CancellationToken::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The services called `name`: the cached ones whenever there are some (an expired entry
    /// is read again in the background, once at a time, so no call waits on the registry),
    /// else the answer of the one registry read of `name` under way, started if there is none.
    async fn services(&self, name: &str) -> Result<Vec<Service>> {
        self.ensure_watch();
        let mut answer = {
            let mut state = self.state();
            if let Some(c) = state.cache.get(name) {
                let services = c.services.clone();
                if c.fetched.elapsed() >= self.inner.opts.cache_ttl {
                    self.read(&mut state, name);
                }
                return Ok(services);
            }
            self.read(&mut state, name)
        };
        let answer = answer.wait_for(Option::is_some).await;
        match answer.as_deref() {
            Ok(Some(Ok(services))) => Ok(services.clone()),
            Ok(Some(Err(e))) => Err(e.clone()),
            // The read's task ended without answering: the runtime is shutting down.
            Ok(None) | Err(_) => Err(micro_core::Error::new(
                "micro.selector",
                503,
                format!("looking up {name} in the registry was abandoned"),
            )),
        }
    }

    /// The registry read of `name` under way, or a new one: on a task of its own, holding the
    /// selector weakly (a slow registry must not keep a dropped one alive). An answer replaces
    /// the cached nodes, a 404 drops them, an outage keeps them (stale nodes beat none) until a
    /// later call tries again; whatever it is, it is then sent to the callers waiting for it.
    fn read(&self, state: &mut State, name: &str) -> watch::Receiver<Option<Result<Vec<Service>>>> {
        if let Some(under_way) = state.reading.get(name) {
            return under_way.subscribe();
        }
        let (answer_tx, answer_rx) = watch::channel(None);
        state.reading.insert(name.to_string(), answer_tx.clone());
        let weak = Arc::downgrade(&self.inner);
        let registry = self.inner.registry.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let answer = match registry.get_service(&name).await {
                Err(e) if e.code == 404 => Err(no_nodes(&name)),
                answer => answer,
            };
            with_selector(&weak, |selector| {
                let mut state = selector.state();
                match &answer {
                    Ok(services) => state.store(&name, services.clone()),
                    Err(e) if e.code == 404 => state.forget(&name),
                    Err(e) => {
                        if state.cache.contains_key(&name) {
                            tracing::warn!(service = %name, error = %e, "registry unavailable, using cached nodes");
                        }
                    }
                }
                state.reading.remove(&name);
            });
            // Nobody waiting (every caller was served from the cache, or gave up) is fine.
            let _ = answer_tx.send(Some(answer));
        });
        answer_rx
    }

    /// Caches what the registry answered for `name`.
    fn store(&self, name: &str, services: Vec<Service>) {
        self.state().store(name, services);
    }

    /// Drops the cache entry of a service the registry no longer knows.
    fn forget(&self, name: &str) {
        self.state().forget(name);
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
        tokio::spawn(watch_loop(weak, self.inner.closed.clone()));
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
                // The nodes have left: their ejections go with them.
                for id in &gone {
                    state.ejected.remove(*id);
                }
                if cached.services.is_empty() {
                    // The service has left: forget it (as Go Micro's cache does) rather than
                    // keep an empty entry for every service that ever went away. A select
                    // for it asks the registry again, which answers 404 as the entry would.
                    state.cache.remove(&incoming.name);
                    state.prune();
                    return;
                }
            }
        }
        cached.pool = Pool::new(&cached.services, &mut state.in_flight);
        state.prune();
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

    /// How many entries each internal map holds, for tests that check nothing leaks.
    #[cfg(test)]
    fn sizes(&self) -> Sizes {
        let state = self.state();
        Sizes {
            cache: state.cache.len(),
            ejected: state.ejected.len(),
            in_flight: state.in_flight.len(),
            round_robin: state.round_robin.len(),
            reading: state.reading.len(),
        }
    }

    /// How many callers wait on the registry read of `name` under way.
    #[cfg(test)]
    fn waiting_on(&self, name: &str) -> usize {
        self.state()
            .reading
            .get(name)
            .map_or(0, |r| r.receiver_count())
    }

    /// The calls in flight to the node `id`, as the p2c strategy sees them.
    #[cfg(test)]
    fn in_flight_of(&self, id: &str) -> usize {
        self.state()
            .in_flight
            .get(id)
            .map_or(0, |c| c.load(Ordering::Relaxed))
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

/// Runs `f` on the selector if it still exists; `false` once it has been dropped.
fn with_selector(weak: &Weak<Inner>, f: impl FnOnce(&RegistrySelector)) -> bool {
    match weak.upgrade() {
        Some(inner) => {
            f(&RegistrySelector { inner });
            true
        }
        None => false,
    }
}

/// Reads every cached service again, after the watch may have missed events (it has just
/// started, or it fell behind): a service whose deletes were missed would otherwise stay
/// cached, stale, until something selected it again, and churn would pile such entries up.
/// A service the registry cannot be asked about keeps its (stale) entry. `false` once the
/// selector is gone.
async fn resync(weak: &Weak<Inner>, closed: &CancellationToken) -> bool {
    let Some((registry, names)) = weak.upgrade().map(|inner| {
        let selector = RegistrySelector { inner };
        let names: Vec<String> = selector.state().cache.keys().cloned().collect();
        (selector.inner.registry.clone(), names)
    }) else {
        return false;
    };
    for name in names {
        let answer = tokio::select! {
            biased;
            _ = closed.cancelled() => return false,
            answer = registry.get_service(&name) => answer,
        };
        let alive = with_selector(weak, |selector| match answer {
            Ok(services) => selector.store(&name, services),
            Err(e) if e.code == 404 => selector.forget(&name),
            Err(e) => {
                tracing::debug!(service = %name, error = %e, "cannot re-read a service; keeping it stale");
            }
        });
        if !alive {
            return false;
        }
    }
    true
}

/// Keeps the cache current until the selector is dropped. The selector is held weakly and
/// never across an await, and every wait also watches `closed`, so the task (and the
/// registry's watch stream with it) ends as soon as the selector does, however quiet the
/// registry is.
async fn watch_loop(weak: Weak<Inner>, closed: CancellationToken) {
    let mut failures: u32 = 0;
    loop {
        let Some(registry) = weak.upgrade().map(|inner| inner.registry.clone()) else {
            return;
        };
        let watched = tokio::select! {
            biased;
            _ = closed.cancelled() => return,
            watched = registry.watch(None) => watched,
        };
        match watched {
            Ok(mut events) => {
                failures = 0;
                // Events may have been missed before the watch started.
                if !with_selector(&weak, RegistrySelector::mark_all_stale)
                    || !resync(&weak, &closed).await
                {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        biased;
                        _ = closed.cancelled() => return,
                        next = events.next() => next,
                    };
                    let Some(event) = next else { break };
                    let mut missed = false;
                    let alive = with_selector(&weak, |selector| match event {
                        Ok(e) => selector.apply(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "registry watch reported an error");
                            selector.mark_all_stale();
                            missed = true;
                        }
                    });
                    if !alive || (missed && !resync(&weak, &closed).await) {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(registry = registry.name(), error = %e, "cannot watch the registry; retrying");
                if !with_selector(&weak, RegistrySelector::mark_all_stale) {
                    return;
                }
            }
        }
        failures = failures.saturating_add(1);
        let backoff = Duration::from_millis(100 * u64::from(failures.min(50)));
        tokio::select! {
            biased;
            _ = closed.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
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
        // Only ejection is recorded here: the call's in-flight count is released by its
        // `Pick`, which also covers calls that end with nothing to mark.
        let mut state = self.state();
        match outcome {
            Outcome::Success => {
                if !state.ejected.is_empty() {
                    state.ejected.remove(&node.id);
                }
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
        state.prune();
    }
}

#[cfg(test)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sizes {
    cache: usize,
    ejected: usize,
    in_flight: usize,
    round_robin: usize,
    reading: usize,
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
    fn pick(&mut self) -> Result<Pick> {
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
        match self.first {
            None => self.first = Some(chosen),
            Some(_) => self.tried.push(chosen),
        }
        // Two reference counts taken, nothing allocated: the guard shares the pool's node and
        // counter, and gives the count back when the attempt drops it.
        Ok(Pick::tracked(
            self.pool.nodes[chosen].clone(),
            self.pool.in_flight[chosen].clone(),
        ))
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
    fn pick(&mut self) -> Result<Pick> {
        // No pool to balance over, so nothing to count.
        Ok(Pick::untracked(self.0.clone()))
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
        // Keep `a` busy: hold 50 picks of it, as 50 calls in flight would.
        let mut busy = Vec::new();
        while busy.len() < 50 {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            let pick = p.pick().expect("node");
            if pick.id == "a" {
                busy.push(pick);
            }
        }
        assert_eq!(sel.in_flight_of("a"), 50);
        assert_eq!(
            sel.in_flight_of("b"),
            0,
            "dropped picks of b are not in flight"
        );
        for _ in 0..20 {
            let mut p = sel
                .select("greeter", &SelectOptions::default())
                .await
                .expect("select");
            // Two choices among two nodes: b wins unless both draws hit a.
            if p.pick().expect("node").id == "b" {
                return;
            }
        }
        panic!("the idle node was never chosen");
    }

    #[tokio::test]
    async fn in_flight_falls_when_a_pick_ends_however_it_ends() {
        let (_reg, sel) = setup(&["a"], Strategy::LeastInFlight).await;
        let mut p = sel
            .select("greeter", &SelectOptions::default())
            .await
            .expect("select");
        // Marked: the mark records the outcome, the drop releases the count.
        let marked = p.pick().expect("node");
        assert_eq!(sel.in_flight_of("a"), 1);
        sel.mark("greeter", &marked, Outcome::Success);
        assert_eq!(sel.in_flight_of("a"), 1, "marking does not end the attempt");
        drop(marked);
        assert_eq!(sel.in_flight_of("a"), 0);

        // Cancelled: a task holding the pick across an await is aborted, never marking.
        let held = p.pick().expect("node");
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let _held = held;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        });
        started_rx.await.expect("the task started");
        assert_eq!(sel.in_flight_of("a"), 1);
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        assert_eq!(sel.in_flight_of("a"), 0);

        // Timed out: `tokio::time::timeout` drops the attempt it gave up on.
        let held = p.pick().expect("node");
        let attempt = async move {
            let _held = held;
            std::future::pending::<()>().await
        };
        tokio::time::pause();
        let timed_out = tokio::time::timeout(Duration::from_secs(1), attempt).await;
        assert!(timed_out.is_err());
        assert_eq!(sel.in_flight_of("a"), 0);
    }

    fn named(name: &str, ids: &[String]) -> Service {
        let mut s = Service::new(name, "latest");
        s.nodes = ids
            .iter()
            .map(|id| Node {
                id: id.clone(),
                address: format!("{id}:1"),
                ..Default::default()
            })
            .collect();
        s
    }

    /// Services come, are called (an ejection, a filtered selection), and go again: half one
    /// node at a time, half all at once.
    async fn churn(reg: &MemoryRegistry, sel: &RegistrySelector, rounds: usize) {
        for round in 0..rounds {
            let name = format!("svc-{round}");
            let service = named(&name, &[format!("{name}-a"), format!("{name}-b")]);
            reg.register(&service, RegisterOptions::default())
                .await
                .expect("register");
            let mut p = sel
                .select(&name, &SelectOptions::default())
                .await
                .expect("select");
            let pick = p.pick().expect("node");
            sel.mark(&name, &pick, Outcome::Failure);
            let filtered = SelectOptions {
                filters: vec![Filter::Version("latest".into())],
                strategy: None,
            };
            sel.select(&name, &filtered).await.expect("filtered select");
            drop((pick, p));
            if round % 2 == 0 {
                for id in ["a", "b"] {
                    reg.deregister(&named(&name, &[format!("{name}-{id}")]))
                        .await
                        .expect("deregister");
                }
            } else {
                reg.deregister(&service).await.expect("deregister");
            }
        }
    }

    /// Waits (bounded) until the selector holds nothing at all.
    async fn wait_until_empty(sel: &RegistrySelector) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while sel.sizes() != Sizes::default() {
            assert!(
                Instant::now() < deadline,
                "state left behind: {:?}",
                sel.sizes()
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn state_of_nodes_and_services_that_left_is_pruned() {
        let reg = MemoryRegistry::new();
        let opts = SelectorOptions {
            strategy: Strategy::RoundRobin,
            ..Default::default()
        };
        let sel = RegistrySelector::new(Arc::new(reg.clone()), opts);
        // The watch must be live before the churn, so that the deletes are seen as events:
        // register nodes after the first select until one shows up with no select, which
        // only the watch does.
        let mut probes = vec![named("probe", &["probe-0".into()])];
        reg.register(&probes[0], RegisterOptions::default())
            .await
            .expect("register");
        sel.select("probe", &SelectOptions::default())
            .await
            .expect("prime");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let next = named("probe", &[format!("probe-{}", probes.len())]);
            reg.register(&next, RegisterOptions::default())
                .await
                .expect("register");
            let id = next.nodes[0].id.clone();
            probes.push(next);
            tokio::task::yield_now().await;
            if sel.state().in_flight.contains_key(&id) {
                break;
            }
            assert!(Instant::now() < deadline, "the watch never started");
        }
        churn(&reg, &sel, 40).await;
        for probe in &probes {
            reg.deregister(probe).await.expect("deregister");
        }
        wait_until_empty(&sel).await;
    }

    /// A registry whose watch opens only when the test says so.
    #[derive(Debug)]
    struct Gated {
        inner: MemoryRegistry,
        open: Arc<tokio::sync::Notify>,
    }

    #[async_trait::async_trait]
    impl Registry for Gated {
        fn name(&self) -> &str {
            "gated"
        }
        async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
            self.inner.register(service, opts).await
        }
        async fn deregister(&self, service: &Service) -> Result<()> {
            self.inner.deregister(service).await
        }
        async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
            self.inner.get_service(name).await
        }
        async fn list_services(&self) -> Result<Vec<Service>> {
            self.inner.list_services().await
        }
        async fn watch(&self, service: Option<&str>) -> Result<micro_core::registry::Watcher> {
            self.open.notified().await;
            self.inner.watch(service).await
        }
    }

    #[tokio::test]
    async fn services_that_left_while_the_watch_was_away_are_pruned() {
        let reg = MemoryRegistry::new();
        let open = Arc::new(tokio::sync::Notify::new());
        let gated = Gated {
            inner: reg.clone(),
            open: open.clone(),
        };
        let sel = RegistrySelector::new(Arc::new(gated), SelectorOptions::default());
        // Every delete happens before the watch exists: none is ever seen as an event.
        churn(&reg, &sel, 40).await;
        assert!(
            sel.sizes().cache > 0,
            "the churn left stale entries to prune"
        );
        open.notify_one();
        wait_until_empty(&sel).await;
    }

    /// A registry whose watch never reports anything; it tells the test when a watch starts
    /// (with a receiver that completes when that watch's stream or call is dropped).
    #[derive(Debug)]
    struct Silent {
        inner: MemoryRegistry,
        /// Whether `watch` answers at all, or never returns.
        answers: bool,
        watches: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Receiver<()>>,
    }

    #[async_trait::async_trait]
    impl Registry for Silent {
        fn name(&self) -> &str {
            "silent"
        }
        async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
            self.inner.register(service, opts).await
        }
        async fn deregister(&self, service: &Service) -> Result<()> {
            self.inner.deregister(service).await
        }
        async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
            self.inner.get_service(name).await
        }
        async fn list_services(&self) -> Result<Vec<Service>> {
            self.inner.list_services().await
        }
        async fn watch(&self, _service: Option<&str>) -> Result<micro_core::registry::Watcher> {
            let (alive, ended) = tokio::sync::oneshot::channel::<()>();
            let _ = self.watches.send(ended);
            if !self.answers {
                // Held by this call's future: dropping the future drops it.
                let _held = &alive;
                std::future::pending::<()>().await;
            }
            let silent = futures_util::stream::pending().map(move |event| {
                let _ = &alive;
                event
            });
            Ok(Box::pin(silent))
        }
    }

    async fn watch_ends_with_the_selector(answers: bool) {
        let (tx, mut watches) = tokio::sync::mpsc::unbounded_channel();
        let inner = MemoryRegistry::new();
        inner
            .register(&service("latest", &["a"]), RegisterOptions::default())
            .await
            .expect("register");
        let registry = Silent {
            inner,
            answers,
            watches: tx,
        };
        let sel = RegistrySelector::new(Arc::new(registry), SelectorOptions::default());
        let mut p = sel
            .select("greeter", &SelectOptions::default())
            .await
            .expect("select");
        let wait = Duration::from_secs(5);
        let ended = tokio::time::timeout(wait, watches.recv())
            .await
            .expect("the watch started in time")
            .expect("a watch");
        // A picker outlives its selector, and must not keep the watch alive.
        let _pick = p.pick().expect("node");
        let also = sel.clone();
        drop(sel);
        drop(also);
        tokio::time::timeout(wait, ended)
            .await
            .expect("the watch ended with its selector")
            .expect_err("the watch was dropped, not answered");
        // The task is gone with it: the registry it held is dropped, closing the channel.
        let closed = tokio::time::timeout(wait, watches.recv())
            .await
            .expect("the watch task ended");
        assert!(closed.is_none(), "the task started another watch");
    }

    /// A registry that cannot watch, counts its lookups, and holds them while `held` is set,
    /// until `release` is signalled.
    #[derive(Debug)]
    struct Held {
        inner: MemoryRegistry,
        held: std::sync::atomic::AtomicBool,
        release: tokio::sync::Notify,
        lookups: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Registry for Held {
        fn name(&self) -> &str {
            "held"
        }
        async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
            self.inner.register(service, opts).await
        }
        async fn deregister(&self, service: &Service) -> Result<()> {
            self.inner.deregister(service).await
        }
        async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.held.load(Ordering::SeqCst) {
                self.release.notified().await;
            }
            self.inner.get_service(name).await
        }
        async fn list_services(&self) -> Result<Vec<Service>> {
            self.inner.list_services().await
        }
        async fn watch(&self, _service: Option<&str>) -> Result<micro_core::registry::Watcher> {
            Err(micro_core::Error::new(
                "held",
                503,
                "this registry cannot watch",
            ))
        }
    }

    #[tokio::test]
    async fn an_expired_entry_is_read_again_once_in_the_background() {
        let registry = Arc::new(Held {
            inner: MemoryRegistry::new(),
            held: false.into(),
            release: tokio::sync::Notify::new(),
            lookups: AtomicUsize::new(0),
        });
        registry
            .register(&service("latest", &["a"]), RegisterOptions::default())
            .await
            .expect("register");
        // Every entry is expired as soon as it is read.
        let opts = SelectorOptions {
            cache_ttl: Duration::ZERO,
            ..SelectorOptions::default()
        };
        let sel = RegistrySelector::new(registry.clone(), opts);
        let none = SelectOptions::default();
        sel.select("greeter", &none).await.expect("the first read");
        assert_eq!(registry.lookups.load(Ordering::SeqCst), 1);

        // The registry stops answering: calls keep the nodes they had, and wait for nothing
        // (a call that waited would wait forever here).
        registry.held.store(true, Ordering::SeqCst);
        registry
            .register(&service("latest", &["b"]), RegisterOptions::default())
            .await
            .expect("register b");
        for _ in 0..20 {
            let mut picker =
                tokio::time::timeout(Duration::from_secs(20), sel.select("greeter", &none))
                    .await
                    .expect("no call waits on the registry")
                    .expect("select");
            assert_eq!(picker.pick().expect("a node").id, "a");
        }
        // One read went out for all of them, and it is still held.
        let read = tokio::time::timeout(Duration::from_secs(20), async {
            while registry.lookups.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        });
        read.await.expect("the background read went out");
        assert_eq!(registry.lookups.load(Ordering::SeqCst), 2);

        // Once it answers, its answer is what calls get.
        registry.held.store(false, Ordering::SeqCst);
        registry.release.notify_one();
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let services = sel.services("greeter").await.expect("services");
                if services.iter().flat_map(|s| &s.nodes).any(|n| n.id == "b") {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(found.is_ok(), "the refreshed nodes never arrived");
    }

    /// Twenty selects of `greeter`, which nothing has looked up yet, while the registry holds
    /// its lookups: the node each got, or its error, once the one lookup is released.
    async fn twenty_cold_selects(registered: bool) -> Vec<Result<String>> {
        let registry = Arc::new(Held {
            inner: MemoryRegistry::new(),
            held: true.into(),
            release: tokio::sync::Notify::new(),
            lookups: AtomicUsize::new(0),
        });
        if registered {
            registry
                .register(&service("latest", &["a"]), RegisterOptions::default())
                .await
                .expect("register");
        }
        let sel = RegistrySelector::new(registry.clone(), SelectorOptions::default());
        let selects: Vec<_> = (0..20)
            .map(|_| {
                let sel = sel.clone();
                tokio::spawn(async move {
                    let mut picker = sel.select("greeter", &SelectOptions::default()).await?;
                    picker.pick().map(|node| node.id.clone())
                })
            })
            .collect();
        // Every one of them waits on the same read, which is still held.
        let all_waiting = tokio::time::timeout(Duration::from_secs(20), async {
            while sel.waiting_on("greeter") < 20 {
                tokio::task::yield_now().await;
            }
        });
        all_waiting.await.expect("every select waits on the read");
        assert_eq!(registry.lookups.load(Ordering::SeqCst), 1);

        registry.release.notify_one();
        let mut answers = Vec::new();
        for select in selects {
            let answer = tokio::time::timeout(Duration::from_secs(20), select)
                .await
                .expect("answered once the read is released")
                .expect("the select task");
            answers.push(answer);
        }
        assert_eq!(
            registry.lookups.load(Ordering::SeqCst),
            1,
            "one lookup in all"
        );
        assert_eq!(sel.sizes().reading, 0, "the finished read is forgotten");
        answers
    }

    #[tokio::test]
    async fn concurrent_selects_of_an_uncached_service_share_one_lookup() {
        for answer in twenty_cold_selects(true).await {
            assert_eq!(answer.expect("a node"), "a");
        }
    }

    #[tokio::test]
    async fn concurrent_selects_of_an_unknown_service_share_its_404() {
        for answer in twenty_cold_selects(false).await {
            let err = answer.expect_err("not registered");
            assert_eq!(err.code, 404, "{err}");
            assert!(err.detail.contains("greeter"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_silent_watch_ends_when_the_selector_is_dropped() {
        watch_ends_with_the_selector(true).await;
    }

    #[tokio::test]
    async fn a_watch_that_never_opens_ends_when_the_selector_is_dropped() {
        watch_ends_with_the_selector(false).await;
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
