//! Spans over real calls: services on the http transport and the http broker on loopback, spans
//! collected with the SDK's in-memory exporter. One test re-runs this test binary as service C
//! in a child process, which reports its spans as JSON on stdout, so the trace is followed
//! across a process boundary the way it travels in production: in request headers.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use micro::registry::MemoryRegistry;
use micro::rpc::Server as _;
use micro::{Client, ClientOptions, Event, Handler, Json, Request, Response, Service};
use micro_wrapper_otel::Tracing;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, SdkTracerProvider, Span as SdkSpan, SpanData, SpanProcessor,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

/// Set on the child process: the role it plays.
const CHILD_ROLE: &str = "MICRO_OTEL_TEST_CHILD_ROLE";

/// Bounds a future so that a bug fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 30 s"))
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Ask {
    text: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Answer {
    text: String,
    /// The `traceparent` the handler found in its request metadata.
    traceparent: String,
}

/// Counts ended spans, so a test can wait for the ones it expects without sleeping.
#[derive(Debug)]
struct Counting(watch::Sender<usize>);

impl SpanProcessor for Counting {
    fn on_start(&self, _span: &mut SdkSpan, _cx: &Context) {}

    fn on_end(&self, _span: SpanData) {
        self.0.send_modify(|n| *n += 1);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// A tracer provider exporting to memory.
struct Collector {
    provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
    ended: watch::Receiver<usize>,
    /// Spans already handed out by `take`.
    taken: AtomicUsize,
}

impl Collector {
    fn new() -> Self {
        let exporter = InMemorySpanExporter::default();
        let (tx, ended) = watch::channel(0);
        // Processors run in order: the span is in the exporter before it is counted.
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_span_processor(Counting(tx))
            .build();
        Collector {
            provider,
            exporter,
            ended,
            taken: AtomicUsize::new(0),
        }
    }

    fn tracing(&self) -> Tracing {
        Tracing::from_provider(&self.provider)
    }

    /// A root span for the test's own work, as a context to run calls in.
    fn root(&self, name: &'static str) -> Context {
        let span = self.provider.tracer("test").start(name);
        Context::current_with_span(span)
    }

    /// Waits until `n` spans have ended since the last [`Collector::take`], then returns them
    /// (and any more that ended meanwhile).
    async fn spans(&self, n: usize) -> Vec<SpanData> {
        let target = self.taken.load(Ordering::SeqCst) + n;
        let mut ended = self.ended.clone();
        within(
            &format!("{n} spans"),
            ended.wait_for(|count| *count >= target),
        )
        .await
        .expect("span counter");
        self.exporter.get_finished_spans().expect("finished spans")
    }

    /// Waits for `n` spans, checks there are no more, returns them and starts over.
    async fn take(&self, n: usize) -> Vec<SpanData> {
        let spans = self.spans(n).await;
        assert_eq!(spans.len(), n, "spans: {:#?}", names(&spans));
        self.exporter.reset();
        self.taken.fetch_add(n, Ordering::SeqCst);
        spans
    }
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{:?} {}", s.span_kind, s.name))
        .collect()
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The one span of `kind` named `name` that is (`Some(n)`: attempt `n`) or is not (`None`) an
/// attempt span.
fn find<'a>(
    spans: &'a [SpanData],
    kind: SpanKind,
    name: &str,
    attempt: Option<u32>,
) -> &'a SpanData {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == kind && s.name == name)
        .filter(|s| attr(s, "micro.attempt") == attempt.map(|n| n.to_string()))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{kind:?} {name} attempt {attempt:?} in {:#?}",
        names(spans)
    );
    found[0]
}

fn is_error(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
}

fn json_client() -> ClientOptions {
    ClientOptions {
        content_type: "application/json".into(),
        retries: 0,
        ..Default::default()
    }
}

/// A service on `registry` over the http transport, every path traced.
fn builder(name: &str, registry: &MemoryRegistry, tracing: &Tracing) -> micro::ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport("http").expect("http transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .client_options(json_client())
        .client_layer(tracing.clone())
        .attempt_layer(tracing.clone())
        .handler_layer(tracing.clone())
        .publish_layer(tracing.clone())
        .subscriber_layer(tracing.clone())
}

/// The http broker of a service on `registry`.
fn http_broker(registry: &MemoryRegistry) -> Arc<dyn micro::broker::Broker> {
    let registry: Arc<dyn micro::registry::Registry> = Arc::new(registry.clone());
    micro::plugins::broker("http", None, &registry).expect("http broker")
}

/// Service C's handler: answers, fails with 500 on "fail", 400 on "bad", never answers
/// "slow".
fn store() -> Handler {
    Handler::new("Store").unary("Check", |req: Request<Json<Ask>>| {
        Box::pin(async move {
            let traceparent = req.metadata().get("traceparent").unwrap_or("").to_string();
            let text = req.into_inner().0.text;
            match text.as_str() {
                "fail" => Err(micro::Error::internal("svc-c", "the store is on fire")),
                "bad" => Err(micro::Error::bad_request("svc-c", "no such item")),
                "slow" => std::future::pending().await,
                _ => Ok(Response::new(Json(Answer {
                    text: format!("checked {text}"),
                    traceparent,
                }))),
            }
        })
    })
}

/// Where service B sends its calls: its own client, and C's address when C is not in the
/// registry (another process).
type Downstream = Arc<OnceLock<(Client, Option<String>)>>;

async fn call_c(downstream: &Downstream, text: String) -> micro::Result<Answer> {
    let (client, address) = downstream
        .get()
        .ok_or_else(|| micro::Error::internal("svc-b", "not started"))?;
    let mut req = Request::new(Json(Ask { text }));
    if let Some(a) = address {
        req = req.with_address(a.clone());
    }
    let rsp = client
        .unary::<Json<Ask>, Json<Answer>>("svc-c", "Store.Check", req)
        .await?;
    Ok(rsp.into_inner().0)
}

/// Service B's handler: forwards to C, with no tracing code of its own.
fn relay(downstream: Downstream) -> Handler {
    Handler::new("Relay").unary("Forward", move |req: Request<Json<Ask>>| {
        let downstream = downstream.clone();
        Box::pin(async move {
            let answer = call_c(&downstream, req.into_inner().0.text).await?;
            Ok(Response::new(Json(answer)))
        })
    })
}

fn port_of(address: &str) -> String {
    address
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_call_through_b_to_c_is_one_trace_of_parent_and_child_spans() {
    let collector = Collector::new();
    let tracing = collector.tracing();
    let registry = MemoryRegistry::new();
    let c = builder("svc-c", &registry, &tracing)
        .handler(store())
        .build()
        .expect("build c");
    c.start().await.expect("start c");
    let downstream = Downstream::default();
    let b = builder("svc-b", &registry, &tracing)
        .handler(relay(downstream.clone()))
        .build()
        .expect("build b");
    b.start().await.expect("start b");
    let _ = downstream.set((b.client(), None));
    let a = builder("svc-a", &registry, &tracing)
        .build()
        .expect("build a");

    let root = collector.root("checkout");
    let req = Request::new(Json(Ask {
        text: "socks".into(),
    }));
    let answer = within(
        "the call",
        a.client()
            .unary::<Json<Ask>, Json<Answer>>("svc-b", "Relay.Forward", req)
            .with_context(root.clone()),
    )
    .await
    .expect("call")
    .into_inner()
    .0;
    root.span().end();
    assert_eq!(answer.text, "checked socks");

    let spans = collector.spans(7).await;
    assert_eq!(spans.len(), 7, "{:#?}", names(&spans));
    let root = find(&spans, SpanKind::Internal, "checkout", None);
    let a_call = find(&spans, SpanKind::Client, "svc-b/Relay.Forward", None);
    let a_try = find(&spans, SpanKind::Client, "svc-b/Relay.Forward", Some(0));
    let b_server = find(&spans, SpanKind::Server, "svc-b/Relay.Forward", None);
    let b_call = find(&spans, SpanKind::Client, "svc-c/Store.Check", None);
    let b_try = find(&spans, SpanKind::Client, "svc-c/Store.Check", Some(0));
    let c_server = find(&spans, SpanKind::Server, "svc-c/Store.Check", None);

    let trace = root.span_context.trace_id();
    let chain = [root, a_call, a_try, b_server, b_call, b_try, c_server];
    for pair in chain.windows(2) {
        assert_eq!(
            pair[1].parent_span_id,
            pair[0].span_context.span_id(),
            "{} is a child of {}",
            pair[1].name,
            pair[0].name
        );
    }
    for span in chain {
        assert_eq!(span.span_context.trace_id(), trace, "{}", span.name);
        assert_eq!(span.status, Status::Unset, "{}", span.name);
    }
    // Server spans continue a context that came over the wire.
    assert!(b_server.parent_span_is_remote && c_server.parent_span_is_remote);
    assert!(!a_call.parent_span_is_remote && !b_call.parent_span_is_remote);

    // RPC semantic conventions.
    assert_eq!(attr(a_try, "rpc.system").as_deref(), Some("micro"));
    assert_eq!(attr(a_try, "rpc.service").as_deref(), Some("svc-b"));
    assert_eq!(attr(a_try, "rpc.method").as_deref(), Some("Relay.Forward"));
    assert_eq!(attr(a_try, "server.address").as_deref(), Some("127.0.0.1"));
    let b_address = b.server().address().expect("b's address");
    assert_eq!(attr(a_try, "server.port"), Some(port_of(&b_address)));
    assert_eq!(attr(a_try, "rpc.micro.status_code").as_deref(), Some("200"));
    assert_eq!(attr(c_server, "rpc.service").as_deref(), Some("svc-c"));
    assert_eq!(attr(c_server, "rpc.system").as_deref(), Some("micro"));
    assert!(attr(c_server, "error.type").is_none());

    // C's handler saw the W3C header of the attempt that reached it.
    assert_eq!(
        answer.traceparent,
        format!("00-{trace}-{}-01", b_try.span_context.span_id())
    );

    b.stop().await.expect("stop b");
    c.stop().await.expect("stop c");
}

#[tokio::test]
async fn errors_retries_and_deadlines_show_in_status_and_attempt_spans() {
    let collector = Collector::new();
    let tracing = collector.tracing();
    let registry = MemoryRegistry::new();
    let c = builder("svc-c", &registry, &tracing)
        .handler(store())
        .build()
        .expect("build c");
    c.start().await.expect("start c");
    let client = builder("svc-a", &registry, &tracing)
        .build()
        .expect("build a")
        .client();
    let ask = |text: &str| Request::new(Json(Ask { text: text.into() }));
    let call = |req| {
        let client = client.clone();
        async move {
            within(
                "the call",
                client.unary::<Json<Ask>, Json<Answer>>("svc-c", "Store.Check", req),
            )
            .await
            .expect_err("the call fails")
        }
    };

    // A 500 is retried under Go Micro's policy: two attempts, each reaching the server, all
    // of them errors.
    let err = call(
        ask("fail")
            .with_retries(1)
            .with_retry(micro::rpc::RetryPolicy::GoMicro),
    )
    .await;
    assert_eq!(err.code, 500);
    let spans = collector.take(5).await;
    let name = "svc-c/Store.Check";
    let a_call = find(&spans, SpanKind::Client, name, None);
    assert!(is_error(a_call));
    assert_eq!(attr(a_call, "error.type").as_deref(), Some("500"));
    assert_eq!(
        attr(a_call, "rpc.micro.status_code").as_deref(),
        Some("500")
    );
    for n in 0..2 {
        let attempt = find(&spans, SpanKind::Client, name, Some(n));
        assert_eq!(attempt.parent_span_id, a_call.span_context.span_id());
        assert!(is_error(attempt));
        assert_eq!(attr(attempt, "error.type").as_deref(), Some("500"));
    }
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(servers.len(), 2);
    assert!(
        servers.iter().all(|s| is_error(s)),
        "a 500 is a server fault"
    );

    // A 400 is not retried, and is the caller's fault: the server span's status stays unset.
    let err = call(ask("bad").with_retries(1)).await;
    assert_eq!(err.code, 400);
    let spans = collector.take(3).await;
    assert!(is_error(find(&spans, SpanKind::Client, name, None)));
    let server = find(&spans, SpanKind::Server, name, None);
    assert_eq!(server.status, Status::Unset);
    assert_eq!(attr(server, "error.type").as_deref(), Some("400"));
    assert_eq!(
        attr(server, "rpc.micro.status_code").as_deref(),
        Some("400")
    );

    // A node that is not there: the attempt says unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("address").to_string();
    drop(closed);
    call(ask("x").with_address(address.clone())).await;
    let spans = collector.take(2).await;
    let attempt = find(&spans, SpanKind::Client, name, Some(0));
    assert!(is_error(attempt));
    assert_eq!(attr(attempt, "error.type").as_deref(), Some("unreachable"));
    assert_eq!(attr(attempt, "server.port"), Some(port_of(&address)));
    let a_call = find(&spans, SpanKind::Client, name, None);
    assert_eq!(attr(a_call, "server.port"), Some(port_of(&address)));

    // Past the deadline the client gives up and the server drops the handler: both spans end
    // as cancelled rather than looking like successes.
    let err = call(ask("slow").with_timeout(Duration::from_millis(300))).await;
    assert_eq!(err.code, 408);
    let spans = collector.take(3).await;
    assert_eq!(
        attr(find(&spans, SpanKind::Client, name, None), "error.type").as_deref(),
        Some("408")
    );
    for span in [
        find(&spans, SpanKind::Client, name, Some(0)),
        find(&spans, SpanKind::Server, name, None),
    ] {
        assert!(is_error(span), "{:?}", span.span_kind);
        assert_eq!(attr(span, "error.type").as_deref(), Some("cancelled"));
    }
    c.stop().await.expect("stop c");
}

#[tokio::test]
async fn a_publish_through_the_broker_to_b_and_on_to_c_in_another_process_is_one_trace() {
    // Service C runs in a child process: this test binary, running `child_service_c`.
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "child_service_c",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, "service-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn service c");
    let mut lines = BufReader::new(child.stdout.take().expect("child stdout")).lines();
    let mut next_value = async |prefix: &str| loop {
        match lines.next_line().await.expect("read the child's stdout") {
            Some(line) => {
                // libtest may have written `test child_service_c ... ` on the same line.
                if let Some((_, v)) = line.split_once(prefix) {
                    return v.to_string();
                }
            }
            None => panic!("service c exited before printing {prefix}"),
        }
    };
    let c_address = within("service c to start", next_value("MICRO_CHILD_ADDR=")).await;

    let collector = Collector::new();
    let tracing = collector.tracing();
    let registry = MemoryRegistry::new();
    let downstream = Downstream::default();
    let (answers, mut answered) = mpsc::unbounded_channel();
    let relay = downstream.clone();
    let b = builder("svc-b", &registry, &tracing)
        .broker(http_broker(&registry))
        .subscriber("orders", move |e: Event<Json<Ask>>| {
            let (relay, answers) = (relay.clone(), answers.clone());
            Box::pin(async move {
                let answer = call_c(&relay, e.message.0.text).await?;
                let _ = answers.send(answer);
                Ok(())
            })
        })
        .build()
        .expect("build b");
    b.start().await.expect("start b");
    let _ = downstream.set((b.client(), Some(c_address)));
    let a = builder("svc-a", &registry, &tracing)
        .broker(http_broker(&registry))
        .build()
        .expect("build a");
    a.start().await.expect("start a");

    let root = collector.root("checkout");
    within(
        "the publish",
        a.publish(
            "orders",
            &Json(Ask {
                text: "boots".into(),
            }),
        )
        .with_context(root.clone()),
    )
    .await
    .expect("publish");
    root.span().end();
    let answer = within("b's call to c", answered.recv())
        .await
        .expect("answer");
    assert_eq!(answer.text, "checked boots");

    // root, A's publish, B's delivery, B's call and attempt; C's span is in the child.
    let spans = collector.spans(5).await;
    assert_eq!(spans.len(), 5, "{:#?}", names(&spans));
    let root = find(&spans, SpanKind::Internal, "checkout", None);
    let publish = find(&spans, SpanKind::Producer, "publish orders", None);
    let process = find(&spans, SpanKind::Consumer, "process orders", None);
    let b_call = find(&spans, SpanKind::Client, "svc-c/Store.Check", None);
    let b_try = find(&spans, SpanKind::Client, "svc-c/Store.Check", Some(0));
    let trace = root.span_context.trace_id();
    for pair in [root, publish, process, b_call, b_try].windows(2) {
        assert_eq!(
            pair[1].parent_span_id,
            pair[0].span_context.span_id(),
            "{} is a child of {}",
            pair[1].name,
            pair[0].name
        );
        assert_eq!(pair[1].span_context.trace_id(), trace);
    }
    assert!(
        process.parent_span_is_remote,
        "the context came through the broker"
    );
    for (span, operation) in [(publish, "send"), (process, "process")] {
        assert_eq!(attr(span, "messaging.system").as_deref(), Some("micro"));
        assert_eq!(
            attr(span, "messaging.destination.name").as_deref(),
            Some("orders")
        );
        assert_eq!(
            attr(span, "messaging.operation.type").as_deref(),
            Some(operation)
        );
        assert_eq!(
            attr(span, "messaging.message.id").map(|id| id.len()),
            Some(36)
        );
    }
    assert_eq!(
        attr(publish, "messaging.message.id"),
        attr(process, "messaging.message.id")
    );

    // Now the child's spans.
    let stdin = child.stdin.as_mut().expect("child stdin");
    stdin.write_all(b"report\n").await.expect("ask for spans");
    stdin.flush().await.expect("flush");
    let reported = within("service c's spans", next_value("MICRO_CHILD_SPANS=")).await;
    let child_spans: Vec<BTreeMap<String, serde_json::Value>> =
        serde_json::from_str(&reported).expect("the child's JSON");
    assert_eq!(child_spans.len(), 1, "{child_spans:#?}");
    let c_server = &child_spans[0];
    let field = |k: &str| c_server[k].as_str().unwrap_or_default().to_string();
    assert_eq!(field("name"), "svc-c/Store.Check");
    assert_eq!(field("kind"), "Server");
    assert_eq!(field("trace_id"), trace.to_string());
    assert_eq!(
        field("parent_span_id"),
        b_try.span_context.span_id().to_string()
    );
    assert_eq!(c_server["parent_is_remote"], serde_json::Value::Bool(true));
    assert_eq!(c_server["attributes"]["rpc.service"], "svc-c");
    assert_eq!(
        answer.traceparent,
        format!("00-{trace}-{}-01", b_try.span_context.span_id())
    );
    assert_ne!(field("span_id"), SpanId::INVALID.to_string());

    let status = within("service c to exit", child.wait())
        .await
        .expect("wait for service c");
    assert!(status.success(), "service c failed: {status}");
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

/// Service C for the cross-process test; does nothing in a normal run.
#[tokio::test]
async fn child_service_c() {
    if std::env::var(CHILD_ROLE).as_deref() != Ok("service-c") {
        return;
    }
    let collector = Collector::new();
    let registry = MemoryRegistry::new();
    let c = builder("svc-c", &registry, &collector.tracing())
        .handler(store())
        .build()
        .expect("build c");
    c.start().await.expect("start c");
    println!(
        "MICRO_CHILD_ADDR={}",
        c.server().address().expect("c's address")
    );
    // A plain thread: a blocked read must not keep the runtime from shutting down.
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = within("the parent's report request", rx).await;
    assert_eq!(line.as_deref().map(str::trim), Ok("report"));
    let spans = collector.spans(1).await;
    let report: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let attributes: BTreeMap<String, String> = s
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect();
            serde_json::json!({
                "name": s.name,
                "kind": format!("{:?}", s.span_kind),
                "trace_id": s.span_context.trace_id().to_string(),
                "span_id": s.span_context.span_id().to_string(),
                "parent_span_id": s.parent_span_id.to_string(),
                "parent_is_remote": s.parent_span_is_remote,
                "attributes": attributes,
            })
        })
        .collect();
    println!(
        "MICRO_CHILD_SPANS={}",
        serde_json::to_string(&report).expect("json")
    );
    c.stop().await.expect("stop c");
}
