//! The whole example in one process with no set-up: inventory, orders and the shop on an
//! in-memory registry, talking over the http transport and the http broker on loopback. Prints
//! the spans of three orders (one trace each, across shop -> broker -> orders -> inventory),
//! then scrapes its own `/metrics` over HTTP and prints the Micro metrics.

use std::process::ExitCode;

use clap::Parser;
use std::sync::Arc;
use std::time::Duration;

use micro::otel::Tracing;
use micro::prometheus::Metrics;
use micro::registry::{MemoryRegistry, Registry};
use micro::{Json, Service, ServiceBuilder};
use observability::{
    inventory, json_client, metrics_address, observed, orders, sample_orders, tracer_provider,
    TOPIC,
};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The whole example in one process with no set-up: three traced orders across shop, broker, orders and inventory, then the Micro metrics from its own /metrics.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version)]
struct Args {}

#[tokio::main]
async fn main() -> ExitCode {
    Args::parse();
    observability::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A service on the shared in-memory registry, with its own http broker.
fn builder(name: &str, registry: &Arc<dyn Registry>) -> micro::Result<ServiceBuilder> {
    Ok(Service::builder(name)
        .ignore_env()
        .address("127.0.0.1:0")
        .registry(registry.clone())
        .broker(micro::plugins::broker("http", None, registry)?)
        .client_options(json_client()))
}

async fn run() -> micro::Result<()> {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    // One metrics registry for the process; one tracer provider per service, so each span
    // says which service made it.
    let metrics = Metrics::new()?;
    let providers = [
        tracer_provider("inventory")?,
        tracer_provider("orders")?,
        tracer_provider("shop")?,
    ];
    let [inventory_tracing, orders_tracing, shop_tracing] =
        providers.each_ref().map(Tracing::from_provider);

    let inventory = observed(
        inventory(builder("inventory", &registry)?),
        &inventory_tracing,
        &metrics,
    )
    .build()?;
    let (orders_builder, orders_client) = orders(builder("orders", &registry)?);
    let orders = observed(orders_builder, &orders_tracing, &metrics).build()?;
    orders_client.set(orders.client());
    let shop = observed(builder("shop", &registry)?, &shop_tracing, &metrics).build()?;
    inventory.start().await?;
    orders.start().await?;
    let endpoint = metrics.serve(&metrics_address("127.0.0.1:0")).await?;

    println!("# spans, printed as they end (innermost first), one trace per order:");
    let tracer = providers[2].tracer("shop");
    for order in sample_orders() {
        let id = order.id;
        let cx = Context::current_with_span(tracer.start(format!("checkout {id}")));
        // The http broker answers once the subscriber has handled the message.
        let published = shop
            .publish(TOPIC, &Json(order))
            .with_context(cx.clone())
            .await;
        cx.span().end();
        if let Err(e) = published {
            eprintln!("shop: order {id} failed: {e}");
        }
        println!();
    }

    println!("# GET {}", endpoint.url());
    let scraped = scrape(endpoint.local_addr()).await?;
    for line in scraped.lines() {
        let histogram_detail = line.contains("_bucket{") || line.contains("_sum{");
        if line.starts_with("micro_") && !histogram_detail {
            println!("{line}");
        }
    }

    endpoint.shutdown();
    orders.stop().await?;
    inventory.stop().await?;
    for p in providers {
        let _ = p.shutdown();
    }
    Ok(())
}

/// `GET /metrics` over a plain HTTP/1.1 connection; the body.
async fn scrape(address: std::net::SocketAddr) -> micro::Result<String> {
    let fail = |e: std::io::Error| {
        micro::Error::internal(
            "demo",
            format!("cannot scrape http://{address}/metrics: {e}"),
        )
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(fail)?;
        let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.map_err(fail)?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.map_err(fail)?;
        Ok::<_, micro::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| {
            micro::Error::timeout("demo", format!("http://{address}/metrics did not answer"))
        })??;
    Ok(raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}
