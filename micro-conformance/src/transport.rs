//! Helpers for transport tests: a unary call or a stream opened from a message in mucp's
//! header form (`Micro-Id`, `Micro-Service`, `Micro-Endpoint`, `Content-Type`, `Timeout`,
//! `Micro-Stream`, metadata), as tests of a transport's server side write their requests, and
//! replies read back in the same form.

use std::time::Duration;

use bytes::Bytes;
use micro_core::rpc::{self, AttemptError};
use micro_core::transport::{CallParams, Message, Socket, Transport};
use micro_core::{Error, Result};

/// How long a helper waits for a call or a stream to open.
const WAIT: Duration = Duration::from_secs(10);

/// The typed request a message's mucp header describes, and its `Timeout` (5 s without one).
pub fn request_of(msg: Message) -> (rpc::Request, Duration) {
    let h = &msg.header;
    let field = |k: &str| h.get(k).unwrap_or_default().to_string();
    let timeout = h
        .get("Timeout")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or(Duration::from_secs(5));
    let id = h.get("Micro-Stream").or_else(|| h.get("Micro-Id"));
    let request = rpc::Request {
        id: id.unwrap_or_default().to_string(),
        service: field("Micro-Service"),
        endpoint: field("Micro-Endpoint"),
        proto_service: h.get("Micro-Proto-Service").map(str::to_string),
        content_type: field("Content-Type"),
        metadata: h
            .iter()
            .filter(|(k, _)| !micro_core::headers::is_protocol(k))
            .collect(),
        body: msg.body,
    };
    (request, timeout)
}

/// One unary call through [`Transport::call`]: the reply as a message (its metadata and
/// `Content-Type`, or the node's error in `Micro-Error`); an unreachable node is an `Err`.
pub async fn call(transport: &dyn Transport, addr: &str, msg: Message) -> Result<Message> {
    call_with(transport, addr, msg, Duration::from_secs(5)).await
}

/// [`call`] with a connect timeout of its own.
pub async fn call_with(
    transport: &dyn Transport,
    addr: &str,
    msg: Message,
    connect_timeout: Duration,
) -> Result<Message> {
    let (request, timeout) = request_of(msg);
    let params = CallParams {
        timeout,
        connect_timeout,
    };
    let limit = timeout.max(connect_timeout) + WAIT;
    let answer = tokio::time::timeout(limit, transport.call(addr, &request, params))
        .await
        .map_err(|_| Error::timeout("test", format!("no answer from {addr} in {limit:?}")))?;
    match answer {
        Ok(rsp) => {
            let mut header = rsp.metadata;
            header.insert("Content-Type", rsp.content_type);
            Ok(Message {
                header,
                body: rsp.body,
            })
        }
        Err(AttemptError::Answered(e)) => Ok(Message {
            header: [("Micro-Error", e.to_json())].into_iter().collect(),
            body: Bytes::new(),
        }),
        Err(AttemptError::Unreachable(e)) => Err(e),
    }
}

/// Opens a stream through [`Transport::stream`] with the opening `open` describes (its
/// `Micro-Stream` is the stream id).
pub async fn open_stream(
    transport: &dyn Transport,
    addr: &str,
    open: Message,
    connect_timeout: Duration,
) -> Result<Box<dyn Socket>> {
    let (request, _) = request_of(open);
    let limit = connect_timeout + WAIT;
    tokio::time::timeout(limit, transport.stream(addr, &request, connect_timeout))
        .await
        .map_err(|_| Error::timeout("test", format!("no stream to {addr} in {limit:?}")))?
}
