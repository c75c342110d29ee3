//! Across processes, over the mDNS registry on loopback: a child process (this test binary
//! again, switched into subscriber mode by an environment variable) subscribes, and this
//! process publishes to it.
//!
//! mDNS stays on loopback (`MdnsOptions::default()`) on a private port. When multicast on
//! loopback does not work, the test says why and passes, unless `MICRO_TEST_REQUIRE_SERVICES=1`.

mod common;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro_broker_http::{HttpBroker, HttpBrokerOptions};
use micro_core::broker::{Message, SubscribeOptions};
use micro_core::{Broker, Metadata, Registry, Service};
use micro_registry_mdns::{MdnsOptions, MdnsRegistry};
use tokio::sync::mpsc;

/// Set in the child: `<mdns port> <topic>`.
const CHILD_ENV: &str = "MICRO_BROKER_HTTP_TEST_CHILD";
/// How long the child serves at most, so that it never outlives a failed parent for long.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
/// How long each step of the parent may take.
const STEP: Duration = Duration::from_secs(30);

fn mdns(port: u16) -> Arc<dyn Registry> {
    // Loopback only (the default interface); a longer lookup keeps a loaded machine steady.
    let opts = MdnsOptions::default()
        .with_port(port)
        .with_query_timeout(Duration::from_millis(250))
        .with_watch_interval(Duration::from_millis(500));
    Arc::new(MdnsRegistry::new(opts).expect("an mdns registry on loopback"))
}

/// A UDP port nobody uses right now, for this test's private mDNS group.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// Whether multicast on loopback works: a registry finds its own registration.
async fn multicast_ready(port: u16) -> bool {
    let probe = async {
        let registry = MdnsRegistry::new(MdnsOptions::default().with_port(port))?;
        let mut svc = Service::new("micro-broker-http-probe", "latest");
        svc.nodes.push(micro_core::Node {
            id: format!("probe-{}", uuid::Uuid::new_v4()),
            address: "127.0.0.1:9".into(),
            metadata: Default::default(),
        });
        registry.register(&svc, Default::default()).await?;
        let found = registry.get_service(&svc.name).await;
        registry.deregister(&svc).await?;
        found.map(|_| ())
    };
    match probe.await {
        Ok(()) => true,
        Err(e) => {
            let why = format!(
                "multicast on loopback is not available ({e}); run as root: ip link set lo up multicast on && ip route add 224.0.0.0/4 dev lo"
            );
            assert!(!micro_conformance::services_required(), "{why}");
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// Subscriber mode: only does something in the child process the parent test starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_subscriber() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (port, topic) = spec.split_once(' ').expect("<port> <topic>");
    let port: u16 = port.parse().expect("a port");
    let broker = HttpBroker::new(mdns(port), HttpBrokerOptions::default()).expect("broker");
    let (handler, mut rx) = common::collector();
    let sub = broker
        .subscribe(topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    println!("CHILD READY {}", broker.address());
    let deadline = tokio::time::Instant::now() + CHILD_LIFETIME;
    while let Ok(Some(d)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let body = String::from_utf8_lossy(&d.message.body).to_string();
        println!(
            "CHILD GOT topic={} trace={} body={body}",
            d.topic,
            d.message.header.get("Trace-Id").unwrap_or("-")
        );
        if body == "bye" {
            break;
        }
    }
    sub.unsubscribe().await.expect("unsubscribe");
    broker.disconnect().await.expect("disconnect");
    println!("CHILD DONE");
}

/// The child process; killed (by its own pid) if the test ends before it does.
struct ChildProcess(Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts this test binary as the subscriber; its `CHILD ` lines arrive on the channel.
fn spawn_child(port: u16, topic: &str) -> (ChildProcess, mpsc::UnboundedReceiver<String>) {
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Command::new(exe)
        .args([
            "child_subscriber",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{port} {topic}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child process");
    let stdout = child.stdout.take().expect("the child's stdout");
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest writes `test child_subscriber ... ` before the first line.
            if let Some(at) = line.find("CHILD ") {
                if tx.send(line[at + "CHILD ".len()..].to_string()).is_err() {
                    break;
                }
            }
        }
    });
    (ChildProcess(child), rx)
}

async fn line(rx: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: the child said nothing within {STEP:?}"))
        .unwrap_or_else(|| panic!("{what}: the child exited"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_in_another_process_gets_messages() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let port = free_udp_port();
    if !multicast_ready(port).await {
        return;
    }
    let topic = format!("xproc-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (child, mut lines) = spawn_child(port, &topic);
    let ready = line(&mut lines, "subscribing").await;
    assert!(ready.starts_with("READY 127.0.0.1:"), "{ready}");

    let publisher = HttpBroker::new(mdns(port), HttpBrokerOptions::default()).expect("broker");
    let hello = Message {
        header: [("Trace-Id", "t-42")].into_iter().collect::<Metadata>(),
        body: "hello from the parent".into(),
    };
    // The child's node reaches this process's registry lookups over multicast: publish until
    // the child reports a delivery.
    let started = Instant::now();
    let got = loop {
        assert!(
            started.elapsed() < STEP,
            "the child got nothing within {STEP:?}"
        );
        if let Err(e) = publisher.publish(&topic, hello.clone()).await {
            eprintln!("publish: {e}");
        }
        match tokio::time::timeout(Duration::from_millis(300), lines.recv()).await {
            Ok(Some(l)) => break l,
            Ok(None) => panic!("the child exited early"),
            Err(_) => {}
        }
    };
    assert_eq!(
        got,
        format!("GOT topic={topic} trace=t-42 body=hello from the parent")
    );

    // "bye" ends the child, which unsubscribes and deregisters.
    let bye = Message {
        body: "bye".into(),
        ..Default::default()
    };
    publisher.publish(&topic, bye).await.expect("publish bye");
    let started = Instant::now();
    loop {
        let l = line(&mut lines, "saying goodbye").await;
        if l == "DONE" {
            break;
        }
        assert!(started.elapsed() < STEP, "the child did not finish");
    }
    let mut child = child;
    let deadline = Instant::now() + STEP;
    while child.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the child did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = child.0.wait().expect("the child's exit status");
    assert!(status.success(), "the child failed: {status}");
    publisher.disconnect().await.expect("disconnect");
}
