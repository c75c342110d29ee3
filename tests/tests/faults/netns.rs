//! Packet loss and a slow link, for real, inside a network namespace this test creates: a
//! peer service runs in the namespace (this test binary again, under `ip netns exec`), joined
//! to the test's namespace by a veth pair on a private link-local /30; nftables drops a share
//! of the packets each way at random (`numgen random`), and a token bucket (`tc qdisc tbf`)
//! limits the rate each way. Calls through it still succeed: TCP retransmits, the client's
//! deadline and retries do their job.
//!
//! Why not `tc netem`: this kernel is built without `CONFIG_NET_SCH_NETEM`, so `tc qdisc add
//! ... netem` fails with "Specified qdisc kind is unknown". nftables' random drop and tbf are
//! in every stock kernel. (Needs root, `ip` from iproute2 and `nft` from nftables.)

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro::registry::MemoryRegistry;
use micro::{Handler, Json, Request, Response};

use crate::{report, within, ChildProcess, CHILD_ENV, PATIENCE};

/// Packets dropped at random, in percent, in each direction.
const LOSS_PERCENT: u32 = 5;
/// The link's rate each way (tc's units).
const RATE: &str = "2mbit";
/// Calls made through the link.
const CALLS: usize = 120;
/// Callers at once.
const CALLERS: usize = 4;
/// Bytes in each request and answer: more than the token bucket's burst.
const PAYLOAD: usize = 6 * 1024;
/// Each call's deadline: room for several TCP retransmissions (200 ms, doubling) of one
/// segment.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `program args`, panicking with its output when it fails; returns its standard output.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace and the veth pair into it, removed on drop.
struct Namespace {
    name: String,
    host_if: String,
    /// The namespace's address (the test's is the other one of the /30).
    inside_ip: String,
}

