//! Every stream kind over WebSocket, through a real gateway to the greeter, with
//! tokio-tungstenite as the client.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use micro_gateway::GatewayOptions;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::TestResult;
type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

use common::BOUND;

/// The next message, bounded.
async fn next(socket: &mut Socket) -> Message {
    tokio::time::timeout(BOUND, socket.next())
        .await
        .expect("a message within the bound")
        .expect("the socket is open")
        .expect("a good frame")
}

async fn reply(socket: &mut Socket) -> Value {
    match next(socket).await {
        Message::Text(text) => serde_json::from_str(&text).expect("a JSON reply"),
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// The close frame's code and reason.
async fn closed(socket: &mut Socket) -> (CloseCode, String) {
    match next(socket).await {
        Message::Close(Some(frame)) => (frame.code, frame.reason.to_string()),
        other => panic!("expected the close, got {other:?}"),
    }
}

async fn send(socket: &mut Socket, text: &str) {
    socket.send(Message::Text(text.into())).await.expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_kind_over_websocket() -> TestResult {
    let opts = GatewayOptions {
        timeout: Duration::from_secs(2),
        ..GatewayOptions::default()
    };
    let (gateway, greeter) = common::greeter_behind_gateway("greeter", opts).await?;
    let base = format!("ws://{}/api/greeter", gateway.local_addr());
    let connect = |path: &str| tokio_tungstenite::connect_async(format!("{base}{path}"));

    // Server streaming, the request in the query string.
    let (mut socket, _) = connect("/Greeter.Stream?name=Ann&count=3").await?;
    for i in 1..=3 {
        assert_eq!(
            reply(&mut socket).await,
            json!({"message": format!("Hello Ann #{i}")})
        );
    }
    assert_eq!(closed(&mut socket).await.0, CloseCode::Normal);

    // Bidirectional, each reply read before the next message is sent: the gateway carries
    // both directions at once.
    let (mut socket, _) = connect("/Greeter/Chat").await?;
    for name in ["a", "b", "c"] {
        send(&mut socket, &json!({ "name": name }).to_string()).await;
        assert_eq!(
            reply(&mut socket).await,
            json!({"message": format!("Hello {name}")})
        );
    }
    send(&mut socket, "").await;
    assert_eq!(closed(&mut socket).await.0, CloseCode::Normal);

    // Client streaming: the messages, the end of them, one reply.
    let (mut socket, _) = connect("/Greeter.Collect").await?;
    for name in ["a", "b", "c"] {
        send(&mut socket, &json!({ "name": name }).to_string()).await;
    }
    send(&mut socket, "").await;
    assert_eq!(
        reply(&mut socket).await,
        json!({"message": "Hello a, b, c"})
    );
    assert_eq!(closed(&mut socket).await.0, CloseCode::Normal);

    // A message that is not JSON ends the stream with 4400.
    let (mut socket, _) = connect("/Greeter.Chat").await?;
    send(&mut socket, "{not json").await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(u16::from(code), 4400, "{reason}");
    assert!(reason.contains("not JSON"), "{reason}");

    // An endpoint the service does not have: the service's 404, as 4404.
    let (mut socket, _) = connect("/Greeter.Nope").await?;
    send(&mut socket, "{}").await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(u16::from(code), 4404, "{reason}");

    // Nothing sent either way for the gateway's timeout: 4504.
    let (mut socket, _) = connect("/Greeter.Chat").await?;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(u16::from(code), 4504, "{reason}");

    // An unknown service is refused before the upgrade, with the HTTP status.
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/api/nobody/Nobody.Stream",
        gateway.local_addr()
    ))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404);
        }
        other => panic!("expected a 404 before the upgrade, got {other:?}"),
    }

    gateway.shutdown().await;
    greeter.stop().await?;
    Ok(())
}
