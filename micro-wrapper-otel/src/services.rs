//! [`Traced`]: the service [`Tracing`] wraps each path in, one `Service` impl per path.

use std::future::Future;
use std::task::{Context as TaskContext, Poll};

use micro_core::broker::{Delivery, Publication};
use micro_core::rpc::{self, Attempt, AttemptError, Call, ServerCall};
use micro_core::{BoxFuture, Error, Result};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, SpanRef, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tower_service::Service;

use crate::attributes::{self as attr, Side};
use crate::Tracing;

/// A Micro path (call, attempt, handler, publish or subscriber) wrapped in spans by
/// [`Tracing`].
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    tracing: Tracing,
}

impl<S> Traced<S> {
    pub(crate) fn new(inner: S, tracing: Tracing) -> Self {
        Traced { inner, tracing }
    }

    /// Starts a span as a child of `parent` and returns the context that holds it.
    fn start(
        &self,
        name: String,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        parent: &Context,
    ) -> Context {
        let span = self.tracing.tracer(|t| {
            t.span_builder(name)
                .with_kind(kind)
                .with_attributes(attributes)
                .start_with_context(t, parent)
        });
        parent.with_span(span)
    }
}

/// Ends the span in `cx` once. If it is dropped before [`Ending::finish`] (the future it
/// belongs to was dropped: the caller's deadline passed, the server stopped), the span ends
/// saying it was cancelled rather than looking like a success.
struct Ending(Option<Context>);

impl Ending {
    fn finish(mut self) {
        if let Some(cx) = self.0.take() {
            cx.span().end();
        }
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(cx) = self.0.take() {
            let span = cx.span();
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, attr::CANCELLED));
            span.set_status(Status::error("cancelled before it finished"));
            span.end();
        }
    }
}

/// Runs `fut` with `cx` attached (so calls made inside are its children), records its
/// outcome on the span with `record`, and ends the span.
fn run<F, T, E>(
    cx: Context,
    fut: F,
    record: impl FnOnce(&SpanRef<'_>, &std::result::Result<T, E>) + Send + 'static,
) -> BoxFuture<'static, std::result::Result<T, E>>
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
{
    let ending = Ending(Some(cx.clone()));
    Box::pin(async move {
        let ending = ending;
        let out = fut.with_context(cx.clone()).await;
        record(&cx.span(), &out);
        ending.finish();
        out
    })
}

/// Calls `inner` with `cx` current, for inner services that do work in `call` itself.
fn call_within<S: Service<R>, R>(inner: &mut S, cx: &Context, req: R) -> S::Future {
    let _attached = cx.clone().attach();
    inner.call(req)
}

impl<S> Service<Call> for Traced<S>
where
    S: Service<Call, Response = rpc::Response, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        let req = &call.request;
        let system = self.tracing.rpc_system.clone();
        let mut attributes = attr::rpc(&system, &req.service, &req.endpoint);
        if let Some(address) = &call.options.address {
            attributes.extend(attr::server(address));
        }
        let name = attr::rpc_span_name(&req.service, &req.endpoint);
        let cx = self.start(name, SpanKind::Client, attributes, &Context::current());
        // The attempt layer, when present, replaces this with the attempt's own span.
        self.tracing.inject(&cx, &mut call.request.metadata);
        let fut = call_within(&mut self.inner, &cx, call);
        run(cx, fut, move |span, out| {
            attr::rpc_outcome(span, &system, Side::Caller, out.as_ref().err())
        })
    }
}

