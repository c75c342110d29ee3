//! Watching: pod changes become create, update and delete events of the services they carry.
//!
//! The watch lists the matching pods once (before [`start`] returns, so that every change after
//! it is reported), then follows the API server's watch from that resource version. It keeps
//! the nodes it has seen per pod and, on every pod change, compares the nodes that are now live
//! with the ones before: new nodes are creates, changed ones updates, vanished ones deletes. A
//! pod that leaves Running, is deleted, or stops matching the selector takes its nodes with it,
//! and a node whose TTL runs out is deleted at that moment. After an error the watch reports
//! it, waits, lists again (reporting what changed meanwhile) and goes on.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};
use micro_core::registry::{Event, EventKind, Watcher};
use micro_core::{Error, Result, Service};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::Conn;
use crate::format::{
    pod_name, read_pod, selector_label, unix_now, NodeEntry, SERVICE_VALUE, TYPE_LABEL,
};

/// How long after a failure the watch tries again, at first and at most.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Silence beyond the watch's own timeout after which the connection is presumed dead.
const IDLE_SLACK: Duration = Duration::from_secs(15);

/// A node's identity in a watch: (pod, service name, node id).
type NodeKey = (String, String, String);

/// Starts watching `only` (or every service): lists the pods now, then follows changes in a
/// task that ends when the returned stream is dropped.
pub(crate) async fn start(
    conn: Conn,
    only: Option<&str>,
    watch_timeout: Duration,
) -> Result<Watcher> {
    let selector = match only {
        Some(name) => format!("{}={SERVICE_VALUE}", selector_label(name)),
        None => format!("{TYPE_LABEL}={SERVICE_VALUE}"),
    };
    let mut state = PodWatch {
        conn,
        selector,
        only: only.map(str::to_string),
        watch_timeout,
        pods: HashMap::new(),
        live: BTreeMap::new(),
        version: String::new(),
    };
    // The initial state is not reported: a watch tells what changes from now on.
    let _ = state.relist().await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(state.run(tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Box::pin(stream))
}

struct PodWatch {
    conn: Conn,
    selector: String,
    only: Option<String>,
    watch_timeout: Duration,
    /// The nodes each matching pod carries, live or expired (none when not Running).
    pods: HashMap<String, Vec<NodeEntry>>,
    /// The nodes reported as present.
    live: BTreeMap<NodeKey, Service>,
    /// The resource version the next watch starts from.
    version: String,
}

/// Why the inner loop stopped.
enum Next {
    /// The stream ended normally: watch again from the last version.
    Rewatch,
    /// Something failed: report, wait, list again.
    Failed(Error),
    /// The version to resume from is too old (410 Gone): list again, nothing to report.
    Expired,
    /// The receiver is gone.
    Stop,
}

impl PodWatch {
    async fn run(mut self, tx: mpsc::Sender<Result<Event>>) {
        let mut retry = RETRY_FIRST;
        let mut must_relist = false;
        loop {
            if must_relist {
                match self.relist().await {
                    Ok(events) => {
                        if !send_all(&tx, events).await {
                            return;
                        }
                    }
                    Err(e) => {
                        if !self.fail(&tx, e, &mut retry).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            match self.follow(&tx).await {
                Next::Stop => return,
                Next::Rewatch => {
                    must_relist = false;
                    retry = RETRY_FIRST;
                }
                Next::Expired => must_relist = true,
                Next::Failed(e) => {
                    must_relist = true;
                    if !self.fail(&tx, e, &mut retry).await {
                        return;
                    }
                }
            }
        }
    }

    /// Reports `e`, then waits before the next attempt. False when the receiver is gone.
    async fn fail(&self, tx: &mpsc::Sender<Result<Event>>, e: Error, retry: &mut Duration) -> bool {
        tracing::debug!(error = %e, "kubernetes watch failed; retrying in {retry:?}");
        if tx.send(Err(e)).await.is_err() {
            return false;
        }
        tokio::select! {
            _ = tx.closed() => return false,
            _ = tokio::time::sleep(*retry) => {}
        }
        *retry = (*retry * 2).min(RETRY_MAX);
        true
    }

    /// Lists the pods again; returns the events that take the previous state to the new one.
    async fn relist(&mut self) -> Result<Vec<Event>> {
        let doing = format!(
            "watching (listing pods with {} in namespace {})",
            self.selector, self.conn.namespace
        );
        let params = ListParams::default().labels(&self.selector);
        let list = self.conn.call(&doing, self.conn.pods.list(&params)).await?;
        self.version = list.metadata.resource_version.unwrap_or_default();
        self.pods = list
            .items
            .iter()
            .map(|p| (pod_name(p).to_string(), read_pod(p, self.only.as_deref())))
            .collect();
        Ok(self.refresh())
    }

    /// Follows one watch request until it ends, fails or nobody listens.
    async fn follow(&mut self, tx: &mpsc::Sender<Result<Event>>) -> Next {
        let doing = format!(
            "watching pods with {} in namespace {}",
            self.selector, self.conn.namespace
        );
        let secs = self.watch_timeout.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        let params = WatchParams::default().labels(&self.selector).timeout(secs);
        let call = self.conn.pods.watch(&params, &self.version);
        let stream = match tokio::time::timeout(self.conn.timeout, call).await {
            Ok(Ok(s)) => s,
            Ok(Err(kube::Error::Api(status))) if status.code == 410 => return Next::Expired,
            Ok(Err(e)) => return Next::Failed(self.conn.error(&doing, &e)),
            Err(_) => {
                return Next::Failed(Error::timeout(
                    crate::ID,
                    format!(
                        "{}: {doing}: no answer within {:?}",
                        self.conn.at(),
                        self.conn.timeout
                    ),
                ))
            }
        };
        let mut stream = std::pin::pin!(stream);
        let idle = self.watch_timeout + IDLE_SLACK;
        loop {
            let expiry = self.next_expiry();
            let item = tokio::select! {
                _ = tx.closed() => return Next::Stop,
                _ = sleep_until(expiry) => {
                    let events = self.refresh();
                    if !send_all(tx, events).await {
                        return Next::Stop;
                    }
                    continue;
                }
                item = tokio::time::timeout(idle, stream.next()) => item,
            };
            let event = match item {
                Err(_) => {
                    return Next::Failed(Error::new(
                        crate::ID,
                        503,
                        format!("{}: {doing}: silent for {idle:?}", self.conn.at()),
                    ))
                }
                Ok(None) => return Next::Rewatch,
                Ok(Some(Err(e))) => return Next::Failed(self.conn.error(&doing, &e)),
                Ok(Some(Ok(event))) => event,
            };
            match event {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    self.remember_version(&pod);
                    let entries = read_pod(&pod, self.only.as_deref());
                    self.pods.insert(pod_name(&pod).to_string(), entries);
                }
                WatchEvent::Deleted(pod) => {
                    self.remember_version(&pod);
                    self.pods.remove(pod_name(&pod));
                }
                WatchEvent::Bookmark(mark) => {
                    self.version = mark.metadata.resource_version;
                    continue;
                }
                // 410 Gone: the version is too old to resume from.
                WatchEvent::Error(status) if status.code == 410 => return Next::Expired,
                WatchEvent::Error(status) => {
                    let e = Error::new(
                        crate::ID,
                        503,
                        format!(
                            "{}: {doing}: {} {}: {}",
                            self.conn.at(),
                            status.code,
                            status.reason,
                            status.message
                        ),
                    );
                    return Next::Failed(e);
                }
            }
            let events = self.refresh();
            if !send_all(tx, events).await {
                return Next::Stop;
            }
        }
    }

    fn remember_version(&mut self, pod: &Pod) {
        if let Some(v) = &pod.metadata.resource_version {
            self.version = v.clone();
        }
    }

    /// The earliest expiry still ahead, as an instant.
    fn next_expiry(&self) -> Option<Instant> {
        let now = unix_now();
        let next = self
            .pods
            .values()
            .flatten()
            .filter_map(|e| e.expires)
            .filter(|e| *e > now)
            .fold(None, |min: Option<f64>, e| {
                Some(min.map_or(e, |m| m.min(e)))
            })?;
        Some(Instant::now() + Duration::from_secs_f64(next - now))
    }

    /// Recomputes the live nodes and returns what changed.
    fn refresh(&mut self) -> Vec<Event> {
        let now = unix_now();
        let mut live = BTreeMap::new();
        for (pod, entries) in &self.pods {
            for e in entries.iter().filter(|e| e.alive(now)) {
                if let Some(node) = e.service.nodes.first() {
                    let key = (pod.clone(), e.service.name.clone(), node.id.clone());
                    live.insert(key, e.service.clone());
                }
            }
        }
        let mut events = Vec::new();
        for (key, service) in &live {
            match self.live.get(key) {
                None => events.push(Event {
                    kind: EventKind::Create,
                    service: service.clone(),
                }),
                Some(before) if before != service => events.push(Event {
                    kind: EventKind::Update,
                    service: service.clone(),
                }),
                Some(_) => {}
            }
        }
        for (key, service) in &self.live {
            if !live.contains_key(key) {
                events.push(Event {
                    kind: EventKind::Delete,
                    service: service.clone(),
                });
            }
        }
        self.live = live;
        events
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        // A little after, so that the node counts as expired when we look.
        Some(d) => tokio::time::sleep_until(d + Duration::from_millis(5)).await,
        None => std::future::pending().await,
    }
}

/// Sends `events`; false when the receiver is gone.
async fn send_all(tx: &mpsc::Sender<Result<Event>>, events: Vec<Event>) -> bool {
    for e in events {
        if tx.send(Ok(e)).await.is_err() {
            return false;
        }
    }
    true
}
