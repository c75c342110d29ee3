//! The Service: typed pub/sub, tower layers on every path, lifecycle hooks.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use common::{builder, within};
use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest};
use greeter::GreeterService;
use micro::broker::{Broker, Delivery, MemoryBroker, Message as BrokerMessage, SubscribeOptions};
use micro::client::Call;
use micro::registry::{MemoryRegistry, Registry};
use micro::rpc::ServerCall;
use micro::{Event, Json};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tower::{Layer, Service};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
}

#[tokio::test]
async fn typed_events_reach_subscribers_with_micro_headers() {
    let registry = MemoryRegistry::new();
    let broker = Arc::new(MemoryBroker::new());
    let (tx, mut rx) = mpsc::unbounded_channel::<Event<Json<Order>>>();
    let (qtx, mut queued) = mpsc::unbounded_channel::<u32>();
    let mut b = builder("billing", &registry)
        .broker(broker.clone())
        .subscriber("orders", move |e: Event<Json<Order>>| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(e);
                Ok(())
            })
        });
    // Two members of one queue group share the messages.
    for _ in 0..2 {
        let qtx = qtx.clone();
        let opts = SubscribeOptions {
            queue: Some("workers".into()),
            auto_ack: true,
        };
        b = b.subscriber_with("orders", opts, move |e: Event<Json<Order>>| {
            let qtx = qtx.clone();
            Box::pin(async move {
                let _ = qtx.send(e.message.0.id);
                Ok(())
            })
        });
    }
    let billing = b.build().expect("build");
    billing.start().await.expect("start");

    // Subscribers are listed as endpoints, as Go Micro does.
    let registered = billing.server().registration().expect("registered");
    let sub = registered
        .endpoints
        .iter()
        .find(|e| e.name == "orders")
        .expect("subscriber endpoint");
    assert_eq!(
        sub.metadata.get("subscriber").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        sub.metadata.get("topic").map(String::as_str),
        Some("orders")
    );

    let shop = builder("shop", &registry)
        .broker(broker.clone())
        .build()
        .expect("build");
    let client = shop.client().with_content_type("application/json");
    for id in 1..=4 {
        client
            .publish("orders", &Json(Order { id }))
            .await
            .expect("publish");
    }
    let first = within("event", rx.recv()).await.expect("event");
    assert_eq!(first.message.0, Order { id: 1 });
    assert_eq!(first.topic, "orders");
    assert_eq!(first.header.get("Micro-Topic"), Some("orders"));
    assert_eq!(first.header.get("Content-Type"), Some("application/json"));
    assert!(first
        .header
        .get("Micro-Id")
        .is_some_and(|id| id.len() == 36));
    let mut group = Vec::new();
    for _ in 0..4 {
        group.push(within("queued", queued.recv()).await.expect("queued"));
    }
    group.sort();
    assert_eq!(group, [1, 2, 3, 4], "the queue group got each message once");
    billing.stop().await.expect("stop");
}

#[tokio::test]
async fn an_undecodable_event_is_reported_and_the_subscriber_goes_on() {
    let registry = MemoryRegistry::new();
    let broker = Arc::new(MemoryBroker::new());
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let errors = Arc::new(AtomicUsize::new(0));
    let seen = errors.clone();
    let service = builder("billing", &registry)
        .broker(broker.clone())
        .on_subscriber_error(move |_d: &Delivery, _e: &micro::Error| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .subscriber("orders", move |e: Event<Json<Order>>| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(e.message.0.id);
                Ok(())
            })
        })
        .build()
        .expect("build");
    service.start().await.expect("start");
    // A foreign publisher sends garbage, then a missing content type with a bad body.
    let mut garbage = BrokerMessage::default();
    garbage.header.insert("Content-Type", "application/json");
    garbage.body = bytes::Bytes::from_static(b"{not json");
    broker.publish("orders", garbage).await.expect("publish");
    broker
        .publish("orders", BrokerMessage::default())
        .await
        .expect("publish");
    service
        .client()
        .with_content_type("application/json")
        .publish("orders", &Json(Order { id: 9 }))
        .await
        .expect("publish");
    assert_eq!(within("good event", rx.recv()).await, Some(9));
    assert_eq!(errors.load(Ordering::SeqCst), 2);
    service.stop().await.expect("stop");
}

