//! Registration as Go Micro does it, renewal on the interval, and streams whose peer goes away.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{builder, client, within};
use greeter::greeter::{greeter_handler, HelloReply, HelloRequest};
use greeter::GreeterService;
use micro::registry::{MemoryRegistry, Registry};
use micro::{Handler, ServerStream};
use tokio::sync::mpsc;

#[tokio::test]
async fn registers_like_go_micro_and_renews_before_the_ttl_runs_out() {
    let registry = MemoryRegistry::new();
    let service = builder("greeter", &registry)
        .version("1.2.0")
        .metadata("team", "core")
        .handler(greeter_handler(GreeterService))
        .register_ttl(Duration::from_millis(600))
        .register_interval(Duration::from_millis(200))
        .build()
        .expect("build");
    service.start().await.expect("start");

    let found = registry.get_service("greeter").await.expect("registered");
    let s = &found[0];
    assert_eq!(s.version, "1.2.0");
    assert_eq!(s.metadata.get("team").map(String::as_str), Some("core"));
    let node = &s.nodes[0];
    assert!(
        node.id.starts_with("greeter-") && node.id.len() == "greeter-".len() + 36,
        "{}",
        node.id
    );
    assert_eq!(
        Some(node.address.clone()),
        micro::rpc::Server::address(service.server())
    );
    for (k, v) in [
        ("protocol", "mucp"),
        ("server", "mucp"),
        ("transport", "http"),
        ("registry", "memory"),
        ("broker", "memory"),
    ] {
        assert_eq!(
            node.metadata.get(k).map(String::as_str),
            Some(v),
            "node metadata {k}"
        );
    }
    let names: Vec<&str> = s.endpoints.iter().map(|e| e.name.as_str()).collect();
    for e in [
        "Greeter.Hello",
        "Greeter.Stream",
        "Greeter.Chat",
        "Greeter.Collect",
    ] {
        assert!(names.contains(&e), "{e} in {names:?}");
    }
    let hello = s
        .endpoints
        .iter()
        .find(|e| e.name == "Greeter.Hello")
        .expect("hello");
    let request = hello.request.as_ref().expect("request shape");
    assert_eq!(request.name, "HelloRequest");
    assert_eq!(request.values[0].name, "name");
    assert_eq!(request.values[0].kind, "string");
    let chat = s
        .endpoints
        .iter()
        .find(|e| e.name == "Greeter.Chat")
        .expect("chat");
    assert_eq!(
        chat.metadata.get("stream").map(String::as_str),
        Some("true")
    );

    // Five TTLs later the node is still there, because the server renews it.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(
            registry.get_service("greeter").await.is_ok(),
            "the registration lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service.stop().await.expect("stop");
    assert!(registry.get_service("greeter").await.is_err());
}

#[tokio::test]
async fn a_caller_that_vanishes_mid_stream_ends_the_handler() {
    let registry = MemoryRegistry::new();
    let (done_tx, mut done) = mpsc::unbounded_channel::<String>();
    let handler = Handler::new("Echo").stream(
        "Chat",
        move |mut s: ServerStream<HelloRequest, HelloReply>| {
            let done_tx = done_tx.clone();
            Box::pin(async move {
                let outcome = loop {
                    match s.recv().await {
                        Ok(Some(m)) => {
                            let _ = s.send(&HelloReply { message: m.name }).await;
                        }
                        Ok(None) => break "closed".to_string(),
                        Err(e) => break format!("error {}", e.code),
                    }
                };
                let _ = done_tx.send(outcome);
                Ok(())
            })
        },
    );
    let service = builder("echo", &registry)
        .handler(handler)
        .build()
        .expect("build");
    service.start().await.expect("start");

    let c = client(&registry);
    let mut stream = within(
        "open",
        c.stream::<HelloRequest, HelloReply>("echo", "Echo.Chat", micro::Request::new(())),
    )
    .await
    .expect("open");
    stream
        .send(&HelloRequest { name: "one".into() })
        .await
        .expect("send");
    let first = within("echo", stream.recv())
        .await
        .expect("recv")
        .expect("reply");
    assert_eq!(first.message, "one");
    drop(stream); // the caller goes away without closing the stream

    let outcome = within("the handler notices", done.recv())
        .await
        .expect("handler finished");
    assert!(
        outcome.starts_with("error"),
        "a vanished caller is an error, not a clean close: {outcome}"
    );
    service.stop().await.expect("stop");
}

/// A registry that checks, at each register, that the node already answers a call (Go
/// Micro's `Debug.Health`, as raw HTTP), and whose deregister can be made to hang.
#[derive(Debug, Clone)]
struct Watchful {
    inner: MemoryRegistry,
    reachable_at_register: Arc<std::sync::Mutex<Vec<bool>>>,
    hang_deregister: bool,
}

#[micro::async_trait]
impl Registry for Watchful {
    fn name(&self) -> &str {
        "watchful"
    }

    async fn register(
        &self,
        service: &micro::registry::Service,
        opts: micro::registry::RegisterOptions,
    ) -> micro::Result<()> {
        for node in &service.nodes {
            let up = answers_health(&node.address, &service.name).await;
            self.reachable_at_register
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(up);
        }
        self.inner.register(service, opts).await
    }

    async fn deregister(&self, service: &micro::registry::Service) -> micro::Result<()> {
        if self.hang_deregister {
            std::future::pending::<()>().await;
        }
        self.inner.deregister(service).await
    }

