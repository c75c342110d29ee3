//! The inventory service, traced and measured: serves `Inventory.Reserve` until SIGINT or
//! SIGTERM, with `/metrics` on 127.0.0.1:9101 (`METRICS_ADDRESS`).

use std::process::ExitCode;

use micro::otel::Tracing;
use micro::prometheus::Metrics;
use observability::{inventory, json_client, metrics_address, observed, tracer_provider};

#[tokio::main]
async fn main() -> ExitCode {
    observability::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inventory: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> micro::Result<()> {
    let provider = tracer_provider("inventory")?;
    let tracing = Tracing::from_provider(&provider);
    let metrics = Metrics::new()?;
    let builder = micro::Service::builder("inventory").client_options(json_client());
    let service = observed(inventory(builder), &tracing, &metrics).build()?;
    let endpoint = metrics.serve(&metrics_address("127.0.0.1:9101")).await?;
    eprintln!("inventory: metrics at {}", endpoint.url());
    let result = service.run().await;
    endpoint.shutdown();
    // Flushes the spans still queued for the collector.
    let _ = provider.shutdown();
    result
}
