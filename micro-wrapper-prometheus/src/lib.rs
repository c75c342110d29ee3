//! Prometheus metrics for Micro for Rust.
//!
//! [`Metrics`] is one tower [`Layer`](tower_layer::Layer) that fits every middleware path of a
//! Micro service; the request type of the path decides what it counts. Give the same
//! `Metrics` (clones share the instruments) to every path and every service of a process, and
//! serve it on `/metrics` with [`Metrics::serve`].
//!
//! ```no_run
//! use micro_wrapper_prometheus::Metrics;
//!
//! # async fn run() -> micro::Result<()> {
//! let metrics = Metrics::new()?;
//! let service = micro::Service::builder("orders")
//!     .client_layer(metrics.clone())
//!     .attempt_layer(metrics.clone())
//!     .handler_layer(metrics.clone())
//!     .publish_layer(metrics.clone())
//!     .subscriber_layer(metrics.clone())
//!     .build()?;
//! let endpoint = metrics.serve("127.0.0.1:9100").await?; // GET http://127.0.0.1:9100/metrics
//! service.run().await?;
//! endpoint.shutdown();
//! # Ok(()) }
//! ```
//!
//! With `micro`'s `prometheus` feature this crate is `micro::prometheus`.
//!
//! # On the gateway's dashboard
//!
//! The API gateway's web dashboard shows each endpoint's calls, errors and calls per second
//! for the nodes that say where their metrics are: node metadata [`METADATA_KEY`]
//! (`metrics`) with the `/metrics` URL. Serve the metrics first, then name them:
//!
//! ```no_run
//! use micro_wrapper_prometheus::{Metrics, METADATA_KEY};
//!
//! # async fn run() -> micro::Result<()> {
//! let metrics = Metrics::new()?;
//! let endpoint = metrics.serve("127.0.0.1:0").await?;
//! let service = micro::Service::builder("orders")
//!     .handler_layer(metrics.clone())
//!     .node_metadata(METADATA_KEY, endpoint.url())
//!     .build()?;
//! service.run().await?;
//! # Ok(()) }
//! ```
//!
//! # The metrics
//!
//! Names follow Prometheus conventions (base units, `_total` counters, `_seconds`
//! histograms); the `micro` prefix is [`MetricsBuilder::namespace`].
//!
//! | metric | type | labels | path |
//! |---|---|---|---|
//! | `micro_client_requests_total` | counter | `service`, `endpoint`, `status`, `code` | `client_layer`: each call, retries included |
//! | `micro_client_request_duration_seconds` | histogram | `service`, `endpoint` | `client_layer` |
//! | `micro_client_requests_in_flight` | gauge | `service`, `endpoint` | `client_layer` |
//! | `micro_client_attempts_total` | counter | `service`, `endpoint`, `status`, `code` | `attempt_layer`: each try on one node |
//! | `micro_server_requests_total` | counter | `service`, `endpoint`, `status`, `code` | `handler_layer` |
//! | `micro_server_request_duration_seconds` | histogram | `service`, `endpoint` | `handler_layer` |
//! | `micro_server_requests_in_flight` | gauge | `service`, `endpoint` | `handler_layer` |
//! | `micro_publisher_messages_total` | counter | `topic`, `status`, `code` | `publish_layer` |
//! | `micro_subscriber_messages_total` | counter | `topic`, `status`, `code` | `subscriber_layer` |
//! | `micro_subscriber_message_duration_seconds` | histogram | `topic` | `subscriber_layer` |
//! | `micro_subscriber_messages_in_flight` | gauge | `topic` | `subscriber_layer` |
//!
//! `service` is the called service and `endpoint` its endpoint (`greeter`, `Greeter.Hello`), on
//! both sides. `status` is `success` or `failure`, as in Go Micro; `code` is the Micro error
//! code (`200` on success, `404`, `500`, ...), `unreachable` for an attempt that did not reach
//! its node, or `cancelled` when the call was dropped before it finished (its deadline passed).
//!
//! # From Go Micro's prometheus wrapper
//!
//! Go Micro's `wrapper/monitoring/prometheus` puts the client, handler and subscriber sides
//! into one family, told apart by `micro_method` (`Call`, `Publish`, the handler's method,
//! `SubscriberFunc`), with the service identity as labels:
//!
//! | Go Micro | here |
//! |---|---|
//! | `micro_request_total{micro_name, micro_version, micro_id, micro_endpoint, micro_method, micro_status}` | `micro_server_requests_total`, `micro_client_requests_total`, `micro_publisher_messages_total`, `micro_subscriber_messages_total` (`micro_status` is `status`; `micro_endpoint` is `service` + `endpoint`, or `topic`) |
//! | `micro_request_duration_seconds` (histogram, same labels less status) | `micro_server_request_duration_seconds`, `micro_client_request_duration_seconds`, `micro_subscriber_message_duration_seconds` |
//! | `micro_latency_microseconds` (summary) | the same histograms: quantiles come from `histogram_quantile()`, in seconds |
//! | `micro_name`, `micro_version`, `micro_id` labels | [`MetricsBuilder::const_label`] (`micro_name="orders"`), or the scrape target's labels |
//!
//! So Go Micro's `sum by (micro_endpoint) (rate(micro_request_total{micro_status="failure"}[5m]))`
//! becomes `sum by (service, endpoint) (rate(micro_server_requests_total{status="failure"}[5m]))`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use micro_core::{Error, Result};
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

