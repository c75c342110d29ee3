//! Streams are calls too: a server-streaming and a bidirectional endpoint behind the auth
//! layer refuse callers without a token (401) and serve callers with one, over h2c (the http
//! transport) and over gRPC, from a Micro client with and without `BearerLayer`, and from
//! python grpcio, a client that knows nothing of Micro.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use greeter::greeter::{greeter_handler, GreeterClient, HelloRequest, StreamRequest};
use greeter::GreeterService;
use micro::registry::MemoryRegistry;
use micro::{Client, Service, ServiceBuilder};
use micro_wrapper_auth::{AuthLayer, BearerLayer, JwtSigner, JwtVerifier};
use serde_json::json;

const SECRET: &[u8] = b"a test secret that is 32 bytes!!";

fn builder(name: &str, registry: &MemoryRegistry, transport: &str) -> ServiceBuilder {
    Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(Arc::new(registry.clone()))
        .transport(micro::plugins::transport(transport).expect("the transport"))
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

fn token() -> String {
    let exp = micro_wrapper_auth::jsonwebtoken::get_current_timestamp() + 3600;
    JwtSigner::hs256(SECRET)
        .sign(&json!({"sub": "alice", "exp": exp}))
        .expect("sign")
}

async fn protected(registry: &MemoryRegistry, transport: &str) -> Service {
    let service = builder("greeter", registry, transport)
        .handler(greeter_handler(GreeterService))
        .handler_layer(AuthLayer::new(JwtVerifier::hs256(SECRET)))
        .build()
        .expect("build");
    service.start().await.expect("start");
    service
}

/// The replies of `Greeter.Stream` for two greetings, or the error that ended it.
async fn server_stream(client: &Client) -> micro::Result<Vec<String>> {
    let greeter = GreeterClient::new("greeter", client.clone());
    let mut stream = greeter
        .stream(StreamRequest {
            name: "a".into(),
            count: 2,
        })
        .await?;
    let mut replies = Vec::new();
    while let Some(r) = stream.recv().await? {
        replies.push(r.message);
    }
    Ok(replies)
}

/// One round of `Greeter.Chat`, or the error that ended it.
async fn chat(client: &Client) -> micro::Result<String> {
    let greeter = GreeterClient::new("greeter", client.clone());
    let mut chat = greeter.chat(()).await?;
    // A refused stream may already be closed for sending; the reply says why.
    let _ = chat.send(&HelloRequest { name: "b".into() }).await;
    let reply = chat.recv().await?;
    chat.close_send().await?;
    Ok(reply.map(|r| r.message).unwrap_or_default())
}

async fn streams_need_a_token(transport: &str) {
    let registry = MemoryRegistry::new();
    let server = protected(&registry, transport).await;
    let anonymous = builder("anonymous", &registry, transport)
        .build()
        .expect("caller")
        .client();
    let e = within("server stream", server_stream(&anonymous))
        .await
        .expect_err("no token");
    assert_eq!(e.code, 401, "{transport}: {e}");
    assert_eq!(e.id, "greeter.Greeter.Stream", "{transport}");
    let e = within("chat", chat(&anonymous))
        .await
        .expect_err("no token");
    assert_eq!(e.code, 401, "{transport}: {e}");
    assert_eq!(e.id, "greeter.Greeter.Chat", "{transport}");

    let alice = builder("alice", &registry, transport)
        .client_layer(BearerLayer::new(token()))
        .build()
        .expect("caller")
        .client();
    let replies = within("server stream", server_stream(&alice))
        .await
        .expect("a token opens the stream");
    assert_eq!(replies, ["Hello a #1", "Hello a #2"], "{transport}");
    let reply = within("chat", chat(&alice))
        .await
        .expect("a token opens the chat");
    assert_eq!(reply, "Hello b", "{transport}");
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_token_over_h2c() {
    streams_need_a_token("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_token_over_grpc() {
    streams_need_a_token("grpc").await;
}

/// python grpcio, with no stubs: raw method paths and hand-encoded protobuf. Prints one line
/// per call: the status code name, then the replies' bytes in hex.
const GRPCIO: &str = r#"
import sys, grpc
address, token = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(address)
stream = channel.unary_stream('/greeter.Greeter/Stream')
chat = channel.stream_stream('/greeter.Greeter/Chat')
for md in ([], [('authorization', 'Bearer ' + token)]):
    for name, call in (('stream', lambda: stream(b'\x0a\x01a\x10\x02', metadata=md, timeout=10)),
                       ('chat', lambda: chat(iter([b'\x0a\x01b']), metadata=md, timeout=10))):
        try:
            replies = [r.hex() for r in call()]
            print(name, 'OK', ' '.join(replies))
        except grpc.RpcError as e:
            print(name, e.code().name)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_streams_need_a_token() {
    let have = Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var("MICRO_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "MICRO_TEST_REQUIRE_SERVICES=1 but python3 lacks grpcio (pip install grpcio)"
        );
        eprintln!("skipping: python3 lacks grpcio");
        return;
    }
    let registry = MemoryRegistry::new();
    let server = protected(&registry, "grpc").await;
    let address = micro::rpc::Server::address(server.server()).expect("listening");
    let token = token();
    let out = within(
        "python grpcio",
        tokio::task::spawn_blocking(move || {
            Command::new("timeout")
                .args(["60", "python3", "-c", GRPCIO, &address, &token])
                .output()
        }),
    )
    .await
    .expect("joined")
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // HelloReply{message: "Hello a #1"}: field 1, length 10.
    let hello = |text: &str| format!("0a{:02x}{}", text.len(), hex(text));
    assert_eq!(
        lines,
        [
            "stream UNAUTHENTICATED".to_string(),
            "chat UNAUTHENTICATED".to_string(),
            format!("stream OK {} {}", hello("Hello a #1"), hello("Hello a #2")),
            format!("chat OK {}", hello("Hello b")),
        ]
    );
    server.stop().await.expect("stop");
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}
