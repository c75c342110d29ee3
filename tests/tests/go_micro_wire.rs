//! What a Go Micro client sends, byte for byte, answered as a Go Micro client expects.

mod common;

use common::{greeter, within};
use micro::registry::MemoryRegistry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn exchange(stream: &mut TcpStream, request: &str) -> (String, String) {
    stream.write_all(request.as_bytes()).await.expect("write");
    // Read the head, then exactly Content-Length bytes of body.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "connection closed before a full response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (
        head,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    )
}

fn go_request(endpoint: &str, body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\n\
         Accept: application/json\r\nContent-Type: application/json\r\nMicro-Endpoint: {endpoint}\r\n\
         Micro-Id: 0\r\nMicro-Method: {endpoint}\r\nMicro-Service: greeter\r\nTimeout: 5000000000\r\n\
         Trace-Id: t-123\r\n\r\n{body}",
        body.len()
    )
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_go_micro_request_is_answered_as_go_micro_expects() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let address = micro::rpc::Server::address(service.server()).expect("listening");
    let mut conn = TcpStream::connect(&address).await.expect("connect");

    let (head, body) = within(
        "hello",
        exchange(
            &mut conn,
            &go_request("Greeter.Hello", r#"{"name":"John"}"#),
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert_eq!(header(&head, "micro-id"), Some("0"));
    assert_eq!(
        header(&head, "trace-id"),
        Some("t-123"),
        "metadata comes back: {head}"
    );
    assert_eq!(header(&head, "micro-error"), None);
    assert_eq!(body, r#"{"message":"Hello John"}"#);

    // Same connection (keep-alive): an unknown method gets a Micro-Error with a 200 status.
    let (head, body) = within(
        "nope",
        exchange(&mut conn, &go_request("Greeter.Nope", "{}")),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let err = micro::Error::parse(header(&head, "micro-error").expect("Micro-Error header"));
    assert_eq!(err.code, 404);
    assert_eq!(err.id, "greeter.Greeter.Nope");
    assert!(body.is_empty());
    service.stop().await.expect("stop");
}
