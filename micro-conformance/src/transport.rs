//! Helpers for transport tests: a unary call or a stream opened from a message in mucp's
//! header form (`Micro-Id`, `Micro-Service`, `Micro-Endpoint`, `Content-Type`, `Timeout`,
//! `Micro-Stream`, metadata), and replies read back in the same form; and [`Accepting`], a
//! server for a listener that lets the test take each call and answer it by hand.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use micro_core::rpc::{self, AttemptError};
use micro_core::transport::{CallHandler, CallParams, EndpointKind, Message, Socket, Transport};
use micro_core::{Error, Result};
use tokio::sync::{mpsc, oneshot};

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

/// A [`CallHandler`] for tests of a transport's server side: every call it gets is queued as a
/// socket for the test to take with [`Accepted::accept`] and answer by hand. A unary call's
/// socket yields the request once, as a message in mucp's header form, and its first `send`
/// is the answer (a `Micro-Error` header makes it an error); dropping it unanswered fails the
/// call. Streams are queued as the listener hands them over. `kinds` says what each endpoint
/// is, for listeners that ask ([`CallHandler::kind`]).
#[derive(Debug)]
pub struct Accepting {
    queue: mpsc::Sender<Box<dyn Socket>>,
    kinds: fn(&str) -> Option<EndpointKind>,
}

/// The test's end of [`Accepting`].
#[derive(Debug)]
pub struct Accepted(tokio::sync::Mutex<mpsc::Receiver<Box<dyn Socket>>>);

/// A handler that queues every call, and the queue.
pub fn accepting(kinds: fn(&str) -> Option<EndpointKind>) -> (Arc<Accepting>, Accepted) {
    let (queue, rx) = mpsc::channel(64);
    (
        Arc::new(Accepting { queue, kinds }),
        Accepted(tokio::sync::Mutex::new(rx)),
    )
}

impl Accepted {
    /// The next call, in the order they arrived; `None` once the listener has gone away.
    pub async fn accept(&self) -> Option<Box<dyn Socket>> {
        self.0.lock().await.recv().await
    }
}

impl CallHandler for Accepting {
    fn kind(&self, endpoint: &str) -> Option<EndpointKind> {
        (self.kinds)(endpoint)
    }

    fn unary(
        &self,
        req: rpc::Request,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<rpc::Response>> + Send>> {
        let queue = self.queue.clone();
        Box::pin(async move {
            let endpoint = req.endpoint.clone();
            let (reply, answer) = oneshot::channel();
            let socket = UnarySocket {
                request: Some(Message {
                    header: micro_core::headers::request_header(&req, timeout),
                    body: req.body,
                }),
                reply: Some(reply),
            };
            if queue.send(Box::new(socket)).await.is_err() {
                return Err(Error::internal("test", "nobody takes calls any more"));
            }
            let msg = answer.await.map_err(|_| {
                Error::internal(
                    "test",
                    format!("the test dropped the request for {endpoint} without replying"),
                )
            })?;
            if let Some(e) = msg.header.get("Micro-Error") {
                return Err(Error::parse(e));
            }
            Ok(rpc::Response {
                content_type: msg
                    .header
                    .get("Content-Type")
                    .unwrap_or_default()
                    .to_string(),
                metadata: msg
                    .header
                    .iter()
                    .filter(|(k, _)| !micro_core::headers::is_protocol(k))
                    .collect(),
                body: msg.body,
                stream: None,
            })
        })
    }

    fn stream(&self, socket: Box<dyn Socket>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let queue = self.queue.clone();
        Box::pin(async move {
            let _ = queue.send(socket).await;
        })
    }
}

/// A unary call as [`Accepting`] hands it to a test.
#[derive(Debug)]
struct UnarySocket {
    request: Option<Message>,
    reply: Option<oneshot::Sender<Message>>,
}

#[async_trait::async_trait]
impl Socket for UnarySocket {
    async fn send(&mut self, msg: Message) -> Result<()> {
        let reply = self
            .reply
            .take()
            .ok_or_else(|| Error::internal("test", "a unary call has one answer"))?;
        reply
            .send(msg)
            .map_err(|_| Error::internal("test", "the caller went away"))
    }

    async fn recv(&mut self) -> Result<Option<Message>> {
        Ok(self.request.take())
    }

    async fn close(&mut self) -> Result<()> {
        self.reply = None;
        Ok(())
    }

    fn remote_addr(&self) -> String {
        "a test's caller".into()
    }
}
