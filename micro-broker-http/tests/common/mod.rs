//! What the tests share: a small in-memory registry, a collecting handler and a raw HTTP/1.1
//! client.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_core::broker::{Delivery, Handler, Message};
use micro_core::registry::{Event, EventKind, RegisterOptions, Watcher};
use micro_core::{Broker, Error, Registry, Result, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

/// How long any single wait in these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// (service name, version, node id) -> the service holding only that node.
type Entries = BTreeMap<(String, String, String), Service>;

/// A registry in this process's memory, counting lookups. TTLs are ignored: the tests
/// deregister what they register.
#[derive(Debug, Clone)]
pub struct TestRegistry {
    entries: Arc<Mutex<Entries>>,
    events: broadcast::Sender<Event>,
    lookups: Arc<AtomicUsize>,
    /// Told of every `get_service` call.
    lookup_made: Arc<tokio::sync::Notify>,
    failing: Arc<AtomicBool>,
    lookup_delay: Arc<Mutex<Duration>>,
}

impl TestRegistry {
    pub fn new() -> Self {
        init_logs();
        TestRegistry {
            entries: Arc::default(),
            events: broadcast::channel(1024).0,
            lookups: Arc::default(),
            lookup_made: Arc::default(),
            failing: Arc::default(),
            lookup_delay: Arc::default(),
        }
    }

    /// How many `get_service` calls were made.
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Waits until `get_service` was called at least `n` times.
    pub async fn until_lookups(&self, n: usize) {
        loop {
            let made = self.lookup_made.notified();
            tokio::pin!(made);
            // Listening before looking at the count: a call in between is not missed.
            made.as_mut().enable();
            if self.lookups() >= n {
                return;
            }
            made.await;
        }
    }

    /// Makes `get_service` fail (or work again).
    pub fn fail_lookups(&self, fail: bool) {
        self.failing.store(fail, Ordering::SeqCst);
    }

    /// Makes every `get_service` take `delay` first.
    pub fn delay_lookups(&self, delay: Duration) {
        *self
            .lookup_delay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = delay;
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl Registry for TestRegistry {
    fn name(&self) -> &str {
        "test"
    }

    async fn register(&self, service: &Service, _opts: RegisterOptions) -> Result<()> {
        for node in &service.nodes {
            let one = Service {
                nodes: vec![node.clone()],
                ..service.clone()
            };
            let key = (
                service.name.clone(),
                service.version.clone(),
                node.id.clone(),
            );
            let kind = match self.entries().insert(key, one.clone()) {
                Some(_) => EventKind::Update,
                None => EventKind::Create,
            };
            let _ = self.events.send(Event { kind, service: one });
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        for node in &service.nodes {
            let key = (
                service.name.clone(),
                service.version.clone(),
                node.id.clone(),
            );
            if let Some(gone) = self.entries().remove(&key) {
                let _ = self.events.send(Event {
                    kind: EventKind::Delete,
                    service: gone,
                });
            }
        }
        Ok(())
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.lookup_made.notify_waiters();
        let delay = *self
            .lookup_delay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::new("test.registry", 503, "the registry is down"));
        }
        let found: Vec<Service> = self
            .entries()
            .iter()
            .filter(|((n, _, _), _)| n == name)
            .map(|(_, s)| s.clone())
            .collect();
        if found.is_empty() {
            return Err(Error::not_found(
                "test.registry",
                format!("{name} not found"),
            ));
        }
        Ok(Service::merge(found))
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        let mut names: Vec<Service> = self
            .entries()
            .values()
            .map(|s| Service::new(s.name.clone(), s.version.clone()))
            .collect();
        names.dedup();
        Ok(names)
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watcher> {
        let rx = self.events.subscribe();
        let only = service.map(str::to_string);
        Ok(Box::pin(futures_util::stream::unfold(
            (rx, only),
            |(mut rx, only)| async move {
                loop {
                    match rx.recv().await {
                        Ok(e) if only.as_deref().is_none_or(|n| n == e.service.name) => {
                            return Some((Ok(e), (rx, only)))
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )))
    }
}

/// Shows the broker's logs with `--nocapture` (`RUST_LOG=micro_broker_http=debug` for more).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "micro_broker_http=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A handler that forwards every delivery to the returned channel and returns `Ok`.
pub fn collector() -> (Handler, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler: Handler = Arc::new(move |d| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(d);
            Ok(())
        })
    });
    (handler, rx)
}

/// The next delivery, failing the test after [`PATIENCE`].
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Delivery>, what: &str) -> Delivery {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("{what}: the handler went away"))
}

/// Publishes probes through `publisher` until each receiver got one, then drops the probes
/// received. Each publish returns after its deliveries, so none arrives afterwards.
pub async fn until_live(
    publisher: &dyn Broker,
    topic: &str,
    receivers: &mut [&mut mpsc::UnboundedReceiver<Delivery>],
) {
    let deadline = Instant::now() + PATIENCE;
    let mut live = vec![false; receivers.len()];
    while live.iter().any(|l| !l) {
        assert!(
            Instant::now() < deadline,
            "subscribers of {topic} not seen within {PATIENCE:?}"
        );
        publisher
            .publish(topic, Message::default())
            .await
            .expect("publish a probe");
        for (rx, live) in receivers.iter_mut().zip(live.iter_mut()) {
            while rx.try_recv().is_ok() {
                *live = true;
            }
        }
        if live.iter().any(|l| !l) {
            // The registry watch needs a moment to tell the publisher.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A raw HTTP/1.1 exchange: writes `request` as given, reads until the server closes, and
/// returns the status code and body.
pub async fn raw_exchange(addr: &str, request: &[u8]) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the broker");
        stream.write_all(request).await.expect("write the request");
        let mut response = Vec::new();
        // The server may close before reading all of an oversized body; what it said counts.
        let _ = stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("the broker answered in time")
}

/// A POST of `body` to `path`, closing the connection after the response.
pub async fn raw_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_exchange(addr, request.as_bytes()).await
}
