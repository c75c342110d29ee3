//! `GET /event/{topic}`: a broker subscription as Server-Sent Events, for the dashboard's
//! events page and anything else that reads SSE (`curl -N`).
//!
//! Each subscriber gets its own broker subscription, without a queue group, so it sees
//! every message and takes none from the services' groups. Messages wait for the client in a
//! small queue; a client too slow to keep up loses messages (counted in a `dropped` event)
//! rather than making the broker, or the gateway's memory, wait for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use micro::core::broker::{Delivery, Handler, SubscribeOptions, Subscription};
use micro::Error;
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::{bounded, failure, Caller, Shared, ID};

/// Event subscriptions open at once; more are answered `503`.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// Messages waiting for a slow client before newer ones are dropped.
const QUEUE: usize = 64;

/// One message on its way to the client, already reduced to what is sent.
enum Message {
    /// The body's JSON, and the message id when it has one.
    Json(Value, Option<String>),
    /// A body that is not JSON: its content type and length.
    Other(String, usize),
    /// A body larger than the gateway's limit: its length.
    Large(usize),
}

/// `GET /event/{topic}`: subscribes, then sends each message as an event until the client
/// goes away or the gateway shuts down.
pub(crate) async fn subscribe(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    caller: Caller,
) -> Response {
    if let Err(e) = shared.admit(&caller, &format!("Event.{topic}")).await {
        return failure(e);
    }
    if topic.trim().is_empty() {
        return failure(Error::bad_request(ID, "name the topic: GET /event/{topic}"));
    }
    let Ok(permit) = shared.subscriptions.clone().try_acquire_owned() else {
        return failure(Error::new(
            ID,
            503,
            format!("{MAX_SUBSCRIPTIONS} event subscriptions are open: try again later"),
        ));
    };
    let (queue, messages) = mpsc::channel::<Message>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let handler = deliver(queue, dropped.clone(), shared.opts.max_body_bytes);
    let broker = shared.service.broker().clone();
    let options = SubscribeOptions::default();
    let subscribing = broker.subscribe(&topic, handler, options);
    let subscription = match bounded(&shared.opts, "subscribing", subscribing).await {
        Ok(subscription) => subscription,
        Err(e) => return failure(e),
    };
    let guard = Subscribed {
        subscription: Some(subscription),
        _permit: permit,
    };
    let feed = Feed {
        _guard: guard,
        messages,
        dropped,
        closing: shared.closing.clone(),
    };
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let message = tokio::select! {
            message = feed.messages.recv() => message?,
            () = feed.closing.cancelled() => return None,
        };
        let mut events = Vec::with_capacity(2);
        let lost = feed.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            events.push(Event::default().event("dropped").data(lost.to_string()));
        }
        events.push(event_of(message));
        Some((futures_util::stream::iter(events), feed))
    })
    .flatten();
    Sse::new(events.map(Ok::<_, std::convert::Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The broker handler: each delivery reduced to what the client is sent, queued without
/// waiting (a full queue drops it and counts it).
fn deliver(queue: mpsc::Sender<Message>, dropped: Arc<AtomicU64>, limit: usize) -> Handler {
    Arc::new(move |delivery: Delivery| {
        let message = reduce(&delivery, limit);
        if queue.try_send(message).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        Box::pin(async { Ok(()) })
    })
}

fn reduce(delivery: &Delivery, limit: usize) -> Message {
    let body = &delivery.message.body;
    if body.len() > limit {
        return Message::Large(body.len());
    }
    let id = delivery
        .message
        .header
        .get("Micro-Id")
        // An event id is one line without NUL; anything else is left out.
        .filter(|id| !id.contains(['\r', '\n', '\0']) && id.len() <= 256)
        .map(str::to_string);
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => Message::Json(value, id),
        Err(_) => {
            let content_type = delivery
                .message
                .header
                .get("Content-Type")
                .unwrap_or("unknown")
                .chars()
                .take(128)
                .collect();
            Message::Other(content_type, body.len())
        }
    }
}

fn event_of(message: Message) -> Event {
    match message {
        Message::Json(value, id) => {
            let event = Event::default().data(value.to_string());
            match id {
                Some(id) => event.id(id),
                None => event,
            }
        }
        Message::Other(content_type, length) => Event::default()
            .event("other")
            .data(json!({"content_type": content_type, "length": length}).to_string()),
        Message::Large(length) => Event::default()
            .event("large")
            .data(json!({"length": length}).to_string()),
    }
}

/// What the event stream owns: dropped with it when the client goes away.
struct Feed {
    _guard: Subscribed,
    messages: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    closing: tokio_util::sync::CancellationToken,
}

/// A broker subscription and its place among [`MAX_SUBSCRIPTIONS`], both given back when
/// dropped: the unsubscription runs on its own, as a drop cannot wait.
struct Subscribed {
    subscription: Option<Box<dyn Subscription>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        let Some(subscription) = self.subscription.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = subscription.unsubscribe().await {
                tracing::debug!(topic = subscription.topic(), error = %e, "unsubscribing failed");
            }
        });
    }
}
