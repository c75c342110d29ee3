//! The gateway in front of other plugins than the defaults, over real sockets: a greeter
//! served on the gRPC transport, and events published on the machine's NATS
//! (127.0.0.1:4222, or `MICRO_NATS_ADDRESS`).

mod common;

use std::sync::Arc;

use common::{curl, TestResult, BOUND};
use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::broker::MemoryBroker;
use micro::core::Registry;
use micro::registry::MemoryRegistry;
use micro::Service;
use micro_gateway::{Gateway, GatewayOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_streams_reach_a_grpc_node() -> TestResult {
    let registry = Arc::new(MemoryRegistry::new());
    let greeter = Service::builder("greeter")
        .ignore_env()
        .registry(registry.clone())
        .broker(Arc::new(MemoryBroker::new()))
        .transport(micro::plugins::transport("grpc")?)
        .handler(greeter_handler(GreeterService))
        .build()?;
    greeter.start().await?;
    let nodes = registry.get_service("greeter").await?;
    assert_eq!(
        nodes[0].nodes[0]
            .metadata
            .get("protocol")
            .map(String::as_str),
        Some("grpc")
    );
    let gateway_service = Service::builder("micro.gateway")
        .ignore_env()
        .registry(registry)
        .broker(Arc::new(MemoryBroker::new()))
        .build()?;
    let gateway = Gateway::bind("127.0.0.1:0", &gateway_service, GatewayOptions::default()).await?;
    let base = format!("http://{}/api/greeter", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        let hello = curl(&["-d", r#"{"name":"G"}"#], &format!("{base}/Greeter.Hello"));
        assert_eq!(hello.status, 200, "{}", hello.body);
        assert_eq!(hello.json()["message"], "Hello G");
        let error = curl(&["-d", r#"{"name":""}"#], &format!("{base}/Greeter.Hello"));
        assert_eq!(error.status, 400, "{}", error.body);
        assert_eq!(error.json()["detail"], "name must not be empty");
        let sse = [
            "-N",
            "-H",
            "Accept: text/event-stream",
            "-d",
            r#"{"name":"G","count":2}"#,
        ];
        let streamed = curl(&sse, &format!("{base}/Greeter.Stream"));
        assert_eq!(streamed.status, 200, "{}", streamed.body);
        assert!(
            streamed.body.contains(r#"data: {"message":"Hello G #2"}"#),
            "{}",
            streamed.body
        );
    })
    .await?;
    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_subscriber_on_nats() -> TestResult {
    let Some(address) = micro_broker_nats::testing::running_server() else {
        return Ok(());
    };
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let nats = || micro::plugins::broker("nats", Some(&address), &registry);
    let topic = format!("gateway.test.{}", std::process::id());
    let (collect, mut events) = common::collector();
    let listener = Service::builder("listener")
        .ignore_env()
        .registry(registry.clone())
        .broker(nats()?)
        .subscriber(&topic, collect)
        .build()?;
    listener.start().await?;
    let gateway_service = Service::builder("micro.gateway")
        .ignore_env()
        .registry(registry.clone())
        .broker(nats()?)
        .build()?;
    let gateway = Gateway::bind("127.0.0.1:0", &gateway_service, GatewayOptions::default()).await?;
    let url = format!("http://{}/event/{topic}", gateway.local_addr());
    let published =
        tokio::task::spawn_blocking(move || curl(&["-d", r#"{"order":42}"#], &url)).await?;
    assert_eq!(published.status, 202, "{}", published.body);
    let event = tokio::time::timeout(BOUND, events.recv()).await?;
    assert_eq!(event, Some(json!({"order": 42})));
    gateway.shutdown().await;
    listener.stop().await?;
    Ok(())
}
