//! Floods of idle connections and slowloris clients against every server of the framework:
//! 10 000 idle connections held by a child process, during which a real call still succeeds,
//! and which the server closes after its idle timeout; a client that sends its request head a
//! byte at a time is cut off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micro::registry::MemoryRegistry;
use micro::{Handler, Json, Request, Response};
use micro_transport_grpc::{GrpcOptions, GrpcTransport};
use micro_transport_http::{HttpOptions, HttpTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{raise_fd_limit, report, within, ChildProcess, CHILD_ENV, PATIENCE};

/// Idle connections per server. The http broker's receiving server, the Prometheus endpoint
/// and the API gateway have default connection caps below this (1024, 32, 1024): the tests
/// raise them past it.
const IDLE: usize = 10_000;
/// A GET that a server answers and keeps the connection open after.
const GET_METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: fault\r\n\r\n";
/// The servers' idle timeout in these tests: long enough for all of them to be open at once.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// What the child opens at once.
const CONNECTING_AT_ONCE: usize = 256;
/// The HTTP/2 client preface and an empty SETTINGS frame: an idle gRPC connection has them.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// A request the http transport answers (a 200 with a Micro-Error: no endpoint named) and
/// keeps the connection open after: a pooled client's connection, idle from then on.
const MUCP_REQUEST: &[u8] = b"POST / HTTP/1.1\r\nHost: fault\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/// The child side: opens `MICRO_FAULT_IDLE_COUNT` connections to `MICRO_FAULT_IDLE_TARGET`,
/// sends `MICRO_FAULT_IDLE_SEND` on each (the HTTP/2 preface, or one HTTP/1 request) and
/// counts it open once the server's first bytes arrive: it was accepted and served, not left
/// in a full accept queue. Then it stays idle. Prints `FAULT-CHILD open <opened> <refused>
/// <closed already>`, then waits for the server to close each one and prints `FAULT-CHILD
/// closed <closed>` once all are closed or `PATIENCE` has passed.
#[test]
fn fault_child_idle_clients() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("idle-clients") {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is set"));
    let target = var("MICRO_FAULT_IDLE_TARGET");
    let count: usize = var("MICRO_FAULT_IDLE_COUNT").parse().expect("a count");
    let send = from_hex(&var("MICRO_FAULT_IDLE_SEND"));
    raise_fd_limit(count as u64 + 1024);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTING_AT_ONCE));
        let opened = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let (slots, opened, refused, closed, target, send) = (
                slots.clone(),
                opened.clone(),
                refused.clone(),
                closed.clone(),
                target.clone(),
                send.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let permit = slots.acquire_owned().await.expect("slots");
                let Ok(mut s) = TcpStream::connect(&target).await else {
                    refused.fetch_add(1, Ordering::AcqRel);
                    return;
                };
                let mut buf = [0u8; 256];
                if s.write_all(&send).await.is_err()
                    || !matches!(s.read(&mut buf).await, Ok(n) if n > 0)
                {
                    refused.fetch_add(1, Ordering::AcqRel);
                    return;
                }
                opened.fetch_add(1, Ordering::AcqRel);
                drop(permit);
                // Idle: read (and drop) what the server says until it closes.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                closed.fetch_add(1, Ordering::AcqRel);
            }));
        }
        let deadline = Instant::now() + PATIENCE;
        while opened.load(Ordering::Acquire) + refused.load(Ordering::Acquire) < count
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "FAULT-CHILD open {} {} {}",
            opened.load(Ordering::Acquire),
            refused.load(Ordering::Acquire),
            closed.load(Ordering::Acquire)
        );
        while closed.load(Ordering::Acquire) < opened.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("FAULT-CHILD closed {}", closed.load(Ordering::Acquire));
        for t in tasks {
            t.abort();
        }
    });
}

