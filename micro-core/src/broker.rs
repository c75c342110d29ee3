//! Asynchronous publish/subscribe: the [`Broker`] trait.
//!
//! A message published to a topic reaches every subscriber of that topic, except that
//! subscribers sharing a queue group share the messages: each reaches one member of the group.

pub mod dead_letter;
pub mod envelope;
pub mod support;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::{BoxFuture, Metadata, Result};

/// A broker message: headers and a body. `Micro-Topic`, `Micro-Id` and `Content-Type` are set
/// by the publisher API in `micro`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The headers.
    pub header: Metadata,
    /// The encoded payload.
    pub body: Bytes,
}

/// A message on its way to the broker through the publisher's middleware (tower layers on the
/// publish path see this).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publication {
    /// The topic to publish to.
    pub topic: String,
    /// The message, headers included; a layer may add headers (trace context, say).
    pub message: Message,
}

/// Acknowledges one delivery to the backend. Settling a delivery twice is harmless: the first
/// ack or nack wins and later ones do nothing.
pub trait Acknowledger: Send + Sync + fmt::Debug {
    /// The message was handled: the backend may forget it.
    fn ack(&self) -> BoxFuture<'_, Result<()>>;
    /// The message was not handled: redeliver it if `requeue` and the backend can.
    fn nack(&self, requeue: bool) -> BoxFuture<'_, Result<()>>;
}

/// One message delivered to a subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The topic it was published to.
    pub topic: String,
    /// The message.
    pub message: Message,
    acker: Option<Arc<dyn Acknowledger>>,
}

impl Delivery {
    /// A delivery whose acknowledgements go to `acker` (none for backends without acks).
    pub fn new(
        topic: impl Into<String>,
        message: Message,
        acker: Option<Arc<dyn Acknowledger>>,
    ) -> Self {
        Delivery {
            topic: topic.into(),
            message,
            acker,
        }
    }

    /// Tells the backend the message was handled. A no-op on backends without acks.
    pub async fn ack(&self) -> Result<()> {
        match &self.acker {
            Some(a) => a.ack().await,
            None => Ok(()),
        }
    }

    /// Tells the backend the message was not handled; it is redelivered if `requeue` and the
    /// backend supports that.
    pub async fn nack(&self, requeue: bool) -> Result<()> {
        match &self.acker {
            Some(a) => a.nack(requeue).await,
            None => Ok(()),
        }
    }
}

/// What a subscriber runs for each delivery. With auto-ack, `Ok` acks and `Err` nacks.
pub type Handler = Arc<dyn Fn(Delivery) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// Options for [`Broker::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// The queue group: subscribers in one group share the messages.
    pub queue: Option<String>,
    /// Ack after the handler returns `Ok`, nack after `Err`. When false the handler acks.
    pub auto_ack: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            queue: None,
            auto_ack: true,
        }
    }
}

/// A live subscription; dropping it does not end it, [`Subscription::unsubscribe`] does.
#[async_trait::async_trait]
pub trait Subscription: Send + Sync + fmt::Debug {
    /// The topic subscribed to.
    fn topic(&self) -> &str;
    /// Stops delivery to this subscriber.
    async fn unsubscribe(&self) -> Result<()>;
}

/// A broker plugin: `http` (the default), `memory`, `kafka`, `rabbitmq`, `nats`, ...
#[async_trait::async_trait]
pub trait Broker: Send + Sync + fmt::Debug {
    /// The plugin's name, as written in `MICRO_BROKER`.
    fn name(&self) -> &str;
    /// Where the broker is, for logs and node metadata.
    fn address(&self) -> String;
    /// Connects to the backend. Calling it twice is harmless.
    async fn connect(&self) -> Result<()>;
    /// Disconnects; subscriptions end.
    async fn disconnect(&self) -> Result<()>;
    /// Publishes a message to a topic. No subscribers is not an error.
    async fn publish(&self, topic: &str, msg: Message) -> Result<()>;
    /// Subscribes `handler` to `topic`.
    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>>;
}
