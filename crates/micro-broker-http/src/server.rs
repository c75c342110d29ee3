//! The receiving side: an HTTP/1.1 server that takes `POST /?id=<node id>` with the JSON
//! envelope and runs the subscriber registered under that node id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use micro_core::broker::{Delivery, Handler};
use micro_core::{Error, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{wire, ID, TOPIC_HEADER};

/// How long a connection may wait for its next request head. Above Go Micro's (and our own
/// client's) pool idle time, so that publishers do not find pooled connections closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One subscription as the server sees it.
pub(crate) struct Subscriber {
    /// The topic it subscribed to.
    pub(crate) topic: String,
    /// What runs for each message.
    pub(crate) handler: Handler,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The live subscribers by node id, shared between the broker and its server.
pub(crate) type Subscribers = Arc<RwLock<HashMap<String, Arc<Subscriber>>>>;

/// What every connection of one server needs.
#[derive(Debug)]
struct Shared {
    subscribers: Subscribers,
    max_body_bytes: usize,
    body_timeout: Duration,
}

/// A running server; dropping it stops accepting without waiting.
#[derive(Debug)]
pub(crate) struct Server {
    /// The address the listener is bound to.
    pub(crate) local_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Binds `addr` and starts serving the subscribers in `subscribers`.
    pub(crate) async fn bind(
        addr: &str,
        subscribers: Subscribers,
        max_body_bytes: usize,
        body_timeout: Duration,
    ) -> Result<Server> {
        let listen_error = |e: std::io::Error| {
            Error::internal(
                ID,
                format!("the http broker cannot listen on {addr}: {e} (set MICRO_BROKER_ADDRESS to a free host:port)"),
            )
        };
        let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let shared = Arc::new(Shared {
            subscribers,
            max_body_bytes,
            body_timeout,
        });
        let server = Server {
            local_addr,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        server.tasks.spawn(accept_loop(
            listener,
            shared,
            server.shutdown.clone(),
            server.tasks.clone(),
        ));
        Ok(server)
    }

    /// Stops accepting, lets requests in flight finish (up to `wait`), and closes.
    pub(crate) async fn shutdown(self, wait: Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(wait, self.tasks.wait()).await.is_err() {
            tracing::warn!(addr = %self.local_addr, "http broker: handlers still running after {wait:?}; closing anyway");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                tasks.spawn(serve_connection(stream, shared.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Usually out of file descriptors: pause rather than spin.
                tracing::warn!(error = %e, "http broker: accepting a connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            // Finishes the request in flight, then closes; idle connections close at once.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "http broker: connection ended with an error");
    }
}

fn reply(status: StatusCode, error: Option<&Error>) -> Response<Full<Bytes>> {
    let body = error.map(|e| Bytes::from(e.to_json())).unwrap_or_default();
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    if error.is_some() {
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    res
}

fn reject(error: Error) -> Response<Full<Bytes>> {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    tracing::debug!(%error, "http broker: rejected a request");
    reply(status, Some(&error))
}

/// Answers one request: 200 when the handler took the message, 500 with the handler's error
/// as JSON when it failed, 4xx (with a Micro error JSON saying why) for bad requests.
async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut res = reject(Error::method_not_allowed(
            ID,
            format!(
                "the http broker takes POST /?id=<subscriber node id>, not {}",
                req.method()
            ),
        ));
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return res;
    }
    let id = req
        .uri()
        .query()
        .and_then(|q| wire::query_value(q, "id"))
        .filter(|id| !id.is_empty());
    let Some(id) = id else {
        return reject(Error::bad_request(
            ID,
            "missing subscriber id: POST to /?id=<node id> as registered under micro.http.broker",
        ));
    };
    let subscriber = shared
        .subscribers
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&id)
        .cloned();
    let Some(subscriber) = subscriber else {
        return reject(Error::not_found(
            ID,
            format!(
                "no subscriber {id:?} here: it unsubscribed, or the id belongs to another broker"
            ),
        ));
    };

    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        reject(Error::payload_too_large(
            ID,
            format!(
                "the message is larger than this broker's limit of {} bytes (MICRO_BROKER_HTTP_MAX_BODY)",
                shared.max_body_bytes
            ),
        ))
    };
    if declared.is_some_and(|n| n > shared.max_body_bytes as u64) {
        return too_large();
    }
    let body = Limited::new(req.into_body(), shared.max_body_bytes);
    let body = match tokio::time::timeout(shared.body_timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(e)) => {
            return reject(Error::bad_request(
                ID,
                format!("reading the request body failed: {e}"),
            ))
        }
        Err(_) => {
            return reject(Error::timeout(
                ID,
                format!(
                    "the request body did not arrive within {:?}",
                    shared.body_timeout
                ),
            ))
        }
    };
    let message = match wire::decode(&body) {
        Ok(m) => m,
        Err(e) => return reject(Error::bad_request(ID, e.to_string())),
    };
    if let Some(topic) = message.header.get(TOPIC_HEADER) {
        if topic != subscriber.topic {
            return reject(Error::not_found(
                ID,
                format!(
                    "subscriber {id:?} is subscribed to {:?}, not to {topic:?}",
                    subscriber.topic
                ),
            ));
        }
    }

    // The handler runs in a task of its own: a publisher that hangs up does not cancel it
    // halfway, and a panic becomes a 500 instead of a dropped connection.
    let delivery = Delivery::new(subscriber.topic.clone(), message, None);
    let handler = subscriber.handler.clone();
    match tokio::spawn(async move { handler(delivery).await }).await {
        Ok(Ok(())) => reply(StatusCode::OK, None),
        Ok(Err(e)) => {
            tracing::warn!(topic = %subscriber.topic, error = %e, "http broker: subscriber failed; the message is not redelivered");
            reply(StatusCode::INTERNAL_SERVER_ERROR, Some(&e))
        }
        Err(join) => {
            let e = Error::internal(
                ID,
                format!("the subscriber of {} panicked: {join}", subscriber.topic),
            );
            tracing::error!(topic = %subscriber.topic, error = %e, "http broker: subscriber panicked");
            reply(StatusCode::INTERNAL_SERVER_ERROR, Some(&e))
        }
    }
}