mod endpoint;
mod services;

pub use endpoint::{EndpointOptions, MetricsServer};
pub use services::Measured;

/// The node metadata key under which a service names its `/metrics` URL
/// ([`MetricsServer::url`]), for the gateway's dashboard (and anything else that looks).
pub const METADATA_KEY: &str = "metrics";

/// Request, message and latency metrics for Micro services: a tower layer for the client,
/// attempt, handler, publish and subscriber paths. Cheap to clone; clones share the
/// instruments.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Instruments>,
}

pub(crate) struct Instruments {
    pub(crate) registry: Registry,
    pub(crate) client_requests: IntCounterVec,
    pub(crate) client_duration: HistogramVec,
    pub(crate) client_in_flight: IntGaugeVec,
    pub(crate) client_attempts: IntCounterVec,
    pub(crate) server_requests: IntCounterVec,
    pub(crate) server_duration: HistogramVec,
    pub(crate) server_in_flight: IntGaugeVec,
    pub(crate) published: IntCounterVec,
    pub(crate) delivered: IntCounterVec,
    pub(crate) delivery_duration: HistogramVec,
    pub(crate) deliveries_in_flight: IntGaugeVec,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Builds [`Metrics`]: the name prefix, constant labels, histogram buckets and the registry.
#[derive(Debug, Clone)]
pub struct MetricsBuilder {
    namespace: String,
    const_labels: HashMap<String, String>,
    buckets: Vec<f64>,
    registry: Option<Registry>,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        MetricsBuilder {
            namespace: "micro".into(),
            const_labels: HashMap::new(),
            buckets: prometheus::DEFAULT_BUCKETS.to_vec(),
            registry: None,
        }
    }
}