    async fn get_service(&self, name: &str) -> micro::Result<Vec<micro::registry::Service>> {
        self.inner.get_service(name).await
    }

    async fn list_services(&self) -> micro::Result<Vec<micro::registry::Service>> {
        self.inner.list_services().await
    }

    async fn watch(&self, service: Option<&str>) -> micro::Result<micro::registry::Watcher> {
        self.inner.watch(service).await
    }
}

/// Whether `Debug.Health` at `address` is answered with a 200 and no error, within 2 s.
async fn answers_health(address: &str, service: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Micro-Service: {service}\r\nMicro-Endpoint: Debug.Health\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut reply = String::new();
        tcp.read_to_string(&mut reply).await.ok()?;
        Some(reply)
    };
    match tokio::time::timeout(Duration::from_secs(2), exchange).await {
        Ok(Some(reply)) => {
            reply.starts_with("HTTP/1.1 200") && !reply.to_ascii_lowercase().contains("micro-error")
        }
        _ => false,
    }
}

fn watchful(hang_deregister: bool) -> Watchful {
    Watchful {
        inner: MemoryRegistry::new(),
        reachable_at_register: Arc::default(),
        hang_deregister,
    }
}

#[tokio::test]
async fn the_node_serves_before_it_registers_and_a_hung_deregister_does_not_hold_the_stop() {
    let registry = watchful(true);
    let service = builder("greeter", &registry.inner)
        .registry(Arc::new(registry.clone()))
        .handler(greeter_handler(GreeterService))
        .registry_timeout(Duration::from_millis(200))
        .build()
        .expect("build");
    within("start", service.start()).await.expect("start");
    assert_eq!(
        *registry.reachable_at_register.lock().expect("lock"),
        [true],
        "the node answered when it was registered"
    );
    within("a stop whose deregister hangs", service.stop())
        .await
        .expect("stop");
}

#[tokio::test]
async fn two_concurrent_starts_listen_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let registry = MemoryRegistry::new();
    let service = builder("greeter", &registry)
        .address(format!("127.0.0.1:{port}"))
        .handler(greeter_handler(GreeterService))
        .build()
        .expect("build");
    // Were both to listen, the second would find the port taken.
    let (a, b) = within("two starts", async {
        tokio::join!(service.start(), service.start())
    })
    .await;
    a.expect("first start");
    b.expect("second start");
    let found = registry.get_service("greeter").await.expect("registered");
    assert_eq!(found[0].nodes.len(), 1);
    service.stop().await.expect("stop");
}

/// A broker whose subscribe always fails.
#[derive(Debug)]
struct Refusing;

#[micro::async_trait]
impl micro::core::Broker for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }

    fn address(&self) -> String {
        "nowhere".into()
    }

    async fn connect(&self) -> micro::Result<()> {
        Ok(())
    }

    async fn disconnect(&self) -> micro::Result<()> {
        Ok(())
    }

    async fn publish(&self, _topic: &str, _msg: micro::core::broker::Message) -> micro::Result<()> {
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        _handler: micro::core::broker::Handler,
        _opts: micro::core::broker::SubscribeOptions,
    ) -> micro::Result<Box<dyn micro::core::broker::Subscription>> {
        Err(micro::Error::internal(
            "refusing",
            format!("no subscriptions to {topic}"),
        ))
    }
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u32,
}

#[tokio::test]
async fn a_start_that_fails_halfway_deregisters_and_closes() {
    let registry = MemoryRegistry::new();
    let service = builder("orders", &registry)
        .broker(Arc::new(Refusing))
        .handler(greeter_handler(GreeterService))
        .subscriber("orders.created", |_e: micro::Event<micro::Json<Order>>| {
            Box::pin(async { Ok(()) })
        })
        .build()
        .expect("build");
    let e = within("start", service.start())
        .await
        .expect_err("the subscription fails");
    assert!(e.detail.contains("orders.created"), "{e}");
    assert!(
        registry.get_service("orders").await.is_err(),
        "no registration is left behind"
    );
    assert_eq!(micro::rpc::Server::address(service.server()), None);
}

#[tokio::test]
async fn handlers_still_running_after_the_drain_wait_are_cancelled() {
    let registry = MemoryRegistry::new();
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel::<()>();
    struct OnDrop(mpsc::UnboundedSender<()>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let stuck =
        Handler::new("Stuck").unary("Forever", move |_req: micro::Request<HelloRequest>| {
            let entered = entered_tx.clone();
            let guard = OnDrop(dropped_tx.clone());
            Box::pin(async move {
                let _guard = guard;
                let _ = entered.send(());
                std::future::pending::<()>().await;
                Ok(micro::Response::new(HelloReply::default()))
            })
        });
    let service = builder("stuck", &registry)
        .handler(stuck)
        .drain_wait(Duration::from_millis(200))
        .build()
        .expect("build");
    service.start().await.expect("start");
    let caller = client(&registry);
    let call = tokio::spawn(async move {
        caller
            .unary::<HelloRequest, HelloReply>(
                "stuck",
                "Stuck.Forever",
                micro::Request::new(HelloRequest::default()).with_timeout(Duration::from_secs(30)),
            )
            .await
    });
    within("the handler starts", entered.recv()).await;
    within("stop", service.stop()).await.expect("stop");
    within("the handler is dropped", dropped.recv()).await;
    let result = within("the caller's answer", call).await.expect("joined");
    assert!(result.is_err(), "{result:?}");
}
