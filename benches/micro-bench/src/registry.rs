//! Registry propagation: on a private etcd, the time from `register` or `deregister` to the
//! client's cache (a watching `RegistrySelector`) having the change.
//!
//! The selector's registry is wrapped so that its watch stream stamps each event as the
//! selector takes it: the selector applies an event to its cache synchronously, right after
//! taking it from the stream, so the stamp is the moment the cache changes (within
//! microseconds). Every change is then checked through `select()` with a metadata filter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro::core::registry::{EventKind, RegisterOptions, Watcher};
use micro::core::selector::{Filter, SelectOptions};
use micro::core::{Node, Registry, Selector, Service};
use micro::selector::{RegistrySelector, SelectorOptions};
use micro_registry_etcd::testing::EtcdServer;
use micro_registry_etcd::EtcdRegistry;
use tokio::sync::mpsc;

use crate::report::{Section, Table, Target};
use crate::stats::{self, quantile};
use crate::Settings;

/// The service whose nodes come and go.
const SERVICE: &str = "bench.propagation";
/// The metadata key that tells the nodes apart in a `select` filter.
const SEQ: &str = "bench-seq";
/// The propagation goal, in words.
const GOAL: &str = "etcd change to client cache p99 <= 100 ms";
/// The longest a change may take to arrive before the run gives up on it.
const PATIENCE: Duration = Duration::from_secs(10);

/// A node id, when the selector took an event about it, and what happened.
type Stamp = (EventKind, String, Instant);

/// A registry whose watch stream reports when each event is handed to the watcher.
#[derive(Debug)]
struct StampingRegistry {
    inner: EtcdRegistry,
    stamps: mpsc::UnboundedSender<Stamp>,
}

#[micro::async_trait]
impl Registry for StampingRegistry {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn register(&self, service: &Service, opts: RegisterOptions) -> micro::Result<()> {
        self.inner.register(service, opts).await
    }
    async fn deregister(&self, service: &Service) -> micro::Result<()> {
        self.inner.deregister(service).await
    }
    async fn get_service(&self, name: &str) -> micro::Result<Vec<Service>> {
        self.inner.get_service(name).await
    }
    async fn list_services(&self) -> micro::Result<Vec<Service>> {
        self.inner.list_services().await
    }
    async fn watch(&self, service: Option<&str>) -> micro::Result<Watcher> {
        let stamps = self.stamps.clone();
        let events = self.inner.watch(service).await?;
        Ok(Box::pin(events.inspect(move |event| {
            if let Ok(e) = event {
                let now = Instant::now();
                for n in &e.service.nodes {
                    let _ = stamps.send((e.kind, n.id.clone(), now));
                }
            }
        })))
    }
}

/// The service with the one node `i`.
fn service_with(i: usize) -> Service {
    let mut s = Service::new(SERVICE, "latest");
    let mut node = Node {
        id: format!("{SERVICE}-{i}"),
        address: format!("127.0.0.1:{}", 10_000 + i % 50_000),
        ..Default::default()
    };
    node.metadata.insert(SEQ.into(), i.to_string());
    node.metadata.insert("protocol".into(), "mucp".into());
    s.nodes.push(node);
    s
}

/// Runs the propagation measurement and builds the section.
pub(crate) async fn run(settings: &Settings) -> Section {
    let changes = settings.changes;
    let mut section = Section::new(
        "Registry propagation (etcd)",
        format!(
            "A private etcd (`micro_registry_etcd::testing::EtcdServer`) and two \
             `EtcdRegistry` clients: one registers and deregisters nodes, the other feeds a \
             `RegistrySelector` that has looked the service up (so it caches it and watches the \
             registry). Timed: from calling `register` (or `deregister`) until the selector \
             takes the watch event, which it applies to its cache at once; each change is \
             then confirmed with a filtered `select()`. {changes} registrations of new nodes, \
             one at a time, then {changes} deregistrations. The time includes etcd's own work \
             (the lease grant and the put, or the delete) and the watch's delivery."
        ),
    );
    let mut table = Table::new(&["change", "count", "p50", "p99", "max"]);
    let Some(_) = EtcdServer::binary() else {
        section.targets.push(Target {
            goal: GOAL.into(),
            measured: "skipped".into(),
            met: None,
        });
        section.skipped(
            "registry propagation",
            "the etcd binary is not installed (Debian: apt-get install etcd-server)",
        );
        return section;
    };
    let server = match tokio::task::spawn_blocking(EtcdServer::start).await {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => {
            section.failed("registry propagation", format!("cannot start etcd: {e}"));
            return section;
        }
        Err(e) => {
            section.failed(
                "registry propagation",
                format!("starting etcd panicked: {e}"),
            );
            return section;
        }
    };
    match measure(&server, changes).await {
        Ok((up, down)) => {
            let mut all: Vec<Duration> = up.iter().chain(&down).copied().collect();
            all.sort_unstable();
            for (label, samples) in [("register", &up), ("deregister", &down), ("both", &all)] {
                let mut sorted = samples.clone();
                sorted.sort_unstable();
                table.row(vec![
                    label.to_string(),
                    sorted.len().to_string(),
                    stats::latency(quantile(&sorted, 0.50)),
                    stats::latency(quantile(&sorted, 0.99)),
                    stats::latency(sorted.last().copied().unwrap_or_default()),
                ]);
            }
            let p99 = quantile(&all, 0.99);
            section.targets.push(Target {
                goal: GOAL.into(),
                measured: stats::latency(p99),
                met: Some(p99 <= Duration::from_millis(100)),
            });
        }
        Err(e) => {
            section.failed("registry propagation", e);
            section.targets.push(Target {
                goal: GOAL.into(),
                measured: "not measured".into(),
                met: None,
            });
        }
    }
    section.tables.push(table);
    // Stop etcd off the async workers: it waits for the process to exit.
    let _ = tokio::task::spawn_blocking(move || drop(server)).await;
    section
}

