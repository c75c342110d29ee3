//! Registration as Go Micro does it, renewal on the interval, and streams whose peer goes away.

mod common;

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
