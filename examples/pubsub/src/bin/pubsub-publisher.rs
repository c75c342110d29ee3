//! Publishes greetings to a topic: `pubsub-publisher [--topic T] [--count N] [--interval 200ms]`
//! plus Micro's flags (`--broker nats --broker_address 127.0.0.1:4222`); `--help` lists them.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pubsub::{Greeting, TOPIC};

/// Publishes numbered greetings (JSON) to a topic, then exits.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version, after_help = micro::cli::ENVIRONMENT)]
struct Args {
    /// The topic
    #[arg(long, default_value = TOPIC)]
    topic: String,
    /// How many greetings
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// The pause after each one (200ms, 1s, ...)
    #[arg(long, default_value = "200ms", value_parser = duration)]
    interval: Duration,
    #[command(flatten)]
    micro: micro::cli::Flags,
}

fn duration(text: &str) -> Result<Duration, String> {
    micro::config::parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    pubsub::init_logging();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubsub-publisher: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> micro::Result<()> {
    let service = micro::Service::builder("pubsub-publisher")
        .config(args.micro.config()?)
        .build()?;
    service.start().await?;
    let client = service.client().with_content_type("application/json");
    for id in 1..=args.count {
        let event = micro::Json(Greeting {
            id,
            text: format!("hello #{id}"),
        });
        match client.publish(&args.topic, &event).await {
            Ok(()) => println!("published {id}"),
            Err(e) => eprintln!("publish {id} failed: {e}"),
        }
        tokio::time::sleep(args.interval).await;
    }
    service.stop().await
}
