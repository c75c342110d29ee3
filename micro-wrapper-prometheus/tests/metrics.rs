//! Metrics over real calls: services on the http transport on loopback, events through the
//! in-memory broker, and a scrape of `/metrics` over HTTP.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use micro::broker::{Delivery, MemoryBroker};
use micro::registry::MemoryRegistry;
use micro::{ClientOptions, Event, Handler, Json, Request, Response, Service};
use micro_wrapper_prometheus::Metrics;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, Notify};
use tower::{Layer, Service as _};

/// Bounds a future so that a bug fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    name: String,
}

/// A service on `registry` over the http transport, every path measured.
fn builder(name: &str, registry: &MemoryRegistry, metrics: &Metrics) -> micro::ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport("http").expect("http transport"))
        .broker(Arc::new(MemoryBroker::new()))
        .client_options(ClientOptions {
            content_type: "application/json".into(),
            retries: 0,
            ..Default::default()
        })
        .client_layer(metrics.clone())
        .attempt_layer(metrics.clone())
        .handler_layer(metrics.clone())
        .publish_layer(metrics.clone())
}

/// Lets a test hold the "slow" call inside its handler.
#[derive(Clone, Default)]
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

/// `Stock.Check`: 500 for "fail", 400 for "bad", waits at the gate for "slow".
fn stock(gate: Gate) -> Handler {
    Handler::new("Stock").unary("Check", move |req: Request<Json<Item>>| {
        let gate = gate.clone();
        Box::pin(async move {
            let item = req.into_inner().0;
            match item.name.as_str() {
                "fail" => Err(micro::Error::internal("stock", "the shelf fell over")),
                "bad" => Err(micro::Error::bad_request("stock", "no such item")),
                "slow" => {
                    gate.entered.notify_one();
                    gate.release.notified().await;
                    Ok(Response::new(Json(item)))
                }
                _ => Ok(Response::new(Json(item))),
            }
        })
    })
}

/// The value of the sample `name{labels...}` in the text exposition, 0 when absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (metric == name && all).then(|| value.parse().ok())?
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
    found.first().copied().unwrap_or(0.0)
}

const CHECK: [(&str, &str); 2] = [("service", "stock"), ("endpoint", "Stock.Check")];

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    CHECK.iter().chain(extra).copied().collect()
}

async fn call(client: &micro::Client, req: Request<Json<Item>>) -> micro::Result<Item> {
    within(
        "the call",
        client.unary::<Json<Item>, Json<Item>>("stock", "Stock.Check", req),
    )
    .await
    .map(|r| r.into_inner().0)
}

fn item(name: &str) -> Request<Json<Item>> {
    Request::new(Json(Item { name: name.into() }))
}

