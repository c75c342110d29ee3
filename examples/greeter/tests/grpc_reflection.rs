//! gRPC server reflection on the greeter: tonic-reflection's v1 client (a standard client of
//! the protocol, as grpcurl speaks it) lists the services of a Micro greeter on the gRPC
//! transport and describes `greeter.Greeter` from the descriptors `micro-build` embedded; with
//! reflection turned off the port does not answer it.

use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::greeter_handler;
use greeter::GreeterService;
use micro::registry::MemoryRegistry;
use micro::Service;
use micro_transport_grpc::{GrpcOptions, GrpcTransport};
use prost::Message as _;
use prost_types::FileDescriptorProto;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

/// Every wait in these tests ends within this.
const BOUND: Duration = Duration::from_secs(15);

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A greeter on the gRPC transport with `opts`, started; its address.
async fn greeter(opts: GrpcOptions) -> Result<(Service, String), Box<dyn std::error::Error>> {
    let service = Service::builder("greeter")
        .ignore_env()
        .registry(Arc::new(MemoryRegistry::new()))
        .transport(Arc::new(GrpcTransport::new(opts)))
        .handler(greeter_handler(GreeterService))
        .build()?;
    service.start().await?;
    let address = service
        .server()
        .registration()
        .and_then(|r| r.nodes.first().map(|n| n.address.clone()))
        .ok_or("the greeter registered no node")?;
    Ok((service, address))
}

/// Sends `requests` on one reflection stream and returns the answers, in order.
async fn ask(
    address: &str,
    requests: Vec<MessageRequest>,
) -> Result<Vec<MessageResponse>, Box<dyn std::error::Error>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let mut client = ServerReflectionClient::new(channel);
    let requests = requests.into_iter().map(|r| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r),
    });
    let exchange = async {
        let mut replies = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await?
            .into_inner();
        let mut answers = Vec::new();
        while let Some(reply) = replies.message().await? {
            answers.push(reply.message_response.ok_or("a reply without an answer")?);
        }
        Ok::<_, Box<dyn std::error::Error>>(answers)
    };
    tokio::time::timeout(BOUND, exchange)
        .await
        .map_err(|_| format!("reflection did not answer within {BOUND:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_and_describes_the_greeter() -> TestResult {
    let (service, address) = greeter(GrpcOptions::default()).await?;
    let result = async {
        let answers = ask(
            &address,
            vec![
                MessageRequest::ListServices(String::new()),
                MessageRequest::FileContainingSymbol("greeter.Greeter".into()),
            ],
        )
        .await?;
        let [MessageResponse::ListServicesResponse(list), MessageResponse::FileDescriptorResponse(file)] =
            &answers[..]
        else {
            return Err(format!("unexpected answers: {answers:?}").into());
        };

        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        for expected in [
            "greeter.Greeter",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }

        let [encoded] = &file.file_descriptor_proto[..] else {
            return Err(format!("expected one file, got {}", file.file_descriptor_proto.len()).into());
        };
        let proto = FileDescriptorProto::decode(&encoded[..])?;
        assert_eq!(proto.name(), "greeter.proto");
        assert_eq!(proto.package(), "greeter");
        let greeter = proto
            .service
            .iter()
            .find(|s| s.name() == "Greeter")
            .ok_or("greeter.proto without service Greeter")?;
        let methods: Vec<(&str, &str, &str, bool, bool)> = greeter
            .method
            .iter()
            .map(|m| {
                (
                    m.name(),
                    m.input_type(),
                    m.output_type(),
                    m.client_streaming(),
                    m.server_streaming(),
                )
            })
            .collect();
        assert_eq!(
            methods,
            [
                ("Hello", ".greeter.HelloRequest", ".greeter.HelloReply", false, false),
                ("Stream", ".greeter.StreamRequest", ".greeter.HelloReply", false, true),
                ("Chat", ".greeter.HelloRequest", ".greeter.HelloReply", true, true),
                ("Collect", ".greeter.HelloRequest", ".greeter.HelloReply", true, false),
            ]
        );

        // tonic-reflection ends the stream with the status rather than an error answer.
        let missing = ask(
            &address,
            vec![MessageRequest::FileContainingSymbol("greeter.Nope".into())],
        )
        .await
        .err()
        .and_then(|e| e.downcast::<tonic::Status>().ok())
        .ok_or("asking for an unknown symbol must fail with a status")?;
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    service.stop().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_be_turned_off() -> TestResult {
    let opts = GrpcOptions {
        reflection: false,
        ..GrpcOptions::default()
    };
    let (service, address) = greeter(opts).await?;
    let result = ask(&address, vec![MessageRequest::ListServices(String::new())]).await;
    service.stop().await?;
    let status = result
        .err()
        .and_then(|e| e.downcast::<tonic::Status>().ok())
        .ok_or("with reflection off, listing services must fail with a status")?;
    // Not a service of this server: Micro's 404 for an unknown endpoint.
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    Ok(())
}
