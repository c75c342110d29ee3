//! Streams over WebSocket: every stream kind, a JSON text message per message each way.
//!
//! - Each text (or binary) message from the caller is one JSON request message; the upgrade
//!   request's query string, when there is one, is the first (`?name=John&count=3`).
//! - An empty text message ends the caller's messages (the service's `recv` sees the end);
//!   replies keep coming until the service ends the stream.
//! - Each reply is one text message with its JSON.
//! - The service ending the stream closes the WebSocket with `1000`; an error closes it with
//!   `4000 +` the HTTP status the error would have had (`4404`, `4504`, ...) and the error's
//!   detail as the reason. A message that is not JSON closes it with `4400`.
//! - Nothing sent either way for the gateway's timeout closes it with `4504`.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use micro::{Error, Json, Result};
use serde_json::Value;

use crate::{not_json, status_of, ID};

/// The caller's side of the stream, as Micro's client opened it.
pub(crate) type Opened = micro::client::Stream<Json<Value>, Json<Value>>;

/// Carries one stream between `socket` and the service until either ends, then closes the
/// WebSocket with the outcome.
pub(crate) async fn bridge(
    mut socket: WebSocket,
    stream: Opened,
    first: Option<Value>,
    idle: std::time::Duration,
) {
    let frame = match carry(&mut socket, stream, first, idle).await {
        Ok(()) => CloseFrame {
            code: 1000,
            reason: "".into(),
        },
        Err(e) => CloseFrame {
            code: 4000 + status_of(&e).as_u16(),
            reason: reason(&e.detail).into(),
        },
    };
    // The caller may be gone already: nothing more to tell it then.
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn carry(
    socket: &mut WebSocket,
    mut stream: Opened,
    first: Option<Value>,
    idle: std::time::Duration,
) -> Result<()> {
    if let Some(first) = first {
        send(&mut stream, first, idle).await?;
    }
    let mut sending = true;
    loop {
        // Both `recv`s are cancel-safe: whichever loses the race keeps its message.
        tokio::select! {
            message = socket.recv(), if sending => {
                let text: &[u8] = match &message {
                    // The caller closed or went away: the stream ends with it.
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Text(text))) => text.as_bytes(),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    // Pings are answered by the WebSocket itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                };
                if text.is_empty() {
                    stream.close_send().await?;
                    sending = false;
                    continue;
                }
                let value: Value = serde_json::from_slice(text)
                    .map_err(|e| not_json("a WebSocket message", &e))?;
                send(&mut stream, value, idle).await?;
            }
            reply = stream.recv() => match reply? {
                Some(Json(reply)) => {
                    if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            },
            () = tokio::time::sleep(idle) => {
                return Err(Error::timeout(
                    ID,
                    format!("nothing was sent either way for {idle:?}"),
                ));
            }
        }
    }
}

/// Sends one message. When the service has already ended the stream, the send fails for
/// want of a peer; the stream's last message tells the real reason.
async fn send(stream: &mut Opened, message: Value, idle: std::time::Duration) -> Result<()> {
    let Err(refused) = stream.send(&Json(message)).await else {
        return Ok(());
    };
    match tokio::time::timeout(idle, stream.recv()).await {
        Ok(Err(why)) => Err(why),
        _ => Err(refused),
    }
}

/// A close reason fits in 123 bytes: the detail, cut at a character boundary.
fn reason(detail: &str) -> String {
    let mut end = detail.len().min(123);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    detail[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[test]
    fn close_reasons_are_cut_to_fit_on_a_character_boundary() {
        assert_eq!(reason("short"), "short");
        let long = "é".repeat(100);
        let cut = reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(&cut));
        assert_eq!(cut.chars().count(), 61);
    }
}
