//! Prints the greetings published to a topic:
//! `pubsub-subscriber [--topic T] [--queue GROUP] [--count N]` plus Micro's flags. With `--count`
//! it exits after N messages; otherwise it runs until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use micro::broker::SubscribeOptions;
use micro::{Event, Json};
use pubsub::{flags, Greeting, TOPIC};
use tokio::sync::Notify;

#[tokio::main]
async fn main() -> ExitCode {
    pubsub::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubsub-subscriber: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let (_, rest) =
        micro::config::Config::from_args(std::env::args().skip(1)).map_err(|e| e.to_string())?;
    let (mut topic, mut queue, mut count) = (TOPIC.to_string(), None, None::<u64>);
    for (name, value) in flags(rest, &["topic", "queue", "count"])? {
        match name.as_str() {
            "topic" => topic = value,
            "queue" => queue = Some(value),
            _ => {
                count = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--count {value:?} is not a number"))?,
                )
            }
        }
    }
    let done = Arc::new(Notify::new());
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (d, s) = (done.clone(), seen.clone());
    let opts = SubscribeOptions {
        queue,
        auto_ack: true,
    };
    let service = micro::Service::builder("pubsub-subscriber")
        .subscriber_with(&topic, opts, move |e: Event<Json<Greeting>>| {
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
        .build()
        .map_err(|e| e.to_string())?;
    let stop = async {
        tokio::select! {
            _ = done.notified() => {}
            _ = micro::shutdown_signal() => {}
        }
    };
    service.run_until(stop).await.map_err(|e| e.to_string())
}
