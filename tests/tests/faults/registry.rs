//! etcd partitioned away (blackholed), slowed down (every byte delayed) and resetting every
//! connection, under load: callers keep calling with the nodes they know, no call fails and
//! none waits for the registry.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest};
use greeter::GreeterService;
use micro::registry::Registry;
use micro::selector::{RegistrySelector, SelectorOptions};
use micro_conformance::fault::{Fault, FaultProxy};
use micro_registry_etcd::testing::EtcdServer;
use micro_registry_etcd::EtcdRegistry;

use crate::{report, within, PATIENCE};

/// Callers at once.
const CALLERS: usize = 8;
/// Calls made while etcd is blackholed, at least.
const CALLS_IN_PARTITION: usize = 2000;
/// How long the callers' cache trusts an entry: short, so that it expires many times over
/// during the partition and every expiry sends a read into the blackhole.
const CACHE_TTL: Duration = Duration::from_millis(100);
/// etcd's request timeout on the callers' side: a call that waited on the registry would wait
/// this long, far past the bound of the whole partition phase below.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on the partition phase.
const PHASE: Duration = Duration::from_secs(30);

/// How long each byte to and from etcd is held in the delay fault: far longer than a call
/// takes (so a call that waited for a registry read would be seen), short enough that cache
/// refreshes complete, late, during the fault.
const REGISTRY_DELAY: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_blackholed_under_load_fails_no_call() {
    etcd_fault_under_load("etcd-blackhole", Fault::Blackhole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_delayed_under_load_fails_no_call() {
    etcd_fault_under_load("etcd-delay", Fault::Delay(REGISTRY_DELAY)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_resetting_connections_under_load_fails_no_call() {
    etcd_fault_under_load("etcd-reset", Fault::Reset).await;
}

/// Callers under load through a fault proxy in front of etcd; `fault` strikes once they are
/// busy, and lasts until enough calls, over enough cache expiries, were made through it.
async fn etcd_fault_under_load(result: &str, fault: Fault) {
    let Some(etcd) = EtcdServer::shared() else {
        return;
    };
    let name = format!("fault-etcd-{}", uuid_suffix());
    // Servers register straight with etcd; the partition is between the callers and etcd.
    let servers_registry = Arc::new(EtcdRegistry::new(etcd.options()).expect("etcd registry"));
    let mut servers = Vec::new();
    for _ in 0..2 {
        let s = micro::Service::builder(&name)
            .ignore_env()
            .address("127.0.0.1:0")
            .registry(servers_registry.clone())
            .transport(micro::plugins::transport("http").expect("http transport"))
            .broker(Arc::new(micro::broker::MemoryBroker::new()))
            .handler(greeter_handler(GreeterService))
            .build()
            .expect("build a server");
        s.start().await.expect("start a server");
        servers.push(s);
    }

    let proxy = FaultProxy::start(&etcd.address())
        .await
        .expect("fault proxy");
    let callers_registry: Arc<EtcdRegistry> = Arc::new(
        EtcdRegistry::new(
            etcd.options()
                .with_address(&format!("http://{}", proxy.address()))
                .with_request_timeout(REGISTRY_TIMEOUT)
                .with_dial_timeout(REGISTRY_TIMEOUT),
        )
        .expect("etcd registry through the proxy"),
    );
    let selector = RegistrySelector::new(
        callers_registry.clone(),
        SelectorOptions {
            cache_ttl: CACHE_TTL,
            ..Default::default()
        },
    );
    let caller = micro::Service::builder("fault-etcd-caller")
        .ignore_env()
        .registry(callers_registry.clone())
        .selector(Arc::new(selector))
        .transport(micro::plugins::transport("http").expect("http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .build()
        .expect("build the caller");
    let client = GreeterClient::new(&name, caller.client());

    // Both nodes known (the servers registered before the first lookup).
    within("the first call", PATIENCE, async {
        loop {
            let r = client
                .hello(HelloRequest {
                    name: "first".into(),
                })
                .await;
            if r.is_ok() {
                break;
            }
        }
    })
    .await;

    let partitioned = Arc::new(AtomicBool::new(false));
    let calls_in_partition = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..CALLERS {
        let client = client.clone();
        let (partitioned, calls_in_partition, calls, failures, slowest, stop) = (
            partitioned.clone(),
            calls_in_partition.clone(),
            calls.clone(),
            failures.clone(),
            slowest.clone(),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let during = partitioned.load(Ordering::Acquire);
                let started = Instant::now();
                let r = client
                    .hello(HelloRequest {
                        name: format!("w{w}-{i}"),
                    })
                    .await;
                let took = started.elapsed();
                calls.fetch_add(1, Ordering::AcqRel);
                match r {
                    Ok(reply) if reply.get_ref().message == format!("Hello w{w}-{i}") => {}
                    Ok(reply) => failures
                        .lock()
                        .expect("failures")
                        .push(format!("wrong reply {:?}", reply.get_ref().message)),
                    Err(e) => failures.lock().expect("failures").push(e.to_string()),
                }
                if during && partitioned.load(Ordering::Acquire) {
                    calls_in_partition.fetch_add(1, Ordering::AcqRel);
                    let mut s = slowest.lock().expect("slowest");
                    *s = (*s).max(took);
                }
                i += 1;
            }
        }));
    }

    // Under load first, then the partition.
    within("calls before the partition", PATIENCE, async {
        while calls.load(Ordering::Acquire) < 200 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    proxy.set(fault);
    partitioned.store(true, Ordering::Release);
    // A read of our own through the fault.
    let probe = tokio::spawn({
        let registry = callers_registry.clone();
        let name = name.clone();
        async move { registry.get_service(&name).await }
    });
    let started = Instant::now();
    // Enough calls, over enough cache expiries (each of which sent a read into the blackhole).
    within("calls during the partition", PHASE, async {
        while calls_in_partition.load(Ordering::Acquire) < CALLS_IN_PARTITION
            || started.elapsed() < CACHE_TTL * 10
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Our own read met the fault (a reset one fails at once; a delayed one is answered late,
    // which needs no fault lifted): it was real.
    let probe = match fault {
        Fault::Blackhole if !probe.is_finished() => {
            probe.abort();
            None
        }
        _ => Some(
            within("the probe", PATIENCE, probe)
                .await
                .expect("probe task"),
        ),
    };
    partitioned.store(false, Ordering::Release);
    let in_partition = calls_in_partition.load(Ordering::Acquire);
    let partition_for = started.elapsed();
    proxy.set(Fault::Pass);
    stop.store(true, Ordering::Release);
    for w in workers {
        within("a caller", PATIENCE, w).await.expect("caller task");
    }

    let failures = failures.lock().expect("failures").clone();
    let slowest = *slowest.lock().expect("slowest");
    report(
        result,
        &[
            (
                "fault",
                format!("{fault:?}").to_lowercase().replace(' ', ""),
            ),
            ("calls", calls.load(Ordering::Acquire).to_string()),
            ("calls_partitioned", in_partition.to_string()),
            ("failed", failures.len().to_string()),
            ("partition_ms", partition_for.as_millis().to_string()),
            (
                "slowest_partitioned_call_ms",
                slowest.as_millis().to_string(),
            ),
            (
                "registry_timeout_ms",
                REGISTRY_TIMEOUT.as_millis().to_string(),
            ),
        ],
    );
    assert!(
        failures.is_empty(),
        "{} calls failed with etcd blackholed, first: {:?}",
        failures.len(),
        failures.first()
    );
    match (fault, probe) {
        (_, None) => {}
        (Fault::Blackhole | Fault::Reset, Some(answer)) => assert!(
            answer.is_err(),
            "a registry read went through the {fault:?} fault: it was not real"
        ),
        (_, Some(Err(e))) => panic!("a registry read through the {fault:?} fault failed: {e}"),
        (_, Some(Ok(_))) => {}
    }

    for s in servers {
        s.stop().await.expect("stop a server");
    }
}

fn uuid_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}
