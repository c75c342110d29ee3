//! An in-memory registry, for tests and single-process use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_core::registry::{Event, EventKind, RegisterOptions, Watcher};
use micro_core::{Error, Registry, Result, Service};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// Keeps services in this process's memory. Nodes expire after their register TTL, with a
/// delete event, like in the networked registries.
#[derive(Debug, Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

/// Service name -> node id -> (the service holding only that node, its expiry).
type Entries = HashMap<String, HashMap<String, (Service, Instant)>>;

#[derive(Debug)]
struct Inner {
    services: Mutex<Entries>,
    events: broadcast::Sender<Event>,
    reaper: Mutex<bool>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MemoryRegistry {
            inner: Arc::new(Inner {
                services: Mutex::new(HashMap::new()),
                events: broadcast::channel(1024).0,
                reaper: Mutex::new(false),
            }),
        }
    }

    fn services(&self) -> MutexGuard<'_, Entries> {
        self.inner
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start_reaper(&self) {
        let mut started = self
            .inner
            .reaper
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *started {
            return;
        }
        *started = true;
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                MemoryRegistry { inner }.expire(Instant::now());
            }
        });
    }

    fn expire(&self, now: Instant) {
        let mut gone = Vec::new();
        {
            let mut services = self.services();
            for nodes in services.values_mut() {
                nodes.retain(|_, (svc, until)| {
                    let keep = *until > now;
                    if !keep {
                        gone.push(svc.clone());
                    }
                    keep
                });
            }
            services.retain(|_, nodes| !nodes.is_empty());
        }
        for service in gone {
            let _ = self.inner.events.send(Event {
                kind: EventKind::Delete,
                service,
            });
        }
    }
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    fn name(&self) -> &str {
        "memory"
    }

    async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
        if service.name.is_empty() {
            return Err(Error::bad_request(
                "micro.registry.memory",
                "a service needs a name",
            ));
        }
        self.start_reaper();
        let until = Instant::now() + opts.ttl;
        let mut events = Vec::new();
        {
            let mut services = self.services();
            let nodes = services.entry(service.name.clone()).or_default();
            for node in &service.nodes {
                let mut one = service.clone();
                one.nodes = vec![node.clone()];
                let kind = match nodes.get(&node.id) {
                    None => EventKind::Create,
                    Some(_) => EventKind::Update,
                };
                nodes.insert(node.id.clone(), (one.clone(), until));
                events.push(Event { kind, service: one });
            }
        }
        for e in events {
            let _ = self.inner.events.send(e);
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        let mut events = Vec::new();
        {
            let mut services = self.services();
            if let Some(nodes) = services.get_mut(&service.name) {
                for node in &service.nodes {
                    if let Some((one, _)) = nodes.remove(&node.id) {
                        events.push(Event {
                            kind: EventKind::Delete,
                            service: one,
                        });
                    }
                }
                if nodes.is_empty() {
                    services.remove(&service.name);
                }
            }
        }
        for e in events {
            let _ = self.inner.events.send(e);
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        let now = Instant::now();
        let services = self.services();
        let found: Vec<Service> = services
            .get(name)
            .map(|nodes| {
                nodes
                    .values()
                    .filter(|(_, until)| *until > now)
                    .map(|(s, _)| s.clone())
                    .collect()
            })
            .unwrap_or_default();
        if found.is_empty() {
            return Err(Error::not_found(
                "micro.registry.memory",
                format!("service {name} not found"),
            ));
        }
        Ok(Service::merge(found))
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        let services = self.services();
        let all = services
            .values()
            .flat_map(|nodes| nodes.values().map(|(s, _)| s.clone()));
        Ok(Service::merge(all))
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watcher> {
        let only = service.map(str::to_string);
        let stream = BroadcastStream::new(self.inner.events.subscribe()).filter_map(move |e| {
            let item = match e {
                Ok(e) if only.as_ref().is_none_or(|n| *n == e.service.name) => Some(Ok(e)),
                Ok(_) => None,
                Err(lagged) => Some(Err(Error::internal(
                    "micro.registry.memory",
                    format!("watcher fell behind: {lagged}"),
                ))),
            };
            std::future::ready(item)
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_core::Node;

    fn svc(name: &str, node: &str) -> Service {
        let mut s = Service::new(name, "latest");
        s.nodes.push(Node {
            id: node.into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        });
        s
    }

    #[tokio::test]
    async fn register_get_watch_deregister() {
        let r = MemoryRegistry::new();
        let mut w = r.watch(Some("a")).await.expect("watch");
        r.register(&svc("a", "a-1"), RegisterOptions::default())
            .await
            .expect("register");
        r.register(&svc("b", "b-1"), RegisterOptions::default())
            .await
            .expect("register");
        r.register(&svc("a", "a-1"), RegisterOptions::default())
            .await
            .expect("register again");
        assert_eq!(r.get_service("a").await.expect("get")[0].nodes.len(), 1);
        r.deregister(&svc("a", "a-1")).await.expect("deregister");
        r.deregister(&svc("a", "unknown")).await.expect("harmless");
        let kinds: Vec<EventKind> = vec![
            w.next().await.expect("event").expect("ok").kind,
            w.next().await.expect("event").expect("ok").kind,
            w.next().await.expect("event").expect("ok").kind,
        ];
        assert_eq!(
            kinds,
            [EventKind::Create, EventKind::Update, EventKind::Delete]
        );
        assert_eq!(r.get_service("a").await.expect_err("gone").code, 404);
    }

    #[tokio::test]
    async fn nodes_expire_after_their_ttl() {
        let r = MemoryRegistry::new();
        let mut w = r.watch(None).await.expect("watch");
        let opts = RegisterOptions {
            ttl: Duration::from_millis(200),
        };
        r.register(&svc("a", "a-1"), opts).await.expect("register");
        assert_eq!(
            w.next().await.expect("e").expect("ok").kind,
            EventKind::Create
        );
        let deleted = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("the node expires")
            .expect("event")
            .expect("ok");
        assert_eq!(deleted.kind, EventKind::Delete);
        assert!(r.get_service("a").await.is_err());
    }
}
