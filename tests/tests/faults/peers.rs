//! Peers that die under load behind the fault proxy: one killed with SIGKILL (it never
//! deregisters, its address keeps accepting at the proxy and resets every connection), one
//! stopped with SIGTERM (it drains), while callers keep calling. No call fails.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::registry::{MemoryRegistry, Node, Registry, Service};
use micro::{Handler, Json, Request, Response};
use micro_conformance::fault::FaultProxy;

use crate::{report, within, ChildProcess, CHILD_ENV, PATIENCE};

/// The name the children serve.
const SERVICE: &str = "fault-peer";
/// Callers at once.
const CALLERS: usize = 8;
/// Calls made before each fault, and after it, at least.
const CALLS_PER_PHASE: usize = 300;

/// `Work.Do`: echoes its number after a short piece of work, so that calls are in flight on
/// a peer when it dies.
fn work() -> Handler {
    Handler::new("Work").unary("Do", |req: Request<Json<u64>>| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(Response::new(Json(req.into_inner().0)))
        })
    })
}

/// The child side: serves `Work.Do` on loopback, prints `FAULT-CHILD listening <address>`,
/// and stops gracefully on SIGTERM (exit status 0 once drained).
#[test]
fn fault_child_greeter() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("greeter") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        let service = micro::Service::builder(SERVICE)
            .ignore_env()
            .address("127.0.0.1:0")
            .registry(Arc::new(MemoryRegistry::new()))
            .transport(micro::plugins::transport("http").expect("http transport"))
            .broker(Arc::new(micro::broker::MemoryBroker::new()))
            .drain_wait(Duration::ZERO)
            .handler(work())
            .build()
            .expect("build");
        service.start().await.expect("start");
        let address = micro::rpc::Server::address(service.server()).expect("listening");
        println!("FAULT-CHILD listening {address}");
        term.recv().await;
        service.stop().await.expect("a graceful stop");
        println!("FAULT-CHILD stopped");
    });
}

/// A child peer behind a proxy of its own.
struct Peer {
    child: ChildProcess,
    proxy: FaultProxy,
}

async fn peer() -> Peer {
    let (child, address) = tokio::task::spawn_blocking(|| {
        let child = ChildProcess::spawn("greeter", "peers::fault_child_greeter", &[]);
        let address = child.line("FAULT-CHILD listening", PATIENCE);
        (child, address)
    })
    .await
    .expect("spawn a peer");
    let proxy = FaultProxy::start(&address).await.expect("fault proxy");
    Peer { child, proxy }
}

/// Calls `Work.Do` from `CALLERS` tasks until told to stop; counts calls and failures.
struct Load {
    calls: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: micro::Client) -> Load {
        let calls = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..CALLERS as u64)
            .map(|w| {
                let (client, calls, failures, stop) = (
                    client.clone(),
                    calls.clone(),
                    failures.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let mut i = w << 32;
                    while !stop.load(Ordering::Acquire) {
                        let r = client
                            .unary::<_, Json<u64>>(SERVICE, "Work.Do", Request::new(Json(i)))
                            .await;
                        calls.fetch_add(1, Ordering::AcqRel);
                        match r {
                            Ok(r) if r.get_ref().0 == i => {}
                            Ok(r) => failures
                                .lock()
                                .expect("failures")
                                .push(format!("{i} answered {}", r.get_ref().0)),
                            Err(e) => failures.lock().expect("failures").push(e.to_string()),
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Load {
            calls,
            failures,
            stop,
            workers,
        }
    }

    /// Waits until `more` calls were made since now.
    async fn go_on_for(&self, more: usize) {
        let until = self.calls.load(Ordering::Acquire) + more;
        within("calls under load", PATIENCE, async {
            while self.calls.load(Ordering::Acquire) < until {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
    }

    /// Stops the callers; returns the calls made and the failures.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        for w in self.workers {
            within("a caller", PATIENCE, w).await.expect("caller task");
        }
        let failures = self.failures.lock().expect("failures").clone();
        (self.calls.load(Ordering::Acquire), failures)
    }
}

/// Three peers behind proxies, listed in the callers' registry at the proxies' addresses (a
/// killed peer stays listed, as it would until its registration expires); the callers' client.
async fn fleet() -> (Vec<Peer>, micro::Client) {
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(peer().await);
    }
    let registry = MemoryRegistry::new();
    let mut service = Service::new(SERVICE, "latest");
    for (i, p) in peers.iter().enumerate() {
        service.nodes.push(Node {
            id: format!("{SERVICE}-{i}"),
            address: p.proxy.address().to_string(),
            metadata: Default::default(),
        });
    }
    registry
        .register(&service, Default::default())
        .await
        .expect("register the peers");
    let caller = micro::Service::builder("fault-peer-caller")
        .ignore_env()
        .registry(Arc::new(registry))
        .transport(micro::plugins::transport("http").expect("http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .build()
        .expect("build the caller");
    (peers, caller.client().with_content_type("application/json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_under_load_fails_no_call() {
    let (mut peers, client) = fleet().await;
    let load = Load::start(client);
    load.go_on_for(CALLS_PER_PHASE).await;
    let killed = &mut peers[0];
    killed.child.signal("KILL");
    let status = tokio::task::block_in_place(|| killed.child.wait(PATIENCE));
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    let resets_before = killed.proxy.refused_upstream();
    load.go_on_for(CALLS_PER_PHASE).await;
    let (calls, failures) = load.finish().await;
    let dead_dials = peers[0].proxy.refused_upstream() - resets_before;
    report(
        "peer-kill-9",
        &[
            ("calls", calls.to_string()),
            ("failed", failures.len().to_string()),
            ("peers", peers.len().to_string()),
            ("dials_to_dead_peer_reset", dead_dials.to_string()),
        ],
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed around a kill -9, first: {:?}",
        failures.len(),
        failures.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_stopped_with_sigterm_under_load_fails_no_call() {
    let (mut peers, client) = fleet().await;
    let load = Load::start(client);
    load.go_on_for(CALLS_PER_PHASE).await;
    let stopped = &mut peers[0];
    stopped.child.signal("TERM");
    let status = tokio::task::block_in_place(|| stopped.child.wait(PATIENCE));
    assert!(status.success(), "a graceful stop exits 0: {status}");
    let _ = tokio::task::block_in_place(|| stopped.child.line("FAULT-CHILD stopped", PATIENCE));
    load.go_on_for(CALLS_PER_PHASE).await;
    let (calls, failures) = load.finish().await;
    report(
        "peer-sigterm",
        &[
            ("calls", calls.to_string()),
            ("failed", failures.len().to_string()),
            ("peers", peers.len().to_string()),
            ("exit", status.code().unwrap_or(-1).to_string()),
        ],
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed around a SIGTERM, first: {:?}",
        failures.len(),
        failures.first()
    );
}
