//! The observability example: a shop publishes `orders.placed` events through the broker; the
//! `orders` service handles each one by calling the `inventory` service. Every service is
//! traced with OpenTelemetry and measured with Prometheus, so one order is one trace across the
//! shop, the broker, orders and inventory, and each service has a `/metrics` endpoint.
//!
//! Spans go to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, e.g. `http://127.0.0.1:4318`; otherwise each
//! span is printed on stdout as it ends, one line each.
//!
//! Binaries: `inventory-server`, `orders-server` and `shop-client` run as separate processes
//! on the default stack (mDNS registry, http transport, http broker); `observability-demo`
//! runs all three in one process on an in-memory registry, with no set-up at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use micro::otel::Tracing;
use micro::prometheus::Metrics;
use micro::{Client, Event, Handler, Json, Request, Response, ServiceBuilder};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};

/// The topic the shop publishes orders to.
pub const TOPIC: &str = "orders.placed";

/// An order, as the shop publishes it and orders forwards it to inventory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order number.
    pub id: u32,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: u32,
}

/// Inventory's answer: what is left of the item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// The item reserved.
    pub item: String,
    /// How many are left in stock.
    pub left: u32,
}

/// The orders the shop places: the last one asks for more boots than there are, so the demo
/// shows a failure in the trace and in the metrics.
pub fn sample_orders() -> Vec<Order> {
    vec![
        Order {
            id: 1,
            item: "socks".into(),
            quantity: 2,
        },
        Order {
            id: 2,
            item: "boots".into(),
            quantity: 1,
        },
        Order {
            id: 3,
            item: "boots".into(),
            quantity: 5,
        },
    ]
}

/// Logs to stderr (`RUST_LOG` filters), so stdout keeps the spans.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only when a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Whether an OTLP collector is configured through the standard variables.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

/// A tracer provider for `service`: OTLP over HTTP when a collector is configured, else a
/// printer on stdout. Shut it down before exiting to flush the last spans.
pub fn tracer_provider(service: &'static str) -> micro::Result<SdkTracerProvider> {
    let resource = Resource::builder().with_service_name(service).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| {
                micro::Error::internal(
                    "observability",
                    format!(
                        "cannot create the OTLP exporter (check OTEL_EXPORTER_OTLP_ENDPOINT): {e}"
                    ),
                )
            })?;
        Ok(builder.with_batch_exporter(exporter).build())
    } else {
        Ok(builder
            .with_simple_exporter(PrintExporter { service })
            .build())
    }
}

/// Prints each span as one line: service, trace id, span id, parent, kind, name and outcome.
#[derive(Debug)]
pub struct PrintExporter {
    service: &'static str,
}

impl PrintExporter {
    fn line(&self, span: &SpanData) -> String {
        let parent = match span.parent_span_id.to_string() {
            p if p == "0000000000000000" => "-".repeat(16),
            p => p,
        };
        let kind = match span.span_kind {
            SpanKind::Client => "client",
            SpanKind::Server => "server",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        };
        let attempt = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == micro::otel::attributes::MICRO_ATTEMPT)
            .map(|kv| format!(" (attempt {})", kv.value))
            .unwrap_or_default();
        let outcome = match &span.status {
            Status::Error { description } => format!("  ERROR {description}"),
            _ => String::new(),
        };
        format!(
            "{:>9}  trace={} span={} parent={parent}  {kind:<8} {}{attempt}{outcome}",
            self.service,
            span.span_context.trace_id(),
            span.span_context.span_id(),
            span.name,
        )
    }
}

impl SpanExporter for PrintExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        for span in &batch {
            println!("{}", self.line(span));
        }
        Ok(())
    }
}

/// Tracing and metrics on every path of `builder`: client calls and their attempts, handlers,
/// publishing and subscribers. Layers added before this call (rate limits, breakers) run
/// inside, so a call they reject is still traced and counted.
pub fn observed(builder: ServiceBuilder, tracing: &Tracing, metrics: &Metrics) -> ServiceBuilder {
    // Later layers run first: metrics inside, tracing outermost.
    builder
        .client_layer(metrics.clone())
        .client_layer(tracing.clone())
        .attempt_layer(metrics.clone())
        .attempt_layer(tracing.clone())
        .handler_layer(metrics.clone())
        .handler_layer(tracing.clone())
        .publish_layer(metrics.clone())
        .publish_layer(tracing.clone())
        .subscriber_layer(metrics.clone())
        .subscriber_layer(tracing.clone())
}