/// Bytes as hex, to travel in an environment variable (which cannot hold a NUL).
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Holds `count` idle connections to `address` from a child process; once they are open runs
/// `real_call`, which must succeed; then waits until the server has closed them all.
async fn flood<F, Fut>(name: &str, address: &str, send: &[u8], count: usize, real_call: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    // One flood at a time: each holds IDLE descriptors of this process.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    // The server side of every connection is in this process.
    let limit = raise_fd_limit(count as u64 * 2 + 4096);
    assert!(
        limit >= count as u64 + 1024,
        "open-file limit {limit}: too low for {count} idle connections (raise ulimit -n)"
    );
    let env = vec![
        ("MICRO_FAULT_IDLE_TARGET", address.to_string()),
        ("MICRO_FAULT_IDLE_COUNT", count.to_string()),
        ("MICRO_FAULT_IDLE_SEND", to_hex(send)),
    ];
    let started = Instant::now();
    let (child, open) = tokio::task::spawn_blocking(move || {
        let child = ChildProcess::spawn("idle-clients", "idle::fault_child_idle_clients", &env);
        let open = child.line("FAULT-CHILD open", PATIENCE);
        (child, open)
    })
    .await
    .expect("the idle clients");
    let open: Vec<usize> = open
        .split_whitespace()
        .map(|n| n.parse().expect("a count"))
        .collect();
    let (opened, refused, closed_early) = (open[0], open[1], open[2]);
    let called = within("a real call among idle connections", PATIENCE, real_call()).await;
    let closed = tokio::task::spawn_blocking(move || {
        let closed = child.line("FAULT-CHILD closed", PATIENCE * 2);
        drop(child);
        closed
    })
    .await
    .expect("the idle clients");
    let closed: usize = closed.parse().expect("a count");
    report(
        &format!("idle-connections-{name}"),
        &[
            ("opened", opened.to_string()),
            ("refused", refused.to_string()),
            ("closed_before_the_call", closed_early.to_string()),
            (
                "real_call",
                if called.is_ok() { "ok" } else { "failed" }.into(),
            ),
            ("closed_by_server", closed.to_string()),
            ("idle_timeout_ms", IDLE_TIMEOUT.as_millis().to_string()),
            ("took_ms", started.elapsed().as_millis().to_string()),
        ],
    );
    assert_eq!(refused, 0, "{name}: connections refused below the cap");
    assert_eq!(opened, count, "{name}: every idle connection opened");
    if let Err(e) = called {
        panic!("{name}: a real call failed among {count} idle connections: {e}");
    }
    assert_eq!(
        closed, opened,
        "{name}: the server closed every idle connection after its idle timeout"
    );
}

/// Sends `head` one byte at a time (every `PACE`) until the server closes the connection;
/// returns how many bytes it got to send. Panics if the server still listens after the whole
/// head but one byte (it never completes, so no server may answer it).
async fn slowloris(name: &str, address: &str, head: &[u8]) {
    const PACE: Duration = Duration::from_millis(100);
    let mut s = TcpStream::connect(address).await.expect("connect");
    let started = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    let cut_off = loop {
        assert!(
            sent + 1 < head.len(),
            "{name}: a slowloris client sent {sent} bytes over {:?} without being cut off",
            started.elapsed()
        );
        if s.write_all(&head[sent..sent + 1]).await.is_err() {
            break true;
        }
        sent += 1;
        // The attacker's pace, and a look at whether the server hung up meanwhile.
        match tokio::time::timeout(PACE, s.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            // An answer (a 408, say) then the close.
            Ok(Ok(_)) => {}
        }
    };
    report(
        &format!("slowloris-{name}"),
        &[
            ("cut_off", cut_off.to_string()),
            ("bytes_sent", sent.to_string()),
            ("after_ms", started.elapsed().as_millis().to_string()),
        ],
    );
}

/// A request head that takes long to send a byte at a time: the slowloris's.
fn endless_head() -> Vec<u8> {
    let mut head = b"POST / HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..200 {
        head.extend_from_slice(format!("X-Slow-{i}: {}\r\n", "a".repeat(20)).as_bytes());
    }
    head
}

fn echo() -> Handler {
    Handler::new("Echo").unary("Call", |req: Request<Json<u64>>| {
        Box::pin(async move { Ok(Response::new(Json(req.into_inner().0))) })
    })
}

async fn echo_service(transport: Arc<dyn micro::core::Transport>) -> micro::Service {
    let service = micro::Service::builder("fault-idle")
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(MemoryRegistry::new()))
        .transport(transport)
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .handler(echo())
        .build()
        .expect("build");
    service.start().await.expect("start");
    service
}

