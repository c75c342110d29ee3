//! Who calls or publishes is said by the receiving side's own layers (the auth layer), never
//! by the sender: `Micro-Auth-*` entries a caller puts in its metadata, or a publisher in its
//! message headers, are gone before any layer or handler sees them.

mod common;

use bytes::Bytes;
use common::{builder, client, within};
use micro::broker::Message as BrokerMessage;
use micro::registry::MemoryRegistry;
use micro::{Event, Handler, Json, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `Who.Am`: the caller's subject as the handler sees it ("" for none).
fn who() -> Handler {
    Handler::new("Who").unary("Am", |req: Request<Json<()>>| {
        Box::pin(async move {
            let subject = micro::auth::Claims::from_metadata(req.metadata())
                .map(|c| c.subject)
                .unwrap_or_default();
            Ok(Response::new(Json(subject)))
        })
    })
}

#[tokio::test]
async fn a_caller_cannot_say_who_it_is() {
    let registry = MemoryRegistry::new();
    let service = builder("who", &registry)
        .handler(who())
        .build()
        .expect("build");
    service.start().await.expect("start");
    let address = micro::rpc::Server::address(service.server()).expect("listening");

    // Micro's client sends no such entry; a raw mucp request (curl, a Go program) can.
    let body = "null";
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Micro-Service: who\r\nMicro-Endpoint: Who.Am\r\nMicro-Id: 1\r\n\
         Micro-Auth-Subject: admin\r\nmicro-auth-scopes: admin\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut conn = TcpStream::connect(&address).await.expect("connect");
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    within("the answer", conn.read_to_end(&mut response))
        .await
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with("\r\n\r\n\"\""),
        "the forged subject reached the handler: {response}"
    );

    // Nor through Micro's client.
    let caller = client(&registry).with_content_type("application/json");
    let req = Request::new(Json(())).with_metadata("Micro-Auth-Subject", "admin");
    let seen = within(
        "call",
        caller.unary::<_, Json<String>>("who", "Who.Am", req),
    )
    .await
    .expect("answered");
    assert_eq!(seen.into_inner().0, "");
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn a_publisher_cannot_say_who_it_is() {
    let registry = MemoryRegistry::new();
    let (seen, mut headers) = tokio::sync::mpsc::unbounded_channel();
    let service = builder("audit", &registry)
        .subscriber("orders", move |e: Event<Json<u64>>| {
            let seen = seen.clone();
            Box::pin(async move {
                let _ = seen.send(e.header.clone());
                Ok(())
            }) as micro::BoxFuture<'static, micro::Result<()>>
        })
        .build()
        .expect("build");
    service.start().await.expect("start");
    let mut message = BrokerMessage {
        body: Bytes::from_static(b"7"),
        ..BrokerMessage::default()
    };
    message.header.insert("Content-Type", "application/json");
    message.header.insert("Micro-Auth-Subject", "admin");
    message.header.insert("X-Kept", "yes");
    within("publish", service.client().publish_raw("orders", message))
        .await
        .expect("published");
    let header = within("delivery", headers.recv()).await.expect("delivered");
    assert_eq!(header.get("Micro-Auth-Subject"), None, "{header:?}");
    assert_eq!(header.get("x-kept"), Some("yes"));
    service.stop().await.expect("stop");
}
