//! The greeter over gRPC, in process on loopback: a Micro client calls a plain tonic server
//! it found in the registry; one Micro client calls a greeter on mucp and another on gRPC side
//! by side; tonic's generated client (and its health client) call a Micro greeter on gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest, StreamRequest};
use greeter::{GreeterService, TRACE_ID};
use micro::core::registry::{Node, RegisterOptions, Service as Registration};
use micro::core::Registry as _;
use micro::registry::MemoryRegistry;
use micro::{Error, Request, Service};
use micro_transport_grpc::GrpcTransport;
use tonic_greeter::greeter::greeter_client::GreeterClient as TonicGreeterClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Every wait in these tests ends within this.
const BOUND: Duration = Duration::from_secs(15);

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(BOUND, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {BOUND:?}"),
    }
}

/// A service that only calls, on `registry`, with the default (http) transport: the gRPC
/// transport is added to its client because this build has it.
fn caller(registry: &MemoryRegistry) -> Result<Service, Error> {
    Service::builder("grpc-test-caller")
        .ignore_env()
        .registry(Arc::new(registry.clone()))
        .build()
}

/// Every RPC kind of the greeter through `client`.
async fn every_rpc(client: &GreeterClient) -> Result<(), Error> {
    let request = Request::new(HelloRequest {
        name: "John".into(),
    })
    .with_metadata(TRACE_ID, "t-42");
    let reply = bounded("hello", client.hello(request)).await?;
    assert_eq!(reply.metadata().get(TRACE_ID), Some("t-42"));
    assert_eq!(reply.into_inner().message, "Hello John");

    let mut stream = bounded(
        "stream",
        client.stream(StreamRequest {
            name: "John".into(),
            count: 3,
        }),
    )
    .await?;
    let mut replies = Vec::new();
    while let Some(reply) = bounded("a streamed reply", stream.recv()).await? {
        replies.push(reply.message);
    }
    assert_eq!(replies, ["Hello John #1", "Hello John #2", "Hello John #3"]);

    let mut chat = bounded("chat", client.chat(())).await?;
    for name in ["a", "b"] {
        chat.send(&HelloRequest { name: name.into() }).await?;
        let reply = bounded("a chat reply", chat.recv()).await?;
        assert_eq!(reply.map(|r| r.message), Some(format!("Hello {name}")));
    }
    chat.close_send().await?;
    assert!(bounded("the chat's end", chat.recv()).await?.is_none());

    let mut collect = bounded("collect", client.collect(())).await?;
    for name in ["a", "b", "c"] {
        collect.send(&HelloRequest { name: name.into() }).await?;
    }
    collect.close_send().await?;
    let reply = bounded("the collected reply", collect.recv()).await?;
    assert_eq!(reply.map(|r| r.message).as_deref(), Some("Hello a, b, c"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_micro_client_calls_a_plain_tonic_server() -> TestResult {
    // A tonic server that knows nothing of Micro, registered by hand as a gRPC node.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = tcp.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tonic_greeter::serve(tcp, async {
        let _ = stopped.await;
    }));
    let registry = MemoryRegistry::new();
    let registration = Registration {
        name: "tonic-greeter".into(),
        version: "latest".into(),
        metadata: BTreeMap::new(),
        endpoints: Vec::new(),
        nodes: vec![Node {
            id: "tonic-greeter-1".into(),
            address: address.clone(),
            metadata: [("protocol".to_string(), "grpc".to_string())].into(),
        }],
    };
    registry
        .register(
            &registration,
            RegisterOptions {
                ttl: Duration::from_secs(60),
            },
        )
        .await?;

    let caller = caller(&registry)?;
    let client = GreeterClient::new("tonic-greeter", caller.client());
    every_rpc(&client).await?;

    // tonic's INVALID_ARGUMENT comes back as a 400 naming the service and endpoint.
    let error = bounded("hello", client.hello(HelloRequest::default()))
        .await
        .err()
        .ok_or("an empty name must fail")?;
    assert_eq!(
        (error.code, error.id.as_str(), error.detail.as_str()),
        (400, "tonic-greeter.Greeter.Hello", "name must not be empty")
    );

    let _ = stop.send(());
    bounded("the tonic server's stop", server).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_calls_mucp_and_grpc_services_side_by_side() -> TestResult {
    let registry = MemoryRegistry::new();
    let pid = std::process::id();
    let on_mucp = format!("greeter-mucp-{pid}");
    let on_grpc = format!("greeter-grpc-{pid}");
    let mucp = Service::builder(&on_mucp)
        .ignore_env()
        .registry(Arc::new(registry.clone()))
        .handler(greeter_handler(GreeterService))
        .build()?;
    let grpc = Service::builder(&on_grpc)
        .ignore_env()
        .registry(Arc::new(registry.clone()))
        .transport(Arc::new(GrpcTransport::default()))
        .handler(greeter_handler(GreeterService))
        .build()?;
    mucp.start().await?;
    grpc.start().await?;

    let result = async {
        let node = |s: &Service| {
            s.server()
                .registration()
                .and_then(|r| r.nodes.first().cloned())
                .map(|n| n.metadata)
                .unwrap_or_default()
        };
        let meta = node(&grpc);
        for key in ["protocol", "server", "transport"] {
            assert_eq!(meta.get(key).map(String::as_str), Some("grpc"), "{key}");
        }
        assert_eq!(
            node(&mucp).get("protocol").map(String::as_str),
            Some("mucp")
        );

        let caller = caller(&registry)?;
        for content_type in ["application/protobuf", "application/json"] {
            let client = caller.client().with_content_type(content_type);
            for name in [&on_mucp, &on_grpc] {
                let greeter = GreeterClient::new(name, client.clone());
                every_rpc(&greeter).await?;
                // Errors come back exactly, whichever the protocol.
                let error = bounded("hello", greeter.hello(HelloRequest::default()))
                    .await
                    .err()
                    .ok_or("an empty name must fail")?;
                assert_eq!(
                    (error.code, error.id.as_str()),
                    (400, "greeter.Greeter.Hello"),
                    "{name} over {content_type}"
                );
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    grpc.stop().await?;
    mucp.stop().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_clients_call_a_micro_service_on_grpc() -> TestResult {
    let registry = MemoryRegistry::new();
    let service = Service::builder("greeter")
        .ignore_env()
        .registry(Arc::new(registry))
        .transport(Arc::new(GrpcTransport::default()))
        .handler(greeter_handler(GreeterService))
        .build()?;
    service.start().await?;
    let result = async {
        let address = service
            .server()
            .registration()
            .and_then(|r| r.nodes.first().map(|n| n.address.clone()))
            .ok_or("registered")?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .connect()
            .await?;

        let mut health = HealthClient::new(channel.clone());
        for name in ["", "greeter.Greeter"] {
            let status = bounded(
                "health",
                health.check(HealthCheckRequest {
                    service: name.into(),
                }),
            )
            .await?
            .into_inner()
            .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{name:?}");
        }

        let mut client = TonicGreeterClient::new(channel);
        let mut request = tonic::Request::new(tonic_greeter::greeter::HelloRequest {
            name: "Tonic".into(),
        });
        request.metadata_mut().insert("trace-id", "t-1".parse()?);
        let reply = bounded("hello", client.hello(request)).await?;
        assert_eq!(
            reply.metadata().get("trace-id").map(|v| v.as_bytes()),
            Some(&b"t-1"[..])
        );
        assert_eq!(reply.into_inner().message, "Hello Tonic");

        let status = bounded(
            "hello",
            client.hello(tonic_greeter::greeter::HelloRequest::default()),
        )
        .await
        .err()
        .ok_or("an empty name must fail")?;
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "name must not be empty");

        let mut replies = bounded(
            "stream",
            client.stream(tonic_greeter::greeter::StreamRequest {
                name: "T".into(),
                count: 2,
            }),
        )
        .await?
        .into_inner();
        let mut texts = Vec::new();
        while let Some(reply) = bounded("a streamed reply", replies.message()).await? {
            texts.push(reply.message);
        }
        assert_eq!(texts, ["Hello T #1", "Hello T #2"]);
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    service.stop().await?;
    result
}