async fn call_echo(service: &micro::Service, address: &str) -> Result<(), String> {
    let r = service
        .client()
        .with_content_type("application/json")
        .unary::<_, Json<u64>>(
            "fault-idle",
            "Echo.Call",
            Request::new(Json(42)).with_address(address),
        )
        .await
        .map_err(|e| e.to_string())?;
    if r.get_ref().0 == 42 {
        Ok(())
    } else {
        Err(format!("answered {}", r.get_ref().0))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slowloris_on_the_http_transport() {
    let opts = HttpOptions {
        idle_timeout: IDLE_TIMEOUT,
        ..Default::default()
    };
    let service = echo_service(Arc::new(HttpTransport::new(opts))).await;
    let address = micro::rpc::Server::address(service.server()).expect("listening");
    flood("http-transport", &address, MUCP_REQUEST, IDLE, || {
        call_echo(&service, &address)
    })
    .await;
    slowloris("http-transport", &address, &endless_head()).await;
    service.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_on_the_grpc_transport() {
    // An idle client that speaks no HTTP/2 never answers the GOAWAY's ping, so the server
    // cuts the connection `write_timeout` after its close: short here, to keep the test quick.
    let opts = GrpcOptions {
        idle_timeout: IDLE_TIMEOUT,
        write_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let service = echo_service(Arc::new(GrpcTransport::new(opts))).await;
    let address = micro::rpc::Server::address(service.server()).expect("listening");
    flood("grpc-transport", &address, H2_PREFACE, IDLE, || {
        call_echo(&service, &address)
    })
    .await;
    service.stop().await.expect("stop");
}

/// One `GET path` on a connection of its own; `Ok` when answered 200.
async fn get_ok(address: &str, path: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answered {head:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slowloris_on_the_http_brokers_server() {
    use micro::core::broker::{Delivery, Handler as BrokerHandler, Message, SubscribeOptions};
    use micro::core::Broker;
    use micro_broker_http::{HttpBroker, HttpBrokerOptions};

    let registry: Arc<dyn micro::registry::Registry> = Arc::new(MemoryRegistry::new());
    let mut opts = HttpBrokerOptions::default().with_idle_timeout(IDLE_TIMEOUT);
    opts.max_connections = IDLE * 2;
    let subscriber = HttpBroker::new(registry.clone(), opts).expect("http broker");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler: BrokerHandler = Arc::new(move |d: Delivery| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(d.message.body);
            Ok(())
        })
    });
    let topic = "fault.idle";
    let _subscription = subscriber
        .subscribe(topic, handler, SubscribeOptions::default())
        .await
        .expect("subscribe");
    let address = subscriber.address();
    let publisher = HttpBroker::new(registry, HttpBrokerOptions::default()).expect("publisher");
    flood(
        "http-broker",
        &address,
        b"GET / HTTP/1.1\r\nHost: fault\r\n\r\n",
        IDLE,
        || async {
            let msg = Message {
                body: "among idle connections".into(),
                ..Default::default()
            };
            publisher
                .publish(topic, msg)
                .await
                .map_err(|e| e.to_string())?;
            match rx.recv().await {
                Some(body) if &body[..] == b"among idle connections" => Ok(()),
                other => Err(format!("the subscriber got {other:?}")),
            }
        },
    )
    .await;
    slowloris("http-broker", &address, &endless_head()).await;
    let _ = publisher.disconnect().await;
    let _ = subscriber.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slowloris_on_the_prometheus_endpoint() {
    use micro_wrapper_prometheus::{EndpointOptions, Metrics};

    let metrics = Metrics::new().expect("metrics");
    let server = metrics
        .serve_with(
            "127.0.0.1:0",
            EndpointOptions {
                header_timeout: IDLE_TIMEOUT,
                max_connections: IDLE * 2,
            },
        )
        .await
        .expect("serve /metrics");
    let address = server.local_addr().to_string();
    flood("prometheus", &address, GET_METRICS, IDLE, || {
        get_ok(&address, "/metrics")
    })
    .await;
    slowloris("prometheus", &address, &endless_head()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slowloris_on_the_api_gateway() {
    use micro_gateway::{Gateway, GatewayOptions};

    let service = echo_service(Arc::new(HttpTransport::new(HttpOptions::default()))).await;
    let opts = GatewayOptions {
        header_timeout: IDLE_TIMEOUT,
        max_connections: IDLE * 2,
        ..GatewayOptions::default()
    };
    let gateway = Gateway::bind("127.0.0.1:0", &service, opts)
        .await
        .expect("bind the gateway");
    let address = gateway.local_addr().to_string();
    flood(
        "gateway",
        &address,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
        IDLE,
        || get_ok(&address, "/health"),
    )
    .await;
    slowloris("gateway", &address, &endless_head()).await;
    within("the gateway's shutdown", PATIENCE, gateway.shutdown()).await;
    service.stop().await.expect("stop");
}
