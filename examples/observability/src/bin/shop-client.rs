//! The shop: places the sample orders, each in a `checkout` span of its own, by publishing them
//! to `orders.placed`; then exits.

use std::process::ExitCode;

use clap::Parser;

use micro::otel::Tracing;
use micro::prometheus::Metrics;
use micro::Json;
use observability::{json_client, observed, sample_orders, tracer_provider, TOPIC};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::Context;

/// The shop: places the sample orders by publishing them to orders.placed, each in a checkout span of its own; then exits.
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
            eprintln!("shop: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> micro::Result<()> {
    let provider = tracer_provider("shop")?;
    let tracing = Tracing::from_provider(&provider);
    let metrics = Metrics::new()?;
    let builder = micro::Service::builder("shop")
        .config(args.micro.config()?)
        .client_options(json_client());
    let shop = observed(builder, &tracing, &metrics).build()?;
    let tracer = provider.tracer("shop");
    for order in sample_orders() {
        let id = order.id;
        let cx = Context::current_with_span(tracer.start(format!("checkout {id}")));
        let published = shop
            .publish(TOPIC, &Json(order))
            .with_context(cx.clone())
            .await;
        cx.span().end();
        match published {
            Ok(()) => eprintln!("shop: order {id} placed"),
            Err(e) => eprintln!("shop: order {id} failed: {e}"),
        }
    }
    let _ = provider.shutdown();
    Ok(())
}
