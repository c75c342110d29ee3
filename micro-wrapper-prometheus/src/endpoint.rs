//! The `/metrics` endpoint: a small HTTP/1.1 server for Prometheus to scrape.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use micro_core::{Error, Result};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::Metrics;

/// The content type of Prometheus's text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How many header lines a scrape request may have.
const MAX_HEADERS: usize = 64;

/// The bounds of a `/metrics` endpoint ([`crate::Metrics::serve_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointOptions {
    /// How long a connection may take to send a request's head, and stay idle between
    /// requests (10 s): a client that sends nothing, or a head a byte at a time, is cut off.
    pub header_timeout: Duration,
    /// How many connections are served at once (32); past it a new connection is closed at
    /// once, and those open keep being served.
    pub max_connections: usize,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            header_timeout: Duration::from_secs(10),
            max_connections: 32,
        }
    }
}

/// A running `/metrics` endpoint. It stops when shut down or dropped.
pub struct MetricsServer {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsServer")
            .field("address", &self.address)
            .finish()
    }
}

impl MetricsServer {
    pub(crate) async fn bind(
        metrics: Metrics,
        address: &str,
        opts: EndpointOptions,
    ) -> Result<Self> {
        let listener = TcpListener::bind(address).await.map_err(|e| {
            Error::internal(
                "micro.prometheus",
                format!("cannot listen for /metrics on {address}: {e}"),
            )
        })?;
        let address = listener.local_addr().map_err(|e| {
            Error::internal(
                "micro.prometheus",
                format!("the /metrics listener on {address} has no address: {e}"),
            )
        })?;
        let task = tokio::spawn(accept_loop(listener, metrics, opts));
        tracing::info!(%address, "serving /metrics");
        Ok(MetricsServer { address, task })
    }

    /// The address it listens on (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The URL to scrape: `http://<address>/metrics`.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.address)
    }

    /// Stops listening and closes open connections.
    pub fn shutdown(self) {
        // Drop does the work.
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts the connections.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, metrics: Metrics, opts: EndpointOptions) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= opts.max_connections => {
                    tracing::debug!(%peer, "/metrics: too many connections, closing a new one");
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    let metrics = metrics.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let metrics = metrics.clone();
                            async move { Ok::<_, Infallible>(respond(&metrics, &req)) }
                        });
                        // The head deadline also bounds a connection left idle between requests.
                        let served = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(opts.header_timeout)
                            .max_headers(MAX_HEADERS)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(e) = served {
                            tracing::debug!(%peer, error = %e, "/metrics connection failed");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "/metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn respond(metrics: &Metrics, req: &hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut rsp = hyper::Response::new(Full::new(Bytes::from(body)));
        *rsp.status_mut() = status;
        rsp
    };
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut rsp = text(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n".into());
        rsp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return rsp;
    }
    match metrics.render() {
        Ok(body) => {
            let mut rsp = text(StatusCode::OK, body);
            rsp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
            rsp
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