impl MetricsBuilder {
    /// The prefix of every metric name: `micro` by default (`micro_server_requests_total`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// A label with the same value on every metric (`micro_name="orders"`, as Go Micro's
    /// wrapper labels its metrics).
    pub fn const_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.const_labels.insert(name.into(), value.into());
        self
    }

    /// The buckets of the latency histograms, in seconds (Prometheus's defaults, 5 ms to
    /// 10 s, unless set).
    pub fn buckets(mut self, buckets: Vec<f64>) -> Self {
        self.buckets = buckets;
        self
    }

    /// Registers into this registry (shared with the application's own metrics) instead of
    /// a new one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Creates and registers the instruments. Fails on an invalid namespace or label name, or
    /// when the registry already holds metrics of the same names (build one `Metrics` per
    /// registry and clone it).
    pub fn build(self) -> Result<Metrics> {
        let registry = self.registry.clone().unwrap_or_default();
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .namespace(self.namespace.clone())
                .const_labels(self.const_labels.clone())
        };
        let histogram = |name: &str, help: &str| HistogramOpts {
            common_opts: opts(name, help),
            buckets: self.buckets.clone(),
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(opts(name, help), labels).map_err(invalid)?;
            registry.register(Box::new(c.clone())).map_err(invalid)?;
            Ok::<_, Error>(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(opts(name, help), labels).map_err(invalid)?;
            registry.register(Box::new(g.clone())).map_err(invalid)?;
            Ok::<_, Error>(g)
        };
        let timer = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(histogram(name, help), labels).map_err(invalid)?;
            registry.register(Box::new(h.clone())).map_err(invalid)?;
            Ok::<_, Error>(h)
        };
        let rpc = ["service", "endpoint"];
        let rpc_outcome = ["service", "endpoint", "status", "code"];
        let topic = ["topic"];
        let topic_outcome = ["topic", "status", "code"];
        let instruments = Instruments {
            client_requests: counter(
                "client_requests_total",
                "Calls made, retries included, by called service, endpoint and outcome.",
                &rpc_outcome,
            )?,
            client_duration: timer(
                "client_request_duration_seconds",
                "How long calls took, retries included, in seconds.",
                &rpc,
            )?,
            client_in_flight: gauge(
                "client_requests_in_flight",
                "Calls made and not yet answered.",
                &rpc,
            )?,
            client_attempts: counter(
                "client_attempts_total",
                "Tries of calls on one node each, by outcome (code unreachable: the node was not reached).",
                &rpc_outcome,
            )?,
            server_requests: counter(
                "server_requests_total",
                "Calls handled, by service, endpoint and outcome.",
                &rpc_outcome,
            )?,
            server_duration: timer(
                "server_request_duration_seconds",
                "How long handlers took, in seconds.",
                &rpc,
            )?,
            server_in_flight: gauge(
                "server_requests_in_flight",
                "Calls being handled.",
                &rpc,
            )?,
            published: counter(
                "publisher_messages_total",
                "Messages published, by topic and outcome.",
                &topic_outcome,
            )?,
            delivered: counter(
                "subscriber_messages_total",
                "Messages handled by subscribers, by topic and outcome.",
                &topic_outcome,
            )?,
            delivery_duration: timer(
                "subscriber_message_duration_seconds",
                "How long subscribers took per message, in seconds.",
                &topic,
            )?,
            deliveries_in_flight: gauge(
                "subscriber_messages_in_flight",
                "Messages being handled by subscribers.",
                &topic,
            )?,
            registry,
        };
        Ok(Metrics {
            inner: Arc::new(instruments),
        })
    }
}

fn invalid(e: prometheus::Error) -> Error {
    Error::bad_request(
        "micro.prometheus",
        format!("cannot create the Micro metrics: {e}"),
    )
}

impl Metrics {
    /// Metrics named `micro_*` in a registry of their own.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// Starts building metrics with another prefix, constant labels, buckets or registry.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder::default()
    }

    /// The registry the metrics live in; register the application's own metrics here to
    /// serve them on the same endpoint.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Everything in the registry in Prometheus's text exposition format (what `/metrics`
    /// serves).
    pub fn render(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut out)
            .map_err(|e| {
                Error::internal(
                    "micro.prometheus",
                    format!("cannot encode the metrics: {e}"),
                )
            })?;
        String::from_utf8(out).map_err(|e| {
            Error::internal(
                "micro.prometheus",
                format!("the metrics are not UTF-8: {e}"),
            )
        })
    }

    /// Serves `GET /metrics` over HTTP on `address` (`127.0.0.1:9100`; port 0 picks a free
    /// one) until the returned handle is shut down or dropped, within the default
    /// [`EndpointOptions`].
    pub async fn serve(&self, address: &str) -> Result<MetricsServer> {
        self.serve_with(address, EndpointOptions::default()).await
    }

    /// [`Metrics::serve`] within other bounds.
    pub async fn serve_with(&self, address: &str, opts: EndpointOptions) -> Result<MetricsServer> {
        MetricsServer::bind(self.clone(), address, opts).await
    }

    pub(crate) fn instruments(&self) -> &Instruments {
        &self.inner
    }
}

impl<S> tower_layer::Layer<S> for Metrics {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured::new(inner, self.clone())
    }
}
