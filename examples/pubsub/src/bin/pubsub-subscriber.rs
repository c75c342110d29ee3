//! Prints the greetings published to a topic:
//! `pubsub-subscriber [--topic T] [--queue GROUP] [--count N]` plus Micro's flags; `--help` lists
//! them. With `--count` it exits after N messages; otherwise it runs until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use micro::broker::SubscribeOptions;
use micro::{Event, Json};
use pubsub::{Greeting, TOPIC};
use tokio::sync::Notify;

/// Prints the greetings published to a topic, until N of them or SIGINT/SIGTERM.
#[derive(Debug, Parser)]
#[command(name = env!("CARGO_BIN_NAME"), version, after_help = micro::cli::ENVIRONMENT)]
struct Args {
    /// The topic
    #[arg(long, default_value = TOPIC)]
    topic: String,
    /// Join this queue group (its members share the messages)
    #[arg(long, value_name = "GROUP")]
    queue: Option<String>,
    /// Exit after this many messages
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    micro: micro::cli::Flags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    pubsub::init_logging();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubsub-subscriber: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> micro::Result<()> {
    let done = Arc::new(Notify::new());
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (d, s) = (done.clone(), seen.clone());
    let count = args.count;
    let opts = SubscribeOptions {
        queue: args.queue,
        auto_ack: true,
    };
    let service = micro::Service::builder("pubsub-subscriber")
        .config(args.micro.config()?)
        .subscriber_with(&args.topic, opts, move |e: Event<Json<Greeting>>| {
            let (done, seen) = (d.clone(), s.clone());
            Box::pin(async move {
                println!("received {} {:?}", e.message.0.id, e.message.0.text);
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if count.is_some_and(|c| n >= c) {
                    done.notify_one();
                }
                Ok(())
            })
        })
        .build()?;
    let stop = async {
        tokio::select! {
            _ = done.notified() => {}
            _ = micro::shutdown_signal() => {}
        }
    };
    service.run_until(stop).await
}
