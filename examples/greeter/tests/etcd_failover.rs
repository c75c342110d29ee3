//! Failover on a real etcd: three `greeter-server` processes, a round-robin client calling all
//! the time. `kill -9` one (its key vanishes when its lease expires) and SIGTERM another (its
//! key goes at once): no call fails.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use greeter::greeter::{GreeterClient, HelloRequest};
use micro::core::selector::Strategy;
use micro::registry::Registry;
use micro_registry_etcd::testing::EtcdServer;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(etcd: &str, name: &str) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_greeter-server"))
            .env("MICRO_REGISTRY", "etcd")
            .env("MICRO_REGISTRY_ADDRESS", etcd)
            .env("MICRO_SERVER_NAME", name)
            .env("MICRO_SERVER_ADDRESS", "127.0.0.1:0")
            .env("MICRO_REGISTER_TTL", "3")
            .env("MICRO_REGISTER_INTERVAL", "1")
            .env_remove("MICRO_TRANSPORT")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start greeter-server"),
    )
}

async fn node_ids(registry: &dyn Registry, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = registry
        .get_service(name)
        .await
        .map(|s| s.into_iter().flat_map(|s| s.nodes).map(|n| n.id).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_fails_when_servers_die_or_stop() {
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return;
    };
    let address = etcd.address();
    let name = format!("greeter-failover-{}", std::process::id());
    let mut servers: Vec<Server> = (0..3).map(|_| server(&address, &name)).collect();

    let registry = micro::plugins::registry("etcd", Some(&address)).expect("etcd registry");
    wait_for("three servers registered", || async {
        node_ids(&*registry, &name).await.len() == 3
    })
    .await;
    let before = node_ids(&*registry, &name).await;

    let caller = micro::Service::builder("caller")
        .ignore_env()
        .registry(registry.clone())
        .strategy(Strategy::RoundRobin)
        .build()
        .expect("caller");
    let greeter = GreeterClient::new(name.clone(), caller.client());

    // Call without pause until told to stop, counting calls and failures.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let caller_task = {
        let (stop, calls, failures) = (stop.clone(), calls.clone(), failures.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                match greeter
                    .hello(HelloRequest {
                        name: format!("n{n}"),
                    })
                    .await
                {
                    Ok(r) if r.get_ref().message == format!("Hello n{n}") => {}
                    Ok(r) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("wrong reply {:?}", r.get_ref())),
                    Err(e) => failures.lock().expect("lock").push(e.to_string()),
                }
            }
        })
    };
    let made = |min: usize| {
        let calls = calls.clone();
        async move {
            let start = calls.load(Ordering::SeqCst);
            wait_for("calls go on", || {
                let calls = calls.clone();
                async move { calls.load(Ordering::SeqCst) >= start + min }
            })
            .await
        }
    };
    made(30).await;

    // kill -9: no goodbye; the lease runs out after the 3 s TTL.
    let killed = servers.remove(0);
    drop(killed);
    made(30).await;
    wait_for(
        "the killed server's key vanishes when its lease expires",
        || async { node_ids(&*registry, &name).await.len() == 2 },
    )
    .await;
    made(30).await;

    // SIGTERM: the server deregisters at once, then drains and exits cleanly.
    let term = servers.remove(0);
    let status = Command::new("kill")
        .args(["-TERM", &term.0.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let sent = Instant::now();
    wait_for("the stopped server's key is deleted", || async {
        node_ids(&*registry, &name).await.len() == 1
    })
    .await;
    let deleted_after = sent.elapsed();
    assert!(
        deleted_after < Duration::from_secs(3),
        "deregistered on SIGTERM, not by lease expiry (took {deleted_after:?})"
    );
    let mut term = term;
    let exit = tokio::task::spawn_blocking(move || term.0.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "greeter-server exited with {exit}");
    made(30).await;

    stop.store(true, Ordering::SeqCst);
    caller_task.await.expect("caller task");
    let remaining = node_ids(&*registry, &name).await;
    assert_eq!(remaining.len(), 1);
    assert!(before.contains(&remaining[0]));
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {} calls failed: {:?}",
        failures.len(),
        calls.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_ride_out_a_registry_outage_and_servers_register_again() {
    let Some(etcd) = EtcdServer::start_or_skip() else {
        return;
    };
    let address = etcd.address();
    let name = format!("greeter-outage-{}", std::process::id());
    let _server = server(&address, &name);
    let registry = micro::plugins::registry("etcd", Some(&address)).expect("etcd registry");
    wait_for("the server registered", || async {
        node_ids(&*registry, &name).await.len() == 1
    })
    .await;
    let caller = micro::Service::builder("caller")
        .ignore_env()
        .registry(registry.clone())
        .build()
        .expect("caller");
    let greeter = GreeterClient::new(name.clone(), caller.client());
    let hello = |n: u32| {
        let greeter = greeter.clone();
        async move {
            let r = greeter
                .hello(HelloRequest {
                    name: format!("n{n}"),
                })
                .await
                .unwrap_or_else(|e| panic!("call {n} failed: {e}"));
            assert_eq!(r.get_ref().message, format!("Hello n{n}"));
        }
    };
    hello(0).await;

    // etcd goes away and loses everything it knew.
    etcd.stop();
    std::fs::remove_dir_all(etcd.data_dir()).expect("wipe etcd's data");
    std::fs::create_dir_all(etcd.data_dir()).expect("recreate the data dir");
    assert!(registry.get_service(&name).await.is_err(), "etcd is down");
    for n in 1..=20 {
        hello(n).await; // served from the selector's cache
    }

    etcd.restart().expect("restart etcd");
    wait_for("the server registered itself again", || async {
        node_ids(&*registry, &name).await.len() == 1
    })
    .await;
    for n in 21..=30 {
        hello(n).await;
    }
}
