//! An in-memory broker, for tests and single-process use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use micro_core::broker::{Delivery, Handler, Message, SubscribeOptions, Subscription};
use micro_core::{Broker, Error, Result};
use rand::RngExt;
use tokio::sync::mpsc;

/// How many messages may wait for one subscriber before publishers wait too.
const QUEUE_DEPTH: usize = 1024;

/// Delivers messages within this process. Each subscriber has its own ordered queue; a handler
/// error is logged, and the message is not redelivered (there is no backend to keep it).
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Mutex<Topics>>,
}

#[derive(Debug, Default)]
struct Topics {
    next_id: u64,
    // topic -> subscribers
    subs: HashMap<String, Vec<Sub>>,
}

#[derive(Debug, Clone)]
struct Sub {
    id: u64,
    queue: Option<String>,
    tx: mpsc::Sender<Delivery>,
}

impl MemoryBroker {
    /// A broker with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    fn topics(&self) -> MutexGuard<'_, Topics> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    fn name(&self) -> &str {
        "memory"
    }

    fn address(&self) -> String {
        "memory".into()
    }

    async fn connect(&self) -> Result<()> {
        Ok(())
    }

    /// The in-memory broker may be shared by every service of the process, so disconnecting
    /// one of them leaves the others' subscriptions alone; unsubscribing ends a subscription.
    async fn disconnect(&self) -> Result<()> {
        Ok(())
    }

    async fn publish(&self, topic: &str, msg: Message) -> Result<()> {
        // Broadcast subscribers each get the message; each queue group gets it once.
        let targets: Vec<mpsc::Sender<Delivery>> = {
            let topics = self.topics();
            let Some(subs) = topics.subs.get(topic) else {
                return Ok(());
            };
            let mut groups: HashMap<&str, Vec<&Sub>> = HashMap::new();
            let mut out = Vec::new();
            for s in subs {
                match &s.queue {
                    None => out.push(s.tx.clone()),
                    Some(q) => groups.entry(q.as_str()).or_default().push(s),
                }
            }
            let mut rng = rand::rng();
            for members in groups.values() {
                out.push(members[rng.random_range(0..members.len())].tx.clone());
            }
            out
        };
        for tx in targets {
            // A subscriber that went away in the meantime is not an error for the publisher.
            let _ = tx.send(Delivery::new(topic, msg.clone(), None)).await;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        handler: Handler,
        opts: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        if topic.is_empty() {
            return Err(Error::bad_request(
                "micro.broker.memory",
                "cannot subscribe to an empty topic",
            ));
        }
        let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE_DEPTH);
        let id = {
            let mut topics = self.topics();
            topics.next_id += 1;
            let id = topics.next_id;
            topics.subs.entry(topic.to_string()).or_default().push(Sub {
                id,
                queue: opts.queue.clone(),
                tx,
            });
            id
        };
        let name = topic.to_string();
        tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                if let Err(e) = handler(delivery).await {
                    tracing::warn!(topic = %name, error = %e, "subscriber failed; the in-memory broker does not redeliver");
                }
            }
        });
        Ok(Box::new(MemorySubscription {
            broker: self.clone(),
            topic: topic.to_string(),
            id,
        }))
    }
}

#[derive(Debug)]
struct MemorySubscription {
    broker: MemoryBroker,
    topic: String,
    id: u64,
}

#[async_trait::async_trait]
impl Subscription for MemorySubscription {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn unsubscribe(&self) -> Result<()> {
        let mut topics = self.broker.topics();
        if let Some(subs) = topics.subs.get_mut(&self.topic) {
            subs.retain(|s| s.id != self.id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn collector() -> (Handler, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler: Handler = Arc::new(move |d| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(d);
                Ok(())
            })
        });
        (handler, rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("delivered in time")
            .expect("open")
    }

    #[tokio::test]
    async fn broadcast_queue_groups_and_unsubscribe() {
        let b = MemoryBroker::new();
        let (h1, mut r1) = collector();
        let (h2, mut r2) = collector();
        let (q, mut rq) = collector();
        let s1 = b
            .subscribe("t", h1, SubscribeOptions::default())
            .await
            .expect("sub");
        b.subscribe("t", h2, SubscribeOptions::default())
            .await
            .expect("sub");
        let queued = SubscribeOptions {
            queue: Some("workers".into()),
            auto_ack: true,
        };
        b.subscribe("t", q.clone(), queued.clone())
            .await
            .expect("sub");
        b.subscribe("t", q, queued).await.expect("sub");
        for i in 0..10u8 {
            let msg = Message {
                body: vec![i].into(),
                ..Default::default()
            };
            b.publish("t", msg).await.expect("publish");
        }
        for i in 0..10u8 {
            assert_eq!(next(&mut r1).await.message.body[0], i);
            assert_eq!(next(&mut r2).await.message.body[0], i);
        }
        let mut group = Vec::new();
        for _ in 0..10 {
            group.push(next(&mut rq).await.message.body[0]);
        }
        group.sort();
        assert_eq!(
            group,
            (0..10).collect::<Vec<u8>>(),
            "the group got each message once"
        );
        s1.unsubscribe().await.expect("unsubscribe");
        b.publish("t", Message::default()).await.expect("publish");
        next(&mut r2).await;
        assert!(r1.try_recv().is_err(), "no delivery after unsubscribe");
        b.publish("nobody", Message::default())
            .await
            .expect("no subscribers is fine");
    }
}
