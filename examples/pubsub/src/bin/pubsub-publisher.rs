//! Publishes greetings to a topic: `pubsub-publisher [--topic T] [--count N] [--interval 200ms]`
//! plus Micro's flags (`--broker nats --broker_address 127.0.0.1:4222`).

use std::process::ExitCode;
use std::time::Duration;

use pubsub::{flags, Greeting, TOPIC};

#[tokio::main]
async fn main() -> ExitCode {
    pubsub::init_logging();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubsub-publisher: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let (_, rest) =
        micro::config::Config::from_args(std::env::args().skip(1)).map_err(|e| e.to_string())?;
    let (mut topic, mut count, mut interval) =
        (TOPIC.to_string(), 10u64, Duration::from_millis(200));
    for (name, value) in flags(rest, &["topic", "count", "interval"])? {
        match name.as_str() {
            "topic" => topic = value,
            "count" => {
                count = value
                    .parse()
                    .map_err(|_| format!("--count {value:?} is not a number"))?
            }
            _ => {
                interval = micro::config::parse_duration(&value)
                    .ok_or_else(|| format!("--interval {value:?} is not a duration"))?
            }
        }
    }
    let service = micro::Service::builder("pubsub-publisher")
        .build()
        .map_err(|e| e.to_string())?;
    service.start().await.map_err(|e| e.to_string())?;
    let client = service.client().with_content_type("application/json");
    for id in 1..=count {
        let event = micro::Json(Greeting {
            id,
            text: format!("hello #{id}"),
        });
        match client.publish(&topic, &event).await {
            Ok(()) => println!("published {id}"),
            Err(e) => eprintln!("publish {id} failed: {e}"),
        }
        tokio::time::sleep(interval).await;
    }
    service.stop().await.map_err(|e| e.to_string())
}