/// A layer that records what passes through it.
#[derive(Clone)]
struct Record<S> {
    inner: S,
    log: Arc<Mutex<Vec<String>>>,
    tag: &'static str,
}

#[derive(Clone)]
struct RecordLayer {
    log: Arc<Mutex<Vec<String>>>,
    tag: &'static str,
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;
    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            log: self.log.clone(),
            tag: self.tag,
        }
    }
}

trait Describe {
    fn describe(&self) -> String;
}
impl Describe for Call {
    fn describe(&self) -> String {
        format!("{}.{}", self.request.service, self.request.endpoint)
    }
}
impl Describe for micro::client::Attempt {
    fn describe(&self) -> String {
        format!("{} #{}", self.request.endpoint, self.number)
    }
}
impl Describe for ServerCall {
    fn describe(&self) -> String {
        self.request.endpoint.clone()
    }
}
impl Describe for Delivery {
    fn describe(&self) -> String {
        self.topic.clone()
    }
}
impl Describe for micro::client::Publication {
    fn describe(&self) -> String {
        self.topic.clone()
    }
}

impl<S, R> Service<R> for Record<S>
where
    S: Service<R>,
    R: Describe,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        if let Ok(mut log) = self.log.lock() {
            log.push(format!("{} {}", self.tag, req.describe()));
        }
        self.inner.call(req)
    }
}

#[tokio::test]
async fn tower_layers_wrap_the_client_handler_publish_and_subscriber_paths() {
    let registry = MemoryRegistry::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let layer = |tag| RecordLayer {
        log: log.clone(),
        tag,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let service = builder("greeter", &registry)
        .handler(greeter_handler(GreeterService))
        .client_layer(layer("client"))
        .attempt_layer(layer("attempt"))
        .publish_layer(layer("publish"))
        .handler_layer(layer("handler"))
        .subscriber_layer(layer("subscriber"))
        .subscriber("pings", move |_e: Event<Json<u8>>| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(());
                Ok(())
            })
        })
        .build()
        .expect("build");
    service.start().await.expect("start");
    // Switching codecs keeps the middleware.
    let greeter = GreeterClient::new(
        "greeter",
        service.client().with_content_type("application/json"),
    );
    within("call", greeter.hello(HelloRequest { name: "L".into() }))
        .await
        .expect("call");
    service
        .client()
        .with_content_type("application/json")
        .publish("pings", &Json(1u8))
        .await
        .expect("publish");
    within("event", rx.recv()).await.expect("event");
    service.stop().await.expect("stop");
    let log = log.lock().expect("log").clone();
    assert_eq!(
        log,
        [
            "client greeter.Greeter.Hello",
            "attempt Greeter.Hello #0",
            "handler Greeter.Hello",
            "publish pings",
            "subscriber pings"
        ]
    );
}

#[tokio::test]
async fn hooks_run_in_order_around_start_and_stop() {
    let registry = MemoryRegistry::new();
    let log = Arc::new(Mutex::new(Vec::<&str>::new()));
    let hook = |name: &'static str| {
        let log = log.clone();
        move || {
            let log = log.clone();
            async move {
                log.lock().expect("log").push(name);
                Ok(())
            }
        }
    };
    let service = builder("hooked", &registry)
        .before_start(hook("before_start"))
        .after_start(hook("after_start"))
        .before_stop(hook("before_stop"))
        .after_stop(hook("after_stop"))
        .build()
        .expect("build");
    service.start().await.expect("start");
    service.stop().await.expect("stop");
    assert_eq!(
        *log.lock().expect("log"),
        ["before_start", "after_start", "before_stop", "after_stop"]
    );

    let failing = builder("failing", &registry)
        .before_start(|| async { Err(micro::Error::internal("test", "not today")) })
        .build()
        .expect("build");
    let err = failing
        .start()
        .await
        .expect_err("a failing hook aborts the start");
    assert_eq!(err.detail, "not today");
    assert!(
        registry.get_service("failing").await.is_err(),
        "nothing was registered"
    );
}
