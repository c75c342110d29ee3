//! `micro publish` and `micro subscribe`, on whichever broker is configured.

use std::sync::Arc;

use micro::core::broker::{Delivery, SubscribeOptions};
use micro::{Error, Json, Result, Service};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::output::{self, Output};
use crate::{bounded, read_stdin};

/// The largest message read from standard input.
const STDIN_LIMIT: usize = 16 * 1024 * 1024;

/// `micro publish TOPIC [JSON]`.
pub(crate) async fn publish(service: &Service, topic: &str, message: Option<String>) -> Result<()> {
    let text = match message {
        Some(text) => text.into_bytes(),
        None => read_stdin(STDIN_LIMIT).await?,
    };
    let value: Value = serde_json::from_slice(&text).map_err(|e| {
        Error::bad_request("micro.cli", format!("the message is not valid JSON: {e}"))
    })?;
    let broker = service.broker();
    bounded("connecting to the broker", broker.connect()).await?;
    let client = service.client().with_content_type("application/json");
    let published = bounded("publishing", client.publish(topic, &Json(value))).await;
    let _ = broker.disconnect().await;
    published
}

/// `micro subscribe TOPIC`: prints each message until `count` of them or Ctrl-C, then
/// unsubscribes (the http broker's subscriber node leaves the registry).
pub(crate) async fn subscribe(
    service: &Service,
    topic: &str,
    queue: Option<String>,
    count: Option<u64>,
    out: Output,
) -> Result<()> {
    let broker = service.broker();
    bounded("connecting to the broker", broker.connect()).await?;
    // The handler hands each delivery over and waits until it is printed: the broker acks a
    // message only once it is out (a message not printed when the command stops is nacked).
    let (deliveries, mut received) = mpsc::channel::<(Delivery, oneshot::Sender<()>)>(1);
    let handler: micro::core::broker::Handler = Arc::new(move |delivery: Delivery| {
        let deliveries = deliveries.clone();
        Box::pin(async move {
            let stopping = || Error::new("micro.cli", 503, "the subscriber is stopping");
            let (printed, done) = oneshot::channel();
            deliveries
                .send((delivery, printed))
                .await
                .map_err(|_| stopping())?;
            done.await.map_err(|_| stopping())
        })
    });
    let options = SubscribeOptions {
        queue,
        ..SubscribeOptions::default()
    };
    let subscription = bounded("subscribing", broker.subscribe(topic, handler, options)).await?;
    eprintln!(
        "subscribed to {topic} on the {} broker (Ctrl-C to stop)",
        broker.name()
    );
    let mut seen = 0u64;
    while count.is_none_or(|n| seen < n) {
        let delivery = tokio::select! {
            delivery = received.recv() => delivery,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some((delivery, printed)) = delivery else {
            break;
        };
        if !print_delivery(&delivery, out) {
            break;
        }
        let _ = printed.send(());
        seen += 1;
    }
    // Deliveries still waiting are refused (nacked), not acked unprinted.
    received.close();
    let unsubscribed = bounded("unsubscribing", subscription.unsubscribe()).await;
    let _ = broker.disconnect().await;
    unsubscribed
}

/// Prints a delivery; `false` once standard output is closed.
fn print_delivery(delivery: &Delivery, out: Output) -> bool {
    let body = &delivery.message.body;
    let parsed = serde_json::from_slice::<Value>(body).ok();
    match out {
        Output::Table => match parsed {
            Some(value) => output::line(&value.to_string()),
            None => output::line(&String::from_utf8_lossy(body)),
        },
        Output::Json => {
            let header: serde_json::Map<String, Value> = delivery
                .message
                .header
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            let body =
                parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into()));
            let line = serde_json::json!({"topic": delivery.topic, "header": header, "body": body});
            output::line(&line.to_string())
        }
    }
}
