//! Typed events over any broker: publishing with Go Micro's headers, and subscribers that
//! decode by `Content-Type`, with a tower stack around each delivery.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use micro_core::broker::{Delivery, Message as BrokerMessage, SubscribeOptions};
use micro_core::registry::Endpoint;
use micro_core::{Error, Message, Metadata, Result};
use tower::util::BoxCloneSyncService;
use tower::Service;

use crate::client::Client;
use crate::codec::{Codecs, Decodable};
use crate::headers;
use crate::BoxFuture;

/// The subscriber path as a tower service; layers wrap it.
pub type SubscriberService = BoxCloneSyncService<Delivery, (), Error>;

/// A decoded event, as a subscriber function receives it.
#[derive(Debug)]
pub struct Event<T> {
    /// The topic.
    pub topic: String,
    /// The decoded message.
    pub message: T,
    /// The headers (`Micro-Id`, `Micro-Topic`, `Content-Type`, the publisher's metadata).
    pub header: Metadata,
    delivery: Delivery,
}

impl<T> Event<T> {
    /// Acknowledges the message (needed only when auto-ack is off).
    pub async fn ack(&self) -> Result<()> {
        self.delivery.ack().await
    }

    /// Rejects the message, asking for redelivery if `requeue` and the broker can.
    pub async fn nack(&self, requeue: bool) -> Result<()> {
        self.delivery.nack(requeue).await
    }
}

impl Client {
    /// Publishes `msg` to `topic`, encoded with this client's codec (or JSON, when that codec
    /// cannot carry the message: a [`Json`](crate::Json) value on the default protobuf codec)
    /// and carrying `Content-Type`, `Micro-Topic` and a fresh `Micro-Id`.
    pub async fn publish<T: Message>(&self, topic: &str, msg: &T) -> Result<()> {
        self.publish_with(topic, msg, Metadata::new()).await
    }

    /// Publishes with extra headers (metadata) on the message.
    pub async fn publish_with<T: Message>(
        &self,
        topic: &str,
        msg: &T,
        metadata: Metadata,
    ) -> Result<()> {
        let (codec, body) = self.encode(msg)?;
        let mut header = metadata;
        header.insert_static(headers::CONTENT_TYPE, codec.content_type());
        header.insert_static(headers::TOPIC, topic);
        header.insert_static(headers::ID, uuid::Uuid::new_v4().to_string());
        let message = BrokerMessage { header, body };
        self.publish_raw(topic, message).await
    }
}

/// A subscriber waiting to be attached to a broker when its service starts.
#[derive(Clone)]
pub struct Subscriber {
    pub(crate) topic: String,
    pub(crate) options: SubscribeOptions,
    pub(crate) endpoint: Endpoint,
    pub(crate) service: SubscriberService,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .field("options", &self.options)
            .finish()
    }
}

/// What happens to a message that cannot be decoded: it is logged and reported to the error
/// hook, then nacked without requeue (dropped, or dead-lettered where the broker does that).
/// It never stops the subscriber.
pub type ErrorHook = Arc<dyn Fn(&Delivery, &Error) + Send + Sync>;

impl Subscriber {
    /// A subscriber of `topic` that decodes messages as `T` and runs `f`.
    pub fn new<T, F>(
        topic: &str,
        options: SubscribeOptions,
        codecs: Codecs,
        on_error: Option<ErrorHook>,
        f: F,
    ) -> Self
    where
        T: Decodable,
        F: Fn(Event<T>) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    {
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("topic".to_string(), topic.to_string());
        metadata.insert("subscriber".to_string(), "true".to_string());
        if let Some(q) = &options.queue {
            metadata.insert("queue".to_string(), q.clone());
        }
        let endpoint = Endpoint {
            name: topic.to_string(),
            request: Some(T::describe()),
            response: None,
            metadata,
        };
        let decode = Decode {
            f: Arc::new(f),
            codecs,
            on_error,
            _t: std::marker::PhantomData,
        };
        Subscriber {
            topic: topic.to_string(),
            options,
            endpoint,
            service: SubscriberService::new(decode),
        }
    }
}

struct Decode<T, F> {
    f: Arc<F>,
    codecs: Codecs,
    on_error: Option<ErrorHook>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> Clone for Decode<T, F> {
    fn clone(&self) -> Self {
        Decode {
            f: self.f.clone(),
            codecs: self.codecs.clone(),
            on_error: self.on_error.clone(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<T, F> Service<Delivery> for Decode<T, F>
where
    T: Decodable,
    F: Fn(Event<T>) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<()>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let header = &delivery.message.header;
            let decoded = this
                .codecs
                .get(headers::get(header, headers::CONTENT_TYPE).unwrap_or_default())
                .and_then(|codec| T::decode_with(&*codec, &delivery.message.body));
            let message = match decoded {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(topic = %delivery.topic, error = %e, "dropping a message that cannot be decoded");
                    if let Some(hook) = &this.on_error {
                        hook(&delivery, &e);
                    }
                    // Requeueing would only bring it back undecodable.
                    delivery.nack(false).await?;
                    return Ok(());
                }
            };
            let event = Event {
                topic: delivery.topic.clone(),
                message,
                header: delivery.message.header.clone(),
                delivery,
            };
            (this.f)(event).await
        })
    }
}