#[tokio::test]
async fn request_counters_match_the_calls_made_by_status() {
    let metrics = Metrics::new().expect("metrics");
    let registry = MemoryRegistry::new();
    let server = builder("stock", &registry, &metrics)
        .handler(stock(Gate::default()))
        .build()
        .expect("build stock");
    server.start().await.expect("start stock");
    let client = builder("shop", &registry, &metrics)
        .build()
        .expect("build shop")
        .client();

    for _ in 0..3 {
        call(&client, item("socks")).await.expect("ok call");
    }
    for _ in 0..2 {
        assert_eq!(
            call(&client, item("fail")).await.map_err(|e| e.code),
            Err(500)
        );
    }
    assert_eq!(
        call(&client, item("bad")).await.map_err(|e| e.code),
        Err(400)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = closed.local_addr().expect("address").to_string();
    drop(closed);
    let unreachable = call(&client, item("socks").with_address(nowhere))
        .await
        .expect_err("nobody there");

    let text = metrics.render().expect("render");
    for side in ["client", "server"] {
        let requests = format!("micro_{side}_requests_total");
        let ok = with(&[("status", "success"), ("code", "200")]);
        assert_eq!(sample(&text, &requests, &ok), 3.0, "{side}\n{text}");
        let failed = with(&[("status", "failure"), ("code", "500")]);
        // The call to nowhere fails on the client side only, with the transport's code.
        let nowhere = f64::from(u8::from(side == "client" && unreachable.code == 500));
        assert_eq!(
            sample(&text, &requests, &failed),
            2.0 + nowhere,
            "{side}\n{text}"
        );
        let bad = with(&[("status", "failure"), ("code", "400")]);
        assert_eq!(sample(&text, &requests, &bad), 1.0, "{side}");
        let durations = format!("micro_{side}_request_duration_seconds_count");
        let calls = if side == "client" { 7.0 } else { 6.0 };
        assert_eq!(sample(&text, &durations, &CHECK), calls, "{side}");
        let in_flight = format!("micro_{side}_requests_in_flight");
        assert_eq!(sample(&text, &in_flight, &CHECK), 0.0, "{side}");
    }
    let attempts = "micro_client_attempts_total";
    assert_eq!(sample(&text, attempts, &with(&[("code", "200")])), 3.0);
    assert_eq!(sample(&text, attempts, &with(&[("code", "500")])), 2.0);
    let code = unreachable.code.to_string();
    let failed = with(&[("status", "failure"), ("code", &code)]);
    assert!(sample(&text, "micro_client_requests_total", &failed) >= 1.0);
    let not_reached = with(&[("status", "failure"), ("code", "unreachable")]);
    assert_eq!(sample(&text, attempts, &not_reached), 1.0, "{text}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn streams_are_counted_and_unknown_endpoints_make_no_series() {
    let metrics = Metrics::new().expect("metrics");
    let registry = MemoryRegistry::new();
    let watch = Handler::new("Stock").server_stream(
        "Watch",
        |req: Request<Json<Item>>, mut stream: micro::ServerStream<Json<Item>, Json<Item>>| {
            Box::pin(async move {
                let item = req.into_inner().0;
                for _ in 0..2 {
                    stream.send(&Json(item.clone())).await?;
                }
                Ok(())
            })
        },
    );
    let server = builder("stock", &registry, &metrics)
        .handler(watch)
        .build()
        .expect("build stock");
    server.start().await.expect("start stock");
    let client = builder("shop", &registry, &metrics)
        .build()
        .expect("build shop")
        .client();
    for _ in 0..3 {
        let mut stream = within(
            "open",
            client.server_stream::<Json<Item>, Json<Item>>("stock", "Stock.Watch", item("socks")),
        )
        .await
        .expect("open the stream");
        let mut replies = 0;
        while within("a reply", stream.recv())
            .await
            .expect("reply")
            .is_some()
        {
            replies += 1;
        }
        assert_eq!(replies, 2);
    }
    let e = within(
        "unknown",
        client.unary::<Json<Item>, Json<Item>>("stock", "Stock.Nope", item("x")),
    )
    .await
    .expect_err("no such endpoint");
    assert_eq!(e.code, 404);

    let text = metrics.render().expect("render");
    let watch = [("service", "stock"), ("endpoint", "Stock.Watch")];
    let ok: Vec<_> = watch
        .iter()
        .chain(&[("status", "success"), ("code", "200")])
        .copied()
        .collect();
    for side in ["client", "server"] {
        let requests = format!("micro_{side}_requests_total");
        assert_eq!(sample(&text, &requests, &ok), 3.0, "{side}\n{text}");
    }
    // The server answers an endpoint it does not have before any layer: no series for it.
    let server_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("micro_server") && l.contains("Stock.Nope"))
        .collect();
    assert!(server_lines.is_empty(), "{server_lines:?}");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn the_in_flight_gauge_rises_during_a_slow_call_and_comes_back() {
    let metrics = Metrics::new().expect("metrics");
    let registry = MemoryRegistry::new();
    let gate = Gate::default();
    let server = builder("stock", &registry, &metrics)
        .handler(stock(gate.clone()))
        .build()
        .expect("build stock");
    server.start().await.expect("start stock");
    let client = builder("shop", &registry, &metrics)
        .build()
        .expect("build shop")
        .client();

    let slow = tokio::spawn(async move { call(&client, item("slow")).await });
    within("the handler to start", gate.entered.notified()).await;
    let text = metrics.render().expect("render");
    assert_eq!(
        sample(&text, "micro_server_requests_in_flight", &CHECK),
        1.0
    );
    assert_eq!(
        sample(&text, "micro_client_requests_in_flight", &CHECK),
        1.0
    );
    let done = sample(&text, "micro_server_requests_total", &CHECK);
    assert_eq!(done, 0.0, "nothing has finished yet");

    gate.release.notify_one();
    within("the slow call", slow)
        .await
        .expect("task")
        .expect("slow call");
    let text = metrics.render().expect("render");
    assert_eq!(
        sample(&text, "micro_server_requests_in_flight", &CHECK),
        0.0
    );
    assert_eq!(
        sample(&text, "micro_client_requests_in_flight", &CHECK),
        0.0
    );
    let ok = with(&[("status", "success")]);
    assert_eq!(sample(&text, "micro_server_requests_total", &ok), 1.0);
    server.stop().await.expect("stop");
}

/// Reports each delivery after the layers inside it (the metrics) are done with it.
#[derive(Clone)]
struct Done(mpsc::UnboundedSender<()>);

impl<S> Layer<S> for Done {
    type Service = After<S>;
    fn layer(&self, inner: S) -> After<S> {
        After {
            inner,
            done: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct After<S> {
    inner: S,
    done: mpsc::UnboundedSender<()>,
}

impl<S> tower::Service<Delivery> for After<S>
where
    S: tower::Service<Delivery, Response = (), Error = micro::Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = micro::Error;
    type Future = micro::BoxFuture<'static, micro::Result<()>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<micro::Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, d: Delivery) -> Self::Future {
        let fut = self.inner.call(d);
        let done = self.done.clone();
        Box::pin(async move {
            let out = fut.await;
            let _ = done.send(());
            out
        })
    }
}

#[tokio::test]
async fn subscriber_and_publisher_counters_by_topic_and_outcome() {
    let metrics = Metrics::new().expect("metrics");
    let registry = MemoryRegistry::new();
    let broker = Arc::new(MemoryBroker::new());
    let (done, mut handled) = mpsc::unbounded_channel();
    let billing = builder("billing", &registry, &metrics)
        .broker(broker.clone())
        .subscriber_layer(metrics.clone())
        .subscriber_layer(Done(done))
        .subscriber("orders", |e: Event<Json<Item>>| {
            Box::pin(async move {
                match e.message.0.name.as_str() {
                    "fail" => Err(micro::Error::internal("billing", "ledger locked")),
                    _ => Ok(()),
                }
            })
        })
        .build()
        .expect("build billing");
    billing.start().await.expect("start billing");
    let shop = builder("shop", &registry, &metrics)
        .broker(broker)
        .build()
        .expect("build shop");
    for name in ["a", "fail", "b", "c"] {
        within(
            "publish",
            shop.publish("orders", &Json(Item { name: name.into() })),
        )
        .await
        .expect("publish");
    }
    for _ in 0..4 {
        within("a delivery", handled.recv()).await.expect("handled");
    }

    let text = metrics.render().expect("render");
    let topic = ("topic", "orders");
    let delivered = "micro_subscriber_messages_total";
    let ok = [topic, ("status", "success"), ("code", "200")];
    assert_eq!(sample(&text, delivered, &ok), 3.0, "{text}");
    let failed = [topic, ("status", "failure"), ("code", "500")];
    assert_eq!(sample(&text, delivered, &failed), 1.0);
    let durations = "micro_subscriber_message_duration_seconds_count";
    assert_eq!(sample(&text, durations, &[topic]), 4.0);
    assert_eq!(
        sample(&text, "micro_subscriber_messages_in_flight", &[topic]),
        0.0
    );
    let published = [topic, ("status", "success")];
    assert_eq!(
        sample(&text, "micro_publisher_messages_total", &published),
        4.0
    );
    billing.stop().await.expect("stop");
}

/// A plain HTTP/1.1 request over a fresh connection: (status line, headers, body).
async fn http(address: std::net::SocketAddr, request: &str) -> (String, String, String) {
    let mut stream = within("connect", tokio::net::TcpStream::connect(address))
        .await
        .expect("connect to /metrics");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    within("the response", stream.read_to_end(&mut raw))
        .await
        .expect("read the response");
    let raw = String::from_utf8(raw).expect("utf-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a full response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

#[tokio::test]
async fn the_metrics_endpoint_serves_them_over_http() {
    let metrics = Metrics::new().expect("metrics");
    let registry = MemoryRegistry::new();
    let server = builder("stock", &registry, &metrics)
        .handler(stock(Gate::default()))
        .build()
        .expect("build stock");
    server.start().await.expect("start stock");
    let client = builder("shop", &registry, &metrics)
        .build()
        .expect("build shop")
        .client();
    call(&client, item("socks")).await.expect("call");

    let endpoint = metrics.serve("127.0.0.1:0").await.expect("serve");
    assert!(endpoint.local_addr().ip().is_loopback());
    assert_eq!(
        endpoint.url(),
        format!("http://{}/metrics", endpoint.local_addr())
    );
    let get = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (status, headers, body) = http(endpoint.local_addr(), get).await;
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    assert!(body.contains("# TYPE micro_server_requests_total counter"));
    assert!(body.contains("# TYPE micro_client_request_duration_seconds histogram"));
    let ok = with(&[("status", "success"), ("code", "200")]);
    assert_eq!(sample(&body, "micro_server_requests_total", &ok), 1.0);
    assert_eq!(sample(&body, "micro_client_requests_total", &ok), 1.0);
    let le = with(&[("le", "+Inf")]);
    let buckets = "micro_server_request_duration_seconds_bucket";
    assert_eq!(sample(&body, buckets, &le), 1.0);

    let other = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let (status, _, _) = http(endpoint.local_addr(), other).await;
    assert!(status.ends_with("404 Not Found"), "{status}");
    let post = "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (status, headers, _) = http(endpoint.local_addr(), post).await;
    assert!(status.ends_with("405 Method Not Allowed"), "{status}");
    assert!(headers.contains("allow: get, head"), "{headers}");

    endpoint.shutdown();
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn the_metrics_endpoint_cuts_off_silent_clients_and_bounds_connections() {
    let metrics = Metrics::new().expect("metrics");
    let opts = micro_wrapper_prometheus::EndpointOptions {
        header_timeout: std::time::Duration::from_secs(2),
        max_connections: 2,
    };
    let endpoint = metrics
        .serve_with("127.0.0.1:0", opts)
        .await
        .expect("serve");
    let address = endpoint.local_addr();

    // A client that connects and says nothing is closed after the head deadline.
    let mut silent = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut rest = Vec::new();
    within(
        "the silent client is cut off",
        silent.read_to_end(&mut rest),
    )
    .await
    .expect("closed, not reset");

    // Two connections fill the endpoint: a third is closed at once, unserved ...
    let slow = |address| async move {
        let mut s = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("a first line");
        s
    };
    let (first, second) = (slow(address).await, slow(address).await);
    let get = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut third = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let _ = third.write_all(get.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = within("the third is closed", third.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // ... and once they are gone (the deadline closes them), scrapes are served again.
    drop((first, second));
    let (status, _, _) = within("a scrape after", async {
        loop {
            let mut s = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            let _ = s.write_all(get.as_bytes()).await;
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw).await;
            if !raw.is_empty() {
                return http(address, get).await;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(status.ends_with("200 OK"), "{status}");
}

#[tokio::test]
async fn a_namespace_and_constant_labels_name_the_metrics() {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::builder()
        .namespace("shop")
        .const_label("micro_name", "shop")
        .registry(registry.clone())
        .build()
        .expect("metrics");
    // Any service on the handler path will do.
    let handler = tower::service_fn(|_call: micro::rpc::ServerCall| async {
        Ok::<_, micro::Error>(micro::rpc::Response::default())
    });
    let call = micro::rpc::ServerCall {
        request: micro::rpc::Request {
            service: "shop".into(),
            endpoint: "Shop.Buy".into(),
            ..Default::default()
        },
        deadline: None,
        codec: micro::Codecs::default()
            .get("application/json")
            .expect("json codec"),
        kind: micro::rpc::CallKind::Unary,
    };
    metrics.layer(handler).call(call).await.expect("handled");
    let text = metrics.render().expect("render");
    let ok = [
        ("micro_name", "shop"),
        ("service", "shop"),
        ("endpoint", "Shop.Buy"),
        ("status", "success"),
    ];
    assert_eq!(
        sample(&text, "shop_server_requests_total", &ok),
        1.0,
        "{text}"
    );
    assert!(!text.contains("micro_server_requests_total"));
    // Two sets of the same metrics cannot share a registry: clone one instead.
    let again = Metrics::builder()
        .namespace("shop")
        .registry(registry)
        .build();
    let err = again.expect_err("duplicate metrics");
    assert!(
        err.detail.contains("cannot create the Micro metrics"),
        "{err}"
    );
}