impl Namespace {
    /// Creates the namespace and its link, or `None` (after saying why) when this machine
    /// cannot (not root, no `ip` or `nft`); panics then when services are required.
    fn create() -> Option<Namespace> {
        let missing: Vec<&str> = ["ip", "nft", "tc"]
            .into_iter()
            .filter(|tool| {
                !Command::new(tool)
                    .arg("-V")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .collect();
        let root = rustix::process::geteuid().is_root();
        if !missing.is_empty() || !root {
            let why = format!(
                "network namespace faults need root and ip, nft and tc (apt-get install \
                 iproute2 nftables): root={root}, missing {missing:?}"
            );
            assert!(
                std::env::var("MICRO_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{why} (MICRO_TEST_REQUIRE_SERVICES is set)"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let pid = std::process::id();
        // One /30 of 169.254.0.0/16 per process, from its pid: concurrent runs do not meet.
        let block = pid % 16_384;
        let (c, d) = (block / 64, (block % 64) * 4);
        let ns = Namespace {
            name: format!("micro-fault-{pid}"),
            // Interface names hold 15 bytes.
            host_if: format!("mfh{pid}"),
            inside_ip: format!("169.254.{c}.{}", d + 2),
        };
        let host_ip = format!("169.254.{c}.{}", d + 1);
        let inside_if = format!("mfn{pid}");
        run("ip", &["netns", "add", &ns.name]);
        run(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &inside_if,
            ],
        );
        run("ip", &["link", "set", &inside_if, "netns", &ns.name]);
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if],
        );
        run("ip", &["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.inside_ip),
            "dev",
            &inside_if,
        ]);
        inside(&["ip", "link", "set", &inside_if, "up"]);
        // Loss, each way, counted; only on the veth, never on the namespace's loopback.
        let loss = LOSS_PERCENT.to_string();
        inside(&["nft", "add", "table", "inet", "micro_fault"]);
        for (chain, hook, dir) in [
            ("lossy_in", "input", "iifname"),
            ("lossy_out", "output", "oifname"),
        ] {
            inside(&[
                "nft",
                "add",
                "chain",
                "inet",
                "micro_fault",
                chain,
                &format!("{{ type filter hook {hook} priority 0; policy accept; }}"),
            ]);
            inside(&[
                "nft",
                "add",
                "rule",
                "inet",
                "micro_fault",
                chain,
                dir,
                &inside_if,
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &loss,
                "counter",
                "drop",
            ]);
        }
        // The rate, each way: a token bucket on both ends' egress.
        let tbf = [
            "root", "tbf", "rate", RATE, "burst", "4kb", "latency", "200ms",
        ];
        let mut host_tbf = vec!["qdisc", "add", "dev", &ns.host_if];
        host_tbf.extend_from_slice(&tbf);
        run("tc", &host_tbf);
        let mut inside_tbf = vec!["tc", "qdisc", "add", "dev", &inside_if];
        inside_tbf.extend_from_slice(&tbf);
        inside(&inside_tbf);
        Some(ns)
    }

    /// Packets the random drop rules dropped so far.
    fn dropped(&self) -> u64 {
        let listed = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "nft",
                "list",
                "table",
                "inet",
                "micro_fault",
            ],
        );
        listed
            .split("packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Packets the host end's token bucket held back (`overlimits`).
    fn throttled(&self) -> u64 {
        let stats = run("tc", &["-s", "qdisc", "show", "dev", &self.host_if]);
        stats
            .split("overlimits ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn echo() -> Handler {
    Handler::new("Echo").unary("Call", |req: Request<Json<String>>| {
        Box::pin(async move { Ok(Response::new(Json(req.into_inner().0))) })
    })
}

/// The child side, inside the namespace: serves `Echo.Call` on `MICRO_FAULT_LISTEN`, prints
/// `FAULT-CHILD listening <address>`, and serves until killed.
#[test]
fn fault_child_netns_peer() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("netns-peer") {
        return;
    }
    let listen = std::env::var("MICRO_FAULT_LISTEN").expect("MICRO_FAULT_LISTEN is set");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let service = micro::Service::builder("fault-netns")
            .ignore_env()
            .address(&listen)
            .registry(Arc::new(MemoryRegistry::new()))
            .transport(micro::plugins::transport("http").expect("http transport"))
            .broker(Arc::new(micro::broker::MemoryBroker::new()))
            .handler(echo())
            .build()
            .expect("build");
        service.start().await.expect("start");
        let address = micro::rpc::Server::address(service.server()).expect("listening");
        println!("FAULT-CHILD listening {address}");
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_a_lossy_slow_link_in_a_namespace_succeed() {
    let Some(ns) = tokio::task::spawn_blocking(Namespace::create)
        .await
        .expect("namespace task")
    else {
        return;
    };
    let ns = Arc::new(ns);
    let listen = format!("{}:0", ns.inside_ip);
    let ns_name = ns.name.clone();
    let (peer, address) = tokio::task::spawn_blocking(move || {
        let peer = ChildProcess::spawn_under(
            &["ip", "netns", "exec", &ns_name],
            "netns-peer",
            "netns::fault_child_netns_peer",
            &[("MICRO_FAULT_LISTEN", listen)],
        );
        let address = peer.line("FAULT-CHILD listening", PATIENCE);
        (peer, address)
    })
    .await
    .expect("the peer in the namespace");

    let caller = micro::Service::builder("fault-netns-caller")
        .ignore_env()
        .registry(Arc::new(MemoryRegistry::new()))
        .transport(micro::plugins::transport("http").expect("http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .build()
        .expect("build the caller");
    let client = caller.client().with_content_type("application/json");
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..CALLERS {
        let (client, next, failures, address) = (
            client.clone(),
            next.clone(),
            failures.clone(),
            address.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::AcqRel);
                if i >= CALLS {
                    break;
                }
                let body = format!("{i:06}{}", "x".repeat(PAYLOAD));
                let r = client
                    .unary::<_, Json<String>>(
                        "fault-netns",
                        "Echo.Call",
                        Request::new(Json(body.clone()))
                            .with_address(&address)
                            .with_timeout(CALL_TIMEOUT)
                            .with_retries(3),
                    )
                    .await;
                match r {
                    Ok(r) if r.get_ref().0 == body => {}
                    Ok(_) => failures
                        .lock()
                        .expect("failures")
                        .push(format!("call {i}: a different answer")),
                    Err(e) => failures
                        .lock()
                        .expect("failures")
                        .push(format!("call {i}: {e}")),
                }
            }
        }));
    }
    for w in workers {
        within("calls through the lossy link", PATIENCE * 2, w)
            .await
            .expect("caller task");
    }
    let took = started.elapsed();
    let failures = failures.lock().expect("failures").clone();
    let (dropped, throttled) = tokio::task::spawn_blocking({
        let ns = ns.clone();
        move || (ns.dropped(), ns.throttled())
    })
    .await
    .expect("counters");
    drop(peer);
    drop(ns);
    report(
        "netns-loss-rate",
        &[
            ("loss_percent_each_way", LOSS_PERCENT.to_string()),
            ("rate", RATE.to_string()),
            ("calls", CALLS.to_string()),
            ("ok", (CALLS - failures.len()).to_string()),
            ("failed", failures.len().to_string()),
            ("packets_dropped", dropped.to_string()),
            ("packets_throttled", throttled.to_string()),
            ("payload_bytes", PAYLOAD.to_string()),
            ("took_ms", took.as_millis().to_string()),
        ],
    );
    assert!(
        failures.is_empty(),
        "{} of {CALLS} calls failed through the lossy link, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        dropped > 0,
        "the loss rules dropped no packet: the loss was not real"
    );
    assert!(
        throttled > 0,
        "the token bucket held back no packet: the rate limit was not real"
    );
}
