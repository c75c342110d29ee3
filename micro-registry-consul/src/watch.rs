//! Watches: blocking queries on the health endpoint of a service (and on the catalog for all
//! services), turned into create/update/delete events by diffing the node sets.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use micro_core::registry::{Event, EventKind, Watcher};
use micro_core::{Result, Service};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::client::{Block, ConsulHttp};
use crate::registry::services_of;

/// Events not yet taken by the consumer; a slow consumer holds the queries back.
const QUEUE: usize = 256;
/// Backoff after a failed query: from the first to the last step, doubling.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Baseline lookups of a watch on every service run this many at a time.
const BASELINE_CONCURRENCY: usize = 8;

/// Node id -> the service holding only that node, as last seen.
type Nodes = BTreeMap<String, Service>;
type SharedNodes = Arc<Mutex<Nodes>>;

/// Starts a watch of `service` (or of every service). The current state is read before this
/// returns, so that whatever changes afterwards is reported.
pub(crate) async fn start(
    http: ConsulHttp,
    wait: Duration,
    service: Option<String>,
) -> Result<Watcher> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = match service {
        Some(name) => {
            let (entries, index) = http.health(&name, None).await?;
            let known = nodes(entries, &name, &http);
            let watch = ServiceWatch {
                http,
                name,
                wait,
                known: Arc::new(Mutex::new(known)),
                report_errors: true,
            };
            tokio::spawn(watch.run(index, tx)).abort_handle()
        }
        None => {
            let (catalog, index) = http.catalog(None).await?;
            let baselines = futures_util::stream::iter(catalog.into_keys())
                .map(|name| {
                    let http = http.clone();
                    async move {
                        let baseline = http.health(&name, None).await;
                        (name, baseline)
                    }
                })
                .buffer_unordered(BASELINE_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            let mut start = Vec::with_capacity(baselines.len());
            for (name, baseline) in baselines {
                let (entries, index) = baseline?;
                let known = nodes(entries, &name, &http);
                start.push((name, known, index));
            }
            tokio::spawn(all_services(http, wait, start, index, tx)).abort_handle()
        }
    };
    Ok(Box::pin(EventStream { rx, task }))
}

/// The consumer's end: dropping it stops the queries.
struct EventStream {
    rx: mpsc::Receiver<Result<Event>>,
    task: AbortHandle,
}

impl Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn nodes(entries: Vec<crate::client::HealthEntry>, name: &str, http: &ConsulHttp) -> Nodes {
    let mut out = Nodes::new();
    for service in services_of(entries, name, http.label()) {
        for node in &service.nodes {
            let mut one = service.clone();
            one.nodes = vec![node.clone()];
            out.insert(node.id.clone(), one);
        }
    }
    out
}

/// The events that turn `known` into `now`; `known` becomes `now`.
fn diff(known: &mut Nodes, now: Nodes) -> Vec<Event> {
    let mut events = Vec::new();
    for (id, service) in &now {
        let kind = match known.get(id) {
            None => EventKind::Create,
            Some(old) if old != service => EventKind::Update,
            Some(_) => continue,
        };
        events.push(Event {
            kind,
            service: service.clone(),
        });
    }
    for (id, service) in known.iter() {
        if !now.contains_key(id) {
            events.push(Event {
                kind: EventKind::Delete,
                service: service.clone(),
            });
        }
    }
    *known = now;
    events
}

fn lock(nodes: &SharedNodes) -> MutexGuard<'_, Nodes> {
    nodes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The index for the next blocking query. An index that went backwards (the agent restarted or
/// a snapshot was restored) starts over with a plain read, as Consul's docs advise.
fn next_index(previous: u64, answered: u64) -> u64 {
    if answered < previous {
        0
    } else {
        answered.max(1)
    }
}

struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(FIRST_BACKOFF)
    }

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        now
    }
}

