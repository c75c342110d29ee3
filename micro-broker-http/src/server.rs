//! The receiving side: an HTTP/1.1 server that takes `POST /?id=<node id>` with the JSON
//! envelope and runs the subscriber registered under that node id.

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use micro_core::broker::{Delivery, Handler};
use micro_core::{BoxFuture, Error, MetadataLimits, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{wire, HttpBrokerOptions, ID, TOPIC_HEADER};

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
    header_limits: MetadataLimits,
    /// The server's tasks: connections, and handlers whose publisher hung up.
    tasks: TaskTracker,
    /// Connections open now, and how many may be.
    open: AtomicUsize,
    max_connections: usize,
    idle_timeout: Duration,
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
    /// Binds `opts.address` and starts serving the subscribers in `subscribers`.
    pub(crate) async fn bind(subscribers: Subscribers, opts: &HttpBrokerOptions) -> Result<Server> {
        let addr = &opts.address;
        let listen_error = |e: std::io::Error| {
            Error::internal(
                ID,
                format!("the http broker cannot listen on {addr}: {e} (set MICRO_BROKER_ADDRESS to a free host:port)"),
            )
        };
        let listener = TcpListener::bind(addr).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let tasks = TaskTracker::new();
        let shared = Arc::new(Shared {
            subscribers,
            max_body_bytes: opts.max_body_bytes,
            body_timeout: opts.request_timeout,
            header_limits: opts.header_limits,
            tasks: tasks.clone(),
            open: AtomicUsize::new(0),
            max_connections: opts.max_connections,
            idle_timeout: opts.idle_timeout,
        });
        let server = Server {
            local_addr,
            shutdown: CancellationToken::new(),
            tasks,
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
            Ok((stream, peer)) => {
                // Only this loop adds to the count, so the check and the add cannot race.
                if shared.open.load(Ordering::Acquire) >= shared.max_connections {
                    tracing::warn!(%peer, "http broker: {} connections open, closing a new one", shared.max_connections);
                    drop(stream);
                    continue;
                }
                shared.open.fetch_add(1, Ordering::AcqRel);
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

/// Serves one connection until it closes, the server shuts down, or it stays idle.
///
/// The idle bound is kept here rather than with hyper's `header_read_timeout`, which arms a
/// timer of its own (a boxed sleep, registered and dropped) for every request head: one timer
/// per connection, re-armed each [`HttpBrokerOptions::idle_timeout`], closes a connection on which no request
/// started for a whole period and none is in flight. A client sending nothing is thus cut off
/// after one to two periods, and one sending its head slowly after two to three.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    // However the connection ends (this future dropped included), it is counted out.
    struct Open(Arc<Shared>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _open = Open(shared.clone());
    let idle_timeout = shared.idle_timeout;
    let activity = Arc::new(Activity::default());
    let counted = activity.clone();
    let service = service_fn(move |req| {
        counted.started.fetch_add(1, Ordering::Relaxed);
        let (shared, counted) = (shared.clone(), counted.clone());
        async move {
            let response = handle(req, &shared).await;
            counted.finished.fetch_add(1, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut started_before = 0;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = shutdown.cancelled() => {
                // Finishes the request in flight, then closes; idle connections close at once.
                // A slowloris (or a handler still running) holds it one idle period at most.
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(idle_timeout, conn.as_mut()).await {
                    Ok(result) => break result,
                    Err(_) => {
                        tracing::debug!("http broker: cut a connection still open {idle_timeout:?} into the shutdown");
                        break Ok(());
                    }
                }
            }
            _ = idle.as_mut() => {
                let started = activity.started.load(Ordering::Relaxed);
                let in_flight = started != activity.finished.load(Ordering::Relaxed);
                if started == started_before && !in_flight {
                    tracing::debug!("http broker: closing a connection without requests for {idle_timeout:?}");
                    conn.as_mut().graceful_shutdown();
                    // hyper closes an idle connection at once, but one in the middle of a
                    // request head (a slowloris) only once the head is complete: give it one
                    // more period, then drop it. No request of it has started, so none is cut.
                    match tokio::time::timeout(idle_timeout, conn.as_mut()).await {
                        Ok(result) => break result,
                        Err(_) => {
                            tracing::debug!("http broker: cutting off a connection that sent no complete request head for {:?}", idle_timeout * 2);
                            break Ok(());
                        }
                    }
                }
                started_before = started;
                idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "http broker: connection ended with an error");
    }
}

/// Requests on one connection, for its idle bound.
#[derive(Debug, Default)]
struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
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
    let (head, body) = req.into_parts();
    let id = head
        .uri
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
        .get(id.as_ref())
        .cloned();
    let Some(subscriber) = subscriber else {
        return reject(Error::not_found(
            ID,
            format!(
                "no subscriber {id:?} here: it unsubscribed, or the id belongs to another broker"
            ),
        ));
    };

    let declared = head
        .headers
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
    let body = Limited::new(body, shared.max_body_bytes);
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
    let message = match wire::decode(&body, shared.header_limits) {
        Ok(m) => m,
        Err(wire::DecodeError::Headers(e)) => {
            tracing::warn!(topic = %subscriber.topic, error = %e, "dropped a message whose headers cross the limits");
            return reject(e);
        }
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

    let delivery = Delivery::new(subscriber.topic.clone(), message, None);
    let outcome = match HandlerRun::start(&subscriber, delivery, &shared.tasks) {
        Ok(run) => run.await,
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(()) => reply(StatusCode::OK, None),
        Err(HandlerFailure::Failed(e)) => {
            tracing::warn!(topic = %subscriber.topic, error = %e, "http broker: subscriber failed; the message is not redelivered");
            reply(StatusCode::INTERNAL_SERVER_ERROR, Some(&e))
        }
        Err(HandlerFailure::Panicked(what)) => {
            let e = Error::internal(
                ID,
                format!("the subscriber of {} panicked: {what}", subscriber.topic),
            );
            tracing::error!(topic = %subscriber.topic, error = %e, "http broker: subscriber panicked");
            reply(StatusCode::INTERNAL_SERVER_ERROR, Some(&e))
        }
    }
}

/// Why a handler did not take a message.
enum HandlerFailure {
    /// It returned an error.
    Failed(Error),
    /// It panicked, with this message.
    Panicked(String),
}

/// One run of a subscriber's handler, polled on the connection's own task.
///
/// The handler used to run in a task of its own, which cost a spawn and a wake across threads
/// per message. Two things that task gave are kept here by hand:
///
/// - a panic, while making the handler's future or while polling it, becomes
///   [`HandlerFailure::Panicked`] (a 500), and the connection goes on;
/// - when hyper drops the request before the handler finished (the publisher hung up, or its
///   connection broke), the rest of the handler moves to a task of its own and runs to its
///   end instead of being cancelled halfway. That task is tracked with the connections, so
///   shutting the server down waits for it as it waits for requests in flight.
struct HandlerRun {
    future: Option<BoxFuture<'static, Result<()>>>,
    /// Shared with the subscriber, for the log of a detached run.
    subscriber: Arc<Subscriber>,
    tasks: TaskTracker,
}

impl HandlerRun {
    /// Calls the handler; the run is its future, to be awaited.
    fn start(
        subscriber: &Arc<Subscriber>,
        delivery: Delivery,
        tasks: &TaskTracker,
    ) -> std::result::Result<HandlerRun, HandlerFailure> {
        let handler = &subscriber.handler;
        match std::panic::catch_unwind(AssertUnwindSafe(|| handler(delivery))) {
            Ok(future) => Ok(HandlerRun {
                future: Some(future),
                subscriber: subscriber.clone(),
                tasks: tasks.clone(),
            }),
            Err(panic) => Err(HandlerFailure::Panicked(panic_message(panic.as_ref()))),
        }
    }
}

impl Future for HandlerRun {
    type Output = std::result::Result<(), HandlerFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Ready(Err(HandlerFailure::Panicked(
                "polled again after it ended".into(),
            )));
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
        let outcome = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(result)) => result.map_err(HandlerFailure::Failed),
            Err(panic) => Err(HandlerFailure::Panicked(panic_message(panic.as_ref()))),
        };
        self.future = None;
        Poll::Ready(outcome)
    }
}

impl Drop for HandlerRun {
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        // Without a runtime (it is shutting down) the handler cannot go on anyway.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let subscriber = self.subscriber.clone();
        tracing::debug!(topic = %subscriber.topic, "http broker: the publisher hung up; the subscriber finishes the message anyway");
        self.tasks.spawn_on(
            async move {
                match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(topic = %subscriber.topic, error = %e, "http broker: subscriber failed after its publisher hung up");
                    }
                    Err(panic) => {
                        tracing::error!(topic = %subscriber.topic, "http broker: subscriber panicked after its publisher hung up: {}", panic_message(panic.as_ref()));
                    }
                }
            },
            &runtime,
        );
    }
}

/// The text of a panic's payload.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
