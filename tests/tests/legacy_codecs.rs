//! Go Micro's legacy framings, `application/json-rpc` and `application/proto-rpc`, which Go
//! Micro clients fall back to for nodes without `protocol` metadata: requests written byte for
//! byte as Go's codecs write them are answered in the shape Go's codecs read, and Micro's own
//! client speaks both.

mod common;

use common::{client, greeter, within};
use greeter::greeter::{GreeterClient, HelloRequest};
use micro::registry::MemoryRegistry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request on a fresh connection (`Connection: close`): the response's head and body.
async fn exchange(address: &str, content_type: &str, body: &[u8]) -> (String, Vec<u8>) {
    let mut conn = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nContent-Type: {content_type}\r\n\
         Micro-Endpoint: Greeter.Hello\r\nMicro-Method: Greeter.Hello\r\nMicro-Service: greeter\r\n\
         Micro-Id: 1\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())
        .await
        .expect("write the head");
    conn.write_all(body).await.expect("write the body");
    let mut response = Vec::new();
    conn.read_to_end(&mut response)
        .await
        .expect("read the response");
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&response[..end]).to_string();
    (head, response[end..].to_vec())
}

fn netstrings(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[tokio::test]
async fn go_micro_legacy_requests_are_answered_in_their_framing() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    let address = micro::rpc::Server::address(service.server()).expect("listening");

    // Go's jsonrpc client codec: method, params with the one message, a numeric id.
    let request = br#"{"method":"Greeter.Hello","params":[{"name":"John"}],"id":1}"#;
    let (head, body) = within(
        "json-rpc",
        exchange(&address, "application/json-rpc", request),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json-rpc"),
        "{head}"
    );
    let reply: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(reply["result"]["message"], "Hello John", "{reply}");
    assert!(reply["error"].is_null(), "{reply}");

    // Go's protorpc client codec: a protorpc.Request header netstring, then the body's.
    let mut header = vec![0x0a, 13];
    header.extend_from_slice(b"Greeter.Hello");
    header.push(0x11);
    header.extend_from_slice(&1u64.to_le_bytes());
    let request = netstrings(&[&header, b"\x0a\x04John"]);
    let (head, body) = within(
        "proto-rpc",
        exchange(&address, "application/proto-rpc", &request),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // What Go's protorpc reads: a (here empty) Response header, then HelloReply{message}.
    assert_eq!(body, netstrings(&[b"", b"\x0a\x0aHello John"]));
    service.stop().await.expect("stop");
}

#[tokio::test]
async fn micro_clients_speak_both_framings() {
    let registry = MemoryRegistry::new();
    let service = greeter(&registry, vec![]).await;
    for content_type in ["application/json-rpc", "application/proto-rpc"] {
        let greeter =
            GreeterClient::new("greeter", client(&registry).with_content_type(content_type));
        let reply = within(
            content_type,
            greeter.hello(HelloRequest { name: "Ann".into() }),
        )
        .await
        .expect(content_type);
        assert_eq!(reply.into_inner().message, "Hello Ann", "{content_type}");
        let e = within(content_type, greeter.hello(HelloRequest::default()))
            .await
            .expect_err("an empty name");
        assert_eq!(
            (e.code, e.detail.as_str()),
            (400, "name must not be empty"),
            "{content_type}"
        );
    }
    service.stop().await.expect("stop");
}
