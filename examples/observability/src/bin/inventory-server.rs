//! The inventory service, traced and measured: serves `Inventory.Reserve` until SIGINT or
//! SIGTERM, with `/metrics` on 127.0.0.1:9101 (`METRICS_ADDRESS`).

use std::process::ExitCode;

use clap::Parser;

use micro::otel::Tracing;
use micro::prometheus::Metrics;
use observability::{inventory, json_client, metrics_address, observed, tracer_provider};

/// The inventory service, traced and measured: serves Inventory.Reserve until SIGINT or SIGTERM, with /metrics on 127.0.0.1:9101 (METRICS_ADDRESS).
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version, after_help = micro::cli::ENVIRONMENT)]
struct Args {
    #[command(flatten)]
    micro: micro::cli::Flags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    observability::init_logging();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inventory: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> micro::Result<()> {
    let provider = tracer_provider("inventory")?;
    let tracing = Tracing::from_provider(&provider);
    let metrics = Metrics::new()?;
    let builder = micro::Service::builder("inventory")
        .config(args.micro.config()?)
        .client_options(json_client());
    let service = observed(inventory(builder), &tracing, &metrics).build()?;
    let endpoint = metrics.serve(&metrics_address("127.0.0.1:9101")).await?;
    eprintln!("inventory: metrics at {}", endpoint.url());
    let result = service.run().await;
    endpoint.shutdown();
    // Flushes the spans still queued for the collector.
    let _ = provider.shutdown();
    result
}
