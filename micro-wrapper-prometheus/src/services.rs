//! [`Measured`]: the service [`Metrics`] wraps each path in, one `Service` impl per path.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Instant;

use micro_core::broker::{Delivery, Publication};
use micro_core::rpc::{self, Attempt, AttemptError, Call, ServerCall};
use micro_core::{BoxFuture, Error, Result};
use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};
use tower_service::Service;

use crate::Metrics;

/// A Micro path (call, attempt, handler, publish or subscriber) measured by [`Metrics`].
#[derive(Debug, Clone)]
pub struct Measured<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Measured<S> {
    pub(crate) fn new(inner: S, metrics: Metrics) -> Self {
        Measured { inner, metrics }
    }
}

/// The `code` label of a success.
const OK: &str = "200";
/// The `code` label of an attempt that did not reach its node.
const UNREACHABLE: &str = "unreachable";
/// The `code` label of work dropped before it finished.
const CANCELLED: &str = "cancelled";

/// One call or message being measured: in flight from its start, counted and timed once at
/// its end. Dropped before [`Measurement::finish`] (the caller's deadline passed, the server
/// stopped), it ends as a failure with code `cancelled`, so the gauge always comes back down.
struct Measurement {
    counter: IntCounterVec,
    labels: Vec<String>,
    duration: Option<Histogram>,
    in_flight: Option<IntGauge>,
    start: Instant,
    done: bool,
}

impl Measurement {
    fn start(
        counter: &IntCounterVec,
        labels: Vec<String>,
        duration: Option<&HistogramVec>,
        in_flight: Option<&IntGaugeVec>,
    ) -> Self {
        let values: Vec<&str> = labels.iter().map(String::as_str).collect();
        let duration = duration.map(|h| h.with_label_values(&values));
        let in_flight = in_flight.map(|g| g.with_label_values(&values));
        if let Some(g) = &in_flight {
            g.inc();
        }
        Measurement {
            counter: counter.clone(),
            labels,
            duration,
            in_flight,
            start: Instant::now(),
            done: false,
        }
    }

    fn finish(mut self, code: &str) {
        self.record(code);
    }

    fn record(&mut self, code: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(g) = &self.in_flight {
            g.dec();
        }
        if let Some(h) = &self.duration {
            h.observe(self.start.elapsed().as_secs_f64());
        }
        let status = if code == OK { "success" } else { "failure" };
        let mut values: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        values.extend([status, code]);
        self.counter.with_label_values(&values).inc();
    }
}

impl Drop for Measurement {
    fn drop(&mut self) {
        self.record(CANCELLED);
    }
}

/// Awaits `fut`, then finishes `m` with the code `code` reads from the outcome.
fn measure<F, T, E>(
    m: Measurement,
    fut: F,
    code: impl FnOnce(&std::result::Result<T, E>) -> String + Send + 'static,
) -> BoxFuture<'static, std::result::Result<T, E>>
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
{
    Box::pin(async move {
        let m = m;
        let out = fut.await;
        m.finish(&code(&out));
        out
    })
}

fn code_of<T>(out: &Result<T>) -> String {
    match out {
        Ok(_) => OK.to_string(),
        Err(e) => e.code.to_string(),
    }
}

fn rpc_labels(req: &rpc::Request) -> Vec<String> {
    vec![req.service.clone(), req.endpoint.clone()]
}

impl<S> Service<Call> for Measured<S>
where
    S: Service<Call, Response = rpc::Response, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let i = self.metrics.instruments();
        let m = Measurement::start(
            &i.client_requests,
            rpc_labels(&call.request),
            Some(&i.client_duration),
            Some(&i.client_in_flight),
        );
        measure(m, self.inner.call(call), code_of)
    }
}

impl<S> Service<Attempt> for Measured<S>
where
    S: Service<Attempt, Response = rpc::Response, Error = AttemptError>,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = AttemptError;
    type Future = BoxFuture<'static, std::result::Result<rpc::Response, AttemptError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), AttemptError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let i = self.metrics.instruments();
        let m = Measurement::start(&i.client_attempts, rpc_labels(&attempt.request), None, None);
        measure(m, self.inner.call(attempt), |out| match out {
            Ok(_) => OK.to_string(),
            Err(AttemptError::Answered(e)) => e.code.to_string(),
            Err(AttemptError::Unreachable(_)) => UNREACHABLE.to_string(),
        })
    }
}

impl<S> Service<ServerCall> for Measured<S>
where
    S: Service<ServerCall, Response = rpc::Response, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let i = self.metrics.instruments();
        let m = Measurement::start(
            &i.server_requests,
            rpc_labels(&call.request),
            Some(&i.server_duration),
            Some(&i.server_in_flight),
        );
        measure(m, self.inner.call(call), code_of)
    }
}

impl<S> Service<Publication> for Measured<S>
where
    S: Service<Publication, Response = (), Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<()>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, p: Publication) -> Self::Future {
        let i = self.metrics.instruments();
        let m = Measurement::start(&i.published, vec![p.topic.clone()], None, None);
        measure(m, self.inner.call(p), code_of)
    }
}

impl<S> Service<Delivery> for Measured<S>
where
    S: Service<Delivery, Response = (), Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<()>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let i = self.metrics.instruments();
        let m = Measurement::start(
            &i.delivered,
            vec![delivery.topic.clone()],
            Some(&i.delivery_duration),
            Some(&i.deliveries_in_flight),
        );
        measure(m, self.inner.call(delivery), code_of)
    }
}
