//! The orders service, traced and measured: handles `orders.placed` events by calling
//! inventory, until SIGINT or SIGTERM, with `/metrics` on 127.0.0.1:9102 (`METRICS_ADDRESS`).

use std::process::ExitCode;

use clap::Parser;

use micro::otel::Tracing;
use micro::prometheus::Metrics;
use observability::{json_client, metrics_address, observed, orders, tracer_provider};

/// The orders service, traced and measured: handles orders.placed events by calling inventory, until SIGINT or SIGTERM, with /metrics on 127.0.0.1:9102 (METRICS_ADDRESS).
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
            eprintln!("orders: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> micro::Result<()> {
    let provider = tracer_provider("orders")?;
    let tracing = Tracing::from_provider(&provider);
    let metrics = Metrics::new()?;
    let (builder, client) = orders(
        micro::Service::builder("orders")
            .config(args.micro.config()?)
            .client_options(json_client()),
    );
    let service = observed(builder, &tracing, &metrics).build()?;
    client.set(service.client());
    let endpoint = metrics.serve(&metrics_address("127.0.0.1:9102")).await?;
    eprintln!("orders: metrics at {}", endpoint.url());
    let result = service.run().await;
    endpoint.shutdown();
    let _ = provider.shutdown();
    result
}
