//! The shop: places the sample orders, each in a `checkout` span of its own, by publishing them
//! to `orders.placed`; then exits.

use std::process::ExitCode;

use micro::otel::Tracing;
use micro::prometheus::Metrics;
use micro::Json;
use observability::{json_client, observed, sample_orders, tracer_provider, TOPIC};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::Context;

#[tokio::main]
async fn main() -> ExitCode {
    observability::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shop: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> micro::Result<()> {
    let provider = tracer_provider("shop")?;
    let tracing = Tracing::from_provider(&provider);
    let metrics = Metrics::new()?;
    let builder = micro::Service::builder("shop").client_options(json_client());
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