/// A quick answer that changed nothing: an agent not honouring `index` would otherwise spin.
async fn pace(started: Instant, unchanged: bool) {
    if unchanged && started.elapsed() < Duration::from_millis(50) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The health watch of one service.
struct ServiceWatch {
    http: ConsulHttp,
    name: String,
    wait: Duration,
    known: SharedNodes,
    /// False under a watch of every service, whose catalog query reports outages once.
    report_errors: bool,
}

impl ServiceWatch {
    async fn run(self, mut index: u64, tx: mpsc::Sender<Result<Event>>) {
        let mut backoff = Backoff::new();
        loop {
            let started = Instant::now();
            let block = Block {
                index,
                wait: self.wait,
            };
            match self.http.health(&self.name, Some(block)).await {
                Ok((entries, answered)) => {
                    backoff = Backoff::new();
                    let now = nodes(entries, &self.name, &self.http);
                    let events = diff(&mut lock(&self.known), now);
                    for event in events {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    pace(started, answered == index).await;
                    index = next_index(index, answered);
                }
                Err(e) => {
                    if self.report_errors {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    } else {
                        tracing::debug!("watch of {}: {e}", self.name);
                    }
                    // After an outage, read the state afresh rather than block on an old index.
                    index = 0;
                    tokio::time::sleep(backoff.next()).await;
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    }
}

/// The watch of every service: a blocking query on the catalog's service list, and a health
/// watch per service in it. A service that leaves the catalog has its last nodes deleted.
async fn all_services(
    http: ConsulHttp,
    wait: Duration,
    start: Vec<(String, Nodes, u64)>,
    mut index: u64,
    tx: mpsc::Sender<Result<Event>>,
) {
    // Dropping the JoinSet (when this task is aborted) aborts every per-service watch.
    let mut tasks = JoinSet::new();
    let mut watched: HashMap<String, (AbortHandle, SharedNodes)> = HashMap::new();
    let spawn = |tasks: &mut JoinSet<()>, name: String, known: Nodes, index: u64| {
        let known = Arc::new(Mutex::new(known));
        let watch = ServiceWatch {
            http: http.clone(),
            name: name.clone(),
            wait,
            known: known.clone(),
            report_errors: false,
        };
        let handle = tasks.spawn(watch.run(index, tx.clone()));
        (name, (handle, known))
    };
    for (name, known, service_index) in start {
        let (name, entry) = spawn(&mut tasks, name, known, service_index);
        watched.insert(name, entry);
    }
    let mut backoff = Backoff::new();
    loop {
        let started = Instant::now();
        match http.catalog(Some(Block { index, wait })).await {
            Ok((catalog, answered)) => {
                backoff = Backoff::new();
                for name in catalog.keys() {
                    if !watched.contains_key(name) {
                        let (name, entry) = spawn(&mut tasks, name.clone(), Nodes::new(), 0);
                        watched.insert(name, entry);
                    }
                }
                let gone: Vec<String> = watched
                    .keys()
                    .filter(|name| !catalog.contains_key(*name))
                    .cloned()
                    .collect();
                for name in gone {
                    let Some((handle, known)) = watched.remove(&name) else {
                        continue;
                    };
                    handle.abort();
                    let events = diff(&mut lock(&known), Nodes::new());
                    for event in events {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                while tasks.try_join_next().is_some() {}
                pace(started, answered == index).await;
                index = next_index(index, answered);
            }
            Err(e) => {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                index = 0;
                tokio::time::sleep(backoff.next()).await;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_core::Node;

    fn one(id: &str, zone: &str) -> (String, Service) {
        let mut s = Service::new("greeter", "latest");
        s.nodes.push(Node {
            id: id.into(),
            address: "10.0.0.1:1".into(),
            metadata: [("zone".to_string(), zone.to_string())].into(),
        });
        (id.to_string(), s)
    }

    #[test]
    fn diff_reports_create_update_delete() {
        let mut known = Nodes::new();
        let events = diff(&mut known, [one("a", "z1"), one("b", "z1")].into());
        assert!(events.iter().all(|e| e.kind == EventKind::Create));
        assert_eq!(events.len(), 2);
        let events = diff(&mut known, [one("a", "z2"), one("b", "z1")].into());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Update);
        assert_eq!(events[0].service.nodes[0].metadata["zone"], "z2");
        let events = diff(&mut known, [one("b", "z1")].into());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Delete);
        assert_eq!(events[0].service.nodes[0].id, "a");
        assert!(diff(&mut known, [one("b", "z1")].into()).is_empty());
    }

    #[test]
    fn indexes_reset_when_they_go_backwards() {
        assert_eq!(next_index(0, 10), 10);
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(12, 3), 0);
        assert_eq!(next_index(0, 0), 1);
    }

    #[test]
    fn backoff_is_bounded() {
        let mut b = Backoff::new();
        let steps: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert_eq!(steps[0], FIRST_BACKOFF);
        assert_eq!(steps[9], MAX_BACKOFF);
    }
}
