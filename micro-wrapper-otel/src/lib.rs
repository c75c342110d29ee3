//! OpenTelemetry tracing for Micro for Rust.
//!
//! [`Tracing`] is one tower [`Layer`](tower_layer::Layer) that fits every middleware path of a
//! Micro service, and the request type of the path decides the span it makes:
//!
//! | path (`ServiceBuilder::...`) | request | span |
//! |---|---|---|
//! | `client_layer` | [`Call`](micro_core::rpc::Call) | one `Client` span per call, retries included |
//! | `attempt_layer` | [`Attempt`](micro_core::rpc::Attempt) | one `Client` span per try on one node |
//! | `handler_layer` | [`ServerCall`](micro_core::rpc::ServerCall) | one `Server` span per handled call |
//! | `publish_layer` | [`Publication`](micro_core::broker::Publication) | one `Producer` span per published message |
//! | `subscriber_layer` | [`Delivery`](micro_core::broker::Delivery) | one `Consumer` span per delivered message |
//!
//! The trace context travels in W3C `traceparent`/`tracestate` headers (or whatever
//! [`TextMapPropagator`] is configured): the client and publish paths inject it into the
//! request metadata and the message headers; the handler and subscriber paths extract it. The
//! handler and subscriber futures run with their span's [`Context`] attached (OpenTelemetry's
//! `FutureExt::with_context`), so a call a handler makes to another service is a child of the
//! handler's span with no code in the handler: one trace goes from service A through the broker
//! to service B and on to service C.
//!
//! Spans follow OpenTelemetry's semantic conventions for RPC and messaging; see [`attributes`]
//! for the attribute names and how a Micro error maps to span status.
//!
//! # Example
//!
//! ```no_run
//! use micro_wrapper_otel::Tracing;
//! use opentelemetry::trace::TracerProvider as _;
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! # async fn run() -> micro::Result<()> {
//! // Any exporter: OTLP, stdout, the SDK's in-memory exporter in tests.
//! let provider = SdkTracerProvider::builder().build();
//! let tracing = Tracing::from_provider(&provider);
//! let service = micro::Service::builder("orders")
//!     .client_layer(tracing.clone())
//!     .attempt_layer(tracing.clone())
//!     .handler_layer(tracing.clone())
//!     .publish_layer(tracing.clone())
//!     .subscriber_layer(tracing)
//!     .build()?;
//! service.run().await?;
//! let _ = provider.shutdown(); // flushes the spans still queued
//! # Ok(()) }
//! ```
//!
//! With `micro`'s `otel` feature this crate is `micro::otel`. [`Tracing::new`] uses the global
//! tracer provider (`opentelemetry::global::set_tracer_provider`), looked up at each span, so
//! it may be built before the provider is installed.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub mod attributes;
mod metadata;
mod services;

pub use metadata::{MetadataExtractor, MetadataInjector};
pub use services::Traced;

/// The instrumentation scope of the spans this crate makes.
pub const SCOPE_NAME: &str = "micro-wrapper-otel";

/// Tracing for Micro services: a tower layer for the client, attempt, handler, publish and
/// subscriber paths. Cheap to clone; clones share the tracer and propagator.
#[derive(Clone)]
pub struct Tracing {
    tracer: Source,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    rpc_system: Cow<'static, str>,
    messaging_system: Cow<'static, str>,
}

#[derive(Clone)]
enum Source {
    /// The global provider's tracer, looked up at each span so that installing a provider
    /// after the service is built still works.
    Global,
    Fixed(Arc<BoxedTracer>),
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tracer = match self.tracer {
            Source::Global => "global",
            Source::Fixed(_) => "fixed",
        };
        f.debug_struct("Tracing")
            .field("tracer", &tracer)
            .field("propagator", &self.propagator)
            .field("rpc_system", &self.rpc_system)
            .field("messaging_system", &self.messaging_system)
            .finish()
    }
}

impl Default for Tracing {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracing {
    fn with_source(tracer: Source) -> Self {
        Tracing {
            tracer,
            propagator: Arc::new(TraceContextPropagator::new()),
            rpc_system: Cow::Borrowed(attributes::SYSTEM_MICRO),
            messaging_system: Cow::Borrowed(attributes::SYSTEM_MICRO),
        }
    }

    /// Tracing with the global tracer provider and W3C trace context.
    pub fn new() -> Self {
        Self::with_source(Source::Global)
    }

    /// Tracing with a tracer from `provider` (scope `micro-wrapper-otel`) and W3C trace
    /// context.
    pub fn from_provider<P, T>(provider: &P) -> Self
    where
        P: TracerProvider<Tracer = T>,
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        Self::with_tracer(provider.tracer_with_scope(scope()))
    }

    /// Tracing with this tracer and W3C trace context.
    pub fn with_tracer<T>(tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        Self::with_source(Source::Fixed(Arc::new(BoxedTracer::new(Box::new(tracer)))))
    }

    /// Carries the context with this propagator instead of W3C `traceparent`/`tracestate`
    /// (a `TextMapCompositePropagator` adds baggage, say).
    pub fn propagator(
        mut self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        self.propagator = Arc::new(propagator);
        self
    }

    /// The `rpc.system` of call and handler spans: `micro` by default. Attempt spans say `grpc`
    /// by themselves for nodes that registered the gRPC protocol; set `grpc` here for a server
    /// on the gRPC transport.
    pub fn rpc_system(mut self, system: impl Into<Cow<'static, str>>) -> Self {
        self.rpc_system = system.into();
        self
    }

    /// The `messaging.system` of publish and subscriber spans: `micro` by default; name the
    /// broker (`kafka`, `rabbitmq`, `nats`) when it is known.
    pub fn messaging_system(mut self, system: impl Into<Cow<'static, str>>) -> Self {
        self.messaging_system = system.into();
        self
    }

    /// Writes `cx`'s trace context into `metadata` (what the client and publish paths do).
    pub fn inject(&self, cx: &Context, metadata: &mut micro_core::Metadata) {
        self.propagator
            .inject_context(cx, &mut MetadataInjector(metadata));
    }

    /// Reads the trace context from `metadata` on top of `cx` (what the handler and subscriber
    /// paths do); `cx` unchanged when `metadata` carries none.
    pub fn extract(&self, cx: &Context, metadata: &micro_core::Metadata) -> Context {
        self.propagator
            .extract_with_context(cx, &MetadataExtractor(metadata))
    }

    /// Runs `f` with the tracer.
    fn tracer<R>(&self, f: impl FnOnce(&BoxedTracer) -> R) -> R {
        match &self.tracer {
            Source::Global => f(&global::tracer_with_scope(scope())),
            Source::Fixed(t) => f(t),
        }
    }
}

impl<S> tower_layer::Layer<S> for Tracing {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced::new(inner, self.clone())
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE_NAME)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}