impl<S> Service<Attempt> for Traced<S>
where
    S: Service<Attempt, Response = rpc::Response, Error = AttemptError>,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = AttemptError;
    type Future = BoxFuture<'static, std::result::Result<rpc::Response, AttemptError>>;

    fn poll_ready(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::result::Result<(), AttemptError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut attempt: Attempt) -> Self::Future {
        let req = &attempt.request;
        let system = match attempt.node.metadata.get("protocol").map(String::as_str) {
            Some("grpc") => attr::SYSTEM_GRPC.into(),
            _ => self.tracing.rpc_system.clone(),
        };
        let mut attributes = attr::rpc(&system, &req.service, &req.endpoint);
        attributes.extend(attr::server(&attempt.node.address));
        attributes.push(KeyValue::new(
            attr::MICRO_ATTEMPT,
            i64::from(attempt.number),
        ));
        if !attempt.node.id.is_empty() {
            attributes.push(KeyValue::new(attr::MICRO_NODE_ID, attempt.node.id.clone()));
        }
        let name = attr::rpc_span_name(&req.service, &req.endpoint);
        let cx = self.start(name, SpanKind::Client, attributes, &Context::current());
        self.tracing.inject(&cx, &mut attempt.request.metadata);
        let fut = call_within(&mut self.inner, &cx, attempt);
        run(cx, fut, move |span, out| match out {
            Ok(_) => attr::rpc_outcome(span, &system, Side::Caller, None),
            Err(AttemptError::Answered(e)) => {
                attr::rpc_outcome(span, &system, Side::Caller, Some(e))
            }
            Err(AttemptError::Unreachable(e)) => {
                attr::failed(span, Side::Caller, e, attr::UNREACHABLE.to_string())
            }
        })
    }
}

impl<S> Service<ServerCall> for Traced<S>
where
    S: Service<ServerCall, Response = rpc::Response, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: ServerCall) -> Self::Future {
        let req = &call.request;
        let parent = self.tracing.extract(&Context::current(), &req.metadata);
        let system = self.tracing.rpc_system.clone();
        let attributes = attr::rpc(&system, &req.service, &req.endpoint);
        let name = attr::rpc_span_name(&req.service, &req.endpoint);
        let cx = self.start(name, SpanKind::Server, attributes, &parent);
        let fut = call_within(&mut self.inner, &cx, call);
        run(cx, fut, move |span, out| {
            attr::rpc_outcome(span, &system, Side::Server, out.as_ref().err())
        })
    }
}

fn messaging(
    tracing: &Tracing,
    topic: &str,
    operation: (&'static str, &'static str),
    message: &micro_core::broker::Message,
) -> Vec<KeyValue> {
    let mut out = vec![
        KeyValue::new(attr::MESSAGING_SYSTEM, tracing.messaging_system.clone()),
        KeyValue::new(attr::MESSAGING_DESTINATION_NAME, topic.to_string()),
        KeyValue::new(attr::MESSAGING_OPERATION_TYPE, operation.0),
        KeyValue::new(attr::MESSAGING_OPERATION_NAME, operation.1),
        KeyValue::new(
            attr::MESSAGING_MESSAGE_BODY_SIZE,
            i64::try_from(message.body.len()).unwrap_or(i64::MAX),
        ),
    ];
    if let Some(id) = message.header.get(micro_core::headers::ID) {
        out.push(KeyValue::new(attr::MESSAGING_MESSAGE_ID, id.to_string()));
    }
    out
}

fn message_outcome(span: &SpanRef<'_>, out: &Result<()>) {
    if let Err(e) = out {
        attr::failed(span, Side::Caller, e, e.code.to_string());
    }
}

impl<S> Service<Publication> for Traced<S>
where
    S: Service<Publication, Response = (), Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<()>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut p: Publication) -> Self::Future {
        let attributes = messaging(&self.tracing, &p.topic, ("send", "publish"), &p.message);
        let name = format!("publish {}", p.topic);
        let cx = self.start(name, SpanKind::Producer, attributes, &Context::current());
        self.tracing.inject(&cx, &mut p.message.header);
        let fut = call_within(&mut self.inner, &cx, p);
        run(cx, fut, message_outcome)
    }
}

impl<S> Service<Delivery> for Traced<S>
where
    S: Service<Delivery, Response = (), Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<()>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let message = &delivery.message;
        let parent = self.tracing.extract(&Context::current(), &message.header);
        let attributes = messaging(
            &self.tracing,
            &delivery.topic,
            ("process", "process"),
            message,
        );
        let name = format!("process {}", delivery.topic);
        let cx = self.start(name, SpanKind::Consumer, attributes, &parent);
        let fut = call_within(&mut self.inner, &cx, delivery);
        run(cx, fut, message_outcome)
    }
}