/// Waits for the selector to take an event about `id` that `wanted` accepts.
async fn stamp_of(
    stamps: &mut mpsc::UnboundedReceiver<Stamp>,
    id: &str,
    wanted: impl Fn(EventKind) -> bool,
) -> Result<Instant, String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stamps.recv()).await {
            Ok(Some((kind, node, at))) if node == id && wanted(kind) => return Ok(at),
            Ok(Some(_)) => {}
            Ok(None) => return Err("the selector's watch ended".into()),
            Err(_) => {
                return Err(format!(
                    "the selector saw no event for node {id} within {PATIENCE:?}"
                ))
            }
        }
    }
}

/// Whether the selector comes to serve node `i` (`present`) or to leave it out, within a
/// second. The stamp is taken just before the selector applies the event, on another task,
/// so the check may run a moment early.
async fn selector_shows(selector: &RegistrySelector, i: usize, present: bool) -> bool {
    let opts = SelectOptions {
        filters: vec![Filter::Label(SEQ.into(), i.to_string())],
        strategy: None,
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if selector.select(SERVICE, &opts).await.is_ok() == present {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `changes` registrations, then as many deregistrations; their propagation times.
async fn measure(
    server: &EtcdServer,
    changes: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let publisher = EtcdRegistry::new(server.options()).map_err(|e| format!("etcd client: {e}"))?;
    let (tx, mut stamps) = mpsc::unbounded_channel();
    let watched = StampingRegistry {
        inner: EtcdRegistry::new(server.options()).map_err(|e| format!("etcd client: {e}"))?,
        stamps: tx,
    };
    let selector = RegistrySelector::new(Arc::new(watched), SelectorOptions::default());
    let ttl = RegisterOptions {
        ttl: Duration::from_secs(120),
    };

    // A first node, so the selector can look the service up, cache it and start watching;
    // then a probe node, seen through the watch once the watch runs.
    let anchor = service_with(1_000_000);
    publisher
        .register(&anchor, ttl)
        .await
        .map_err(|e| format!("register: {e}"))?;
    selector
        .select(SERVICE, &SelectOptions::default())
        .await
        .map_err(|e| format!("first select: {e}"))?;
    let deadline = Instant::now() + PATIENCE;
    let probe = service_with(1_000_001);
    loop {
        publisher
            .register(&probe, ttl)
            .await
            .map_err(|e| format!("register: {e}"))?;
        let id = &probe.nodes[0].id;
        match tokio::time::timeout(
            Duration::from_millis(500),
            stamp_of(&mut stamps, id, |_| true),
        )
        .await
        {
            Ok(Ok(_)) => break,
            _ if Instant::now() < deadline => continue,
            _ => return Err("the selector's registry watch never started".into()),
        }
    }

    let mut up = Vec::with_capacity(changes);
    for i in 0..changes {
        let s = service_with(i);
        let t0 = Instant::now();
        publisher
            .register(&s, ttl)
            .await
            .map_err(|e| format!("register node {i}: {e}"))?;
        let at = stamp_of(&mut stamps, &s.nodes[0].id, |k| k != EventKind::Delete).await?;
        up.push(at.saturating_duration_since(t0));
        if !selector_shows(&selector, i, true).await {
            return Err(format!(
                "the selector took the event for node {i} but does not serve the node"
            ));
        }
    }
    let mut down = Vec::with_capacity(changes);
    for i in 0..changes {
        let s = service_with(i);
        let t0 = Instant::now();
        publisher
            .deregister(&s)
            .await
            .map_err(|e| format!("deregister node {i}: {e}"))?;
        let at = stamp_of(&mut stamps, &s.nodes[0].id, |k| k == EventKind::Delete).await?;
        down.push(at.saturating_duration_since(t0));
        if !selector_shows(&selector, i, false).await {
            return Err(format!(
                "the selector took the deletion of node {i} but still serves the node"
            ));
        }
    }
    let _ = publisher.deregister(&anchor).await;
    let _ = publisher.deregister(&probe).await;
    Ok((up, down))
}