/// Clients speak JSON here, since the messages are plain serde types.
pub fn json_client() -> micro::ClientOptions {
    micro::ClientOptions {
        content_type: "application/json".into(),
        ..Default::default()
    }
}

/// The inventory service: `Inventory.Reserve` takes items out of stock, 409 when there are
/// not enough, behind a rate limit of 100 calls a second per endpoint.
pub fn inventory(builder: ServiceBuilder) -> ServiceBuilder {
    let stock = Arc::new(Mutex::new(HashMap::from([
        ("socks".to_string(), 10_u32),
        ("boots".to_string(), 3_u32),
    ])));
    let handler = Handler::new("Inventory").unary("Reserve", move |req: Request<Json<Order>>| {
        let stock = stock.clone();
        Box::pin(async move {
            let order = req.into_inner().0;
            let mut stock = stock.lock().unwrap_or_else(|p| p.into_inner());
            let have = stock.get(&order.item).copied().unwrap_or(0);
            if have < order.quantity {
                return Err(micro::Error::conflict(
                    "inventory.Inventory.Reserve",
                    format!(
                        "order {}: {} {} wanted, {have} in stock",
                        order.id, order.quantity, order.item
                    ),
                ));
            }
            stock.insert(order.item.clone(), have - order.quantity);
            Ok(Response::new(Json(Reservation {
                item: order.item,
                left: have - order.quantity,
            })))
        })
    });
    let limit = micro::ratelimit::RateLimitLayer::new(micro::ratelimit::Rate::per_second(100))
        .burst(20)
        .per_endpoint();
    builder.handler(handler).handler_layer(limit)
}

/// The orders service: handles each `orders.placed` event by reserving the items with
/// inventory, through the service's own client (with a circuit breaker per inventory node).
/// Call [`OrdersClient::set`] with the built service's client before starting it.
pub fn orders(builder: ServiceBuilder) -> (ServiceBuilder, OrdersClient) {
    let client = OrdersClient::default();
    let downstream = client.clone();
    let breaker = micro::breaker::NodeBreakerLayer::new(micro::breaker::BreakerOptions::default());
    let builder = builder
        .attempt_layer(breaker)
        .subscriber(TOPIC, move |e: Event<Json<Order>>| {
            let downstream = downstream.clone();
            Box::pin(async move {
                let order = e.message.0;
                let client = downstream.get()?;
                let rsp = client
                    .unary::<Json<Order>, Json<Reservation>>(
                        "inventory",
                        "Inventory.Reserve",
                        Request::new(Json(order.clone())),
                    )
                    .await;
                match rsp {
                    Ok(r) => {
                        let r = r.into_inner().0;
                        eprintln!(
                            "orders: order {} reserved, {} {} left",
                            order.id, r.left, r.item
                        );
                        Ok(())
                    }
                    Err(e) => {
                        eprintln!("orders: order {} failed: {e}", order.id);
                        Err(e)
                    }
                }
            })
        });
    (builder, client)
}

/// The client the orders subscriber calls inventory with, set once the service is built (its
/// client carries the service's middleware).
#[derive(Debug, Clone, Default)]
pub struct OrdersClient(Arc<OnceLock<Client>>);

impl OrdersClient {
    /// Sets the client; later calls do nothing.
    pub fn set(&self, client: Client) {
        let _ = self.0.set(client);
    }

    fn get(&self) -> micro::Result<&Client> {
        self.0
            .get()
            .ok_or_else(|| micro::Error::internal("orders", "the client is not set yet"))
    }
}

/// The address `/metrics` is served on: `METRICS_ADDRESS`, else `default`.
pub fn metrics_address(default: &str) -> String {
    std::env::var("METRICS_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| default.to_string())
}
