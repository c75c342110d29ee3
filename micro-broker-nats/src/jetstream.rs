//! JetStream mode: a stream per topic, durable pull consumers, acks, nacks and redelivery.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamByNameErrorKind, PublishErrorKind,
};
use async_nats::jetstream::message::{Acker, PublishMessage};
use async_nats::jetstream::stream::{ConsumerErrorKind, RetentionPolicy, StorageType};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, AckKind};
use async_nats::Client;
use futures_util::StreamExt;
use micro_core::broker::dead_letter::{self, PoisonPolicy, Reason};
use micro_core::broker::{Acknowledger, Delivery, Handler, Message};
use micro_core::{BoxFuture, Error, MetadataLimits, Result};
use tokio_util::sync::CancellationToken;

use crate::broker::{call_handler, pause, Backoff};
use crate::options::{Envelope, JetStreamOptions, Retention, Storage};
use crate::wire::{incoming, outgoing};
use crate::ERROR_ID;

/// How many messages one pull request asks for. Handlers run one at a time, and every pulled
/// message's ack wait is already running, so the batch is kept small.
const PULL_BATCH: usize = 32;

/// The shortest pause between two in-progress acks.
const PROGRESS_MIN: Duration = Duration::from_millis(100);

/// The header JetStream deduplicates publishes by.
const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// The JetStream side of one connection.
pub(crate) struct JetStream {
    ctx: jetstream::Context,
    opts: JetStreamOptions,
    envelope: Envelope,
    limits: MetadataLimits,
    /// `nats at <servers>`, for errors.
    label: String,
    /// topic -> the stream known to cover it.
    streams: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for JetStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStream")
            .field("label", &self.label)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl JetStream {
    pub(crate) fn new(
        client: Client,
        opts: JetStreamOptions,
        envelope: Envelope,
        limits: MetadataLimits,
        label: String,
    ) -> Self {
        let ctx = jetstream::ContextBuilder::new()
            .timeout(opts.request_timeout)
            .ack_timeout(opts.request_timeout)
            .build(client);
        JetStream {
            ctx,
            opts,
            envelope,
            limits,
            label,
            streams: Mutex::new(HashMap::new()),
        }
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn unavailable(&self, what: impl fmt::Display) -> Error {
        Error::new(ERROR_ID, 503, format!("{}: {what}", self.label))
    }

    /// Fails with a clear error when the server has no JetStream.
    pub(crate) async fn check_enabled(&self) -> Result<()> {
        // A raw account-info request: its typed answer differs between server versions.
        let answer: std::result::Result<serde_json::Value, _> =
            self.ctx.request("INFO", &serde_json::json!({})).await;
        let problem = match answer {
            Ok(info) => match info.get("error") {
                None => return Ok(()),
                Some(error) => error.to_string(),
            },
            Err(e) => e.to_string(),
        };
        Err(self.unavailable(format!(
            "JetStream is not available ({problem}): start nats-server with -js (and a store \
             directory, -sd), or turn JetStream mode off"
        )))
    }

    /// The name of the stream that covers `topic`: one that already does, or `<prefix>_<topic>`,
    /// created now.
    pub(crate) async fn ensure_stream(&self, topic: &str) -> Result<String> {
        self.ensure_stream_kept(topic, self.opts.retention).await
    }

    /// [`JetStream::ensure_stream`], creating the stream with `retention`.
    async fn ensure_stream_kept(&self, topic: &str, retention: Retention) -> Result<String> {
        if let Some(name) = self.streams().get(topic) {
            return Ok(name.clone());
        }
        if let Some(name) = self.stream_covering(topic).await? {
            self.streams().insert(topic.to_string(), name.clone());
            return Ok(name);
        }
        let name = stream_name(&self.opts.stream_prefix, topic);
        let config = jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![topic.to_string()],
            retention: match retention {
                Retention::Interest => RetentionPolicy::Interest,
                Retention::Limits => RetentionPolicy::Limits,
            },
            storage: match self.opts.storage {
                Storage::File => StorageType::File,
                Storage::Memory => StorageType::Memory,
            },
            max_age: self.opts.max_age.unwrap_or_default(),
            description: Some(format!("Micro topic {topic}")),
            ..Default::default()
        };
        match self.ctx.create_stream(config).await {
            Ok(_) => {}
            Err(e) => {
                // Another subscriber or publisher may have created it in the meantime.
                if let Some(name) = self.stream_covering(topic).await? {
                    self.streams().insert(topic.to_string(), name.clone());
                    return Ok(name);
                }
                let overlap = matches!(e.kind(), CreateStreamErrorKind::JetStream(ref j)
                    if j.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP);
                let hint = if overlap {
                    " (another stream holds subjects that overlap it: subscribe to a topic that \
                     stream covers, or give the topic a stream of its own)"
                } else {
                    ""
                };
                return Err(self.unavailable(format!(
                    "creating JetStream stream {name} for topic {topic}: {e}{hint}"
                )));
            }
        }
        self.streams().insert(topic.to_string(), name.clone());
        Ok(name)
    }

    async fn stream_covering(&self, topic: &str) -> Result<Option<String>> {
        match self.ctx.stream_by_subject(topic).await {
            Ok(name) => Ok(Some(name)),
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == GetStreamByNameErrorKind::InvalidSubject => Err(
                Error::bad_request(ERROR_ID, format!("{topic:?} is not a valid NATS subject")),
            ),
            Err(e) => Err(self.unavailable(format!(
                "looking up the JetStream stream of topic {topic}: {e}"
            ))),
        }
    }

    /// Publishes and waits for the server's acknowledgement: `Ok` means the message is stored.
    pub(crate) async fn publish(&self, topic: &str, msg: Message) -> Result<()> {
        self.publish_kept(topic, msg, self.opts.retention).await
    }

    /// Publishes a dead letter to `subject`. A stream made for it keeps messages by its limits
    /// only: under interest retention a subject nobody consumes yet would store nothing.
    async fn publish_dead_letter(&self, subject: &str, msg: Message) -> Result<()> {
        self.publish_kept(subject, msg, Retention::Limits).await
    }

    async fn publish_kept(&self, topic: &str, msg: Message, retention: Retention) -> Result<()> {
        self.ensure_stream_kept(topic, retention).await?;
        match self.publish_once(topic, &msg).await {
            Err(PublishFailure::NoStream) => {
                // The stream was deleted behind our back: make it again, once.
                self.streams().remove(topic);
                self.ensure_stream_kept(topic, retention).await?;
                match self.publish_once(topic, &msg).await {
                    Ok(()) => Ok(()),
                    Err(PublishFailure::NoStream) => Err(self.unavailable(format!(
                        "publishing to {topic}: no JetStream stream takes the subject"
                    ))),
                    Err(PublishFailure::Other(e)) => Err(e),
                }
            }
            Err(PublishFailure::Other(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }

    async fn publish_once(
        &self,
        topic: &str,
        msg: &Message,
    ) -> std::result::Result<(), PublishFailure> {
        let (headers, payload) = outgoing(self.envelope, msg).map_err(PublishFailure::Other)?;
        let mut publish = PublishMessage::build().payload(payload);
        if !headers.is_empty() {
            publish = publish.headers(headers);
        }
        // Micro-Id is unique per published message, so a publish retried after a lost ack is
        // stored once (within the stream's duplicate window, 2 minutes by default).
        if let Some(id) = msg.header.get("Micro-Id").filter(|id| !id.is_empty()) {
            if msg.header.get(NATS_MSG_ID).is_none() {
                publish = publish.message_id(id);
            }
        }
        let ack = self
            .ctx
            .send_publish(topic.to_string(), publish)
            .await
            .map_err(|e| self.publish_error(topic, msg, e))?;
        ack.await.map_err(|e| self.publish_error(topic, msg, e))?;
        Ok(())
    }

    fn publish_error(
        &self,
        topic: &str,
        msg: &Message,
        e: jetstream::context::PublishError,
    ) -> PublishFailure {
        let detail = match e.kind() {
            PublishErrorKind::StreamNotFound => return PublishFailure::NoStream,
            PublishErrorKind::MaxPayloadExceeded => {
                return PublishFailure::Other(Error::payload_too_large(
                    ERROR_ID,
                    format!(
                        "{}: the message to {topic} ({} bytes of body) is larger than the \
                         server's max_payload: {e}",
                        self.label,
                        msg.body.len()
                    ),
                ))
            }
            PublishErrorKind::TimedOut => format!(
                "publishing to {topic}: the server did not confirm within {:?}; it may or may \
                 not have stored the message (a retry with the same Micro-Id is stored once)",
                self.opts.request_timeout
            ),
            _ => format!("publishing to {topic}: {e}"),
        };
        PublishFailure::Other(self.unavailable(detail))
    }

    /// The durable consumer `name` on the stream of `topic`, made when missing. A queue group's
    /// consumer (`shared`) that exists is used as it is: its first subscriber set it up.
    pub(crate) async fn bind(
        &self,
        topic: &str,
        name: &str,
        shared: bool,
    ) -> Result<(String, PullConsumer)> {
        let stream = self.ensure_stream(topic).await?;
        if shared {
            match self
                .ctx
                .get_consumer_from_stream::<pull::Config, _, _>(name, &stream)
                .await
            {
                Ok(consumer) => {
                    warn_if_server_gives_up(&consumer, name);
                    return Ok((stream, consumer));
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(
                        self.unavailable(format!("looking up consumer {name} on {stream}: {e}"))
                    )
                }
            }
        }
        let config = pull::Config {
            durable_name: Some(name.to_string()),
            description: Some(if shared {
                format!("Micro queue group on {topic}")
            } else {
                format!("Micro subscriber of {topic}")
            }),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.opts.ack_wait,
            // The broker counts deliveries and dead-letters (or blocks) itself: a server-side
            // limit would stop redelivering without telling anyone.
            max_deliver: -1,
            filter_subject: topic.to_string(),
            // Only for a subscriber's own consumer: a queue group's outlives its members.
            inactive_threshold: if shared {
                Duration::ZERO
            } else {
                self.opts.inactive_threshold
            },
            ..Default::default()
        };
        match self.ctx.create_consumer_on_stream(config, &stream).await {
            Ok(consumer) => Ok((stream, consumer)),
            Err(e) => {
                if shared {
                    // Another member of the group made it in the meantime.
                    if let Ok(consumer) = self
                        .ctx
                        .get_consumer_from_stream::<pull::Config, _, _>(name, &stream)
                        .await
                    {
                        return Ok((stream, consumer));
                    }
                }
                if matches!(e.kind(), ConsumerErrorKind::JetStream(ref j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND)
                {
                    self.streams().remove(topic);
                }
                Err(self.unavailable(format!(
                    "creating consumer {name} on JetStream stream {stream} for {topic}: {e}"
                )))
            }
        }
    }

    /// Whether the consumer is gone (as opposed to the server being unreachable).
    async fn consumer_missing(&self, stream: &str, name: &str) -> bool {
        match self
            .ctx
            .get_consumer_from_stream::<pull::Config, _, _>(name, stream)
            .await
        {
            Ok(_) => false,
            Err(e) => is_not_found(&e),
        }
    }

    /// Deletes a subscriber's own consumer; one that is already gone is fine.
    pub(crate) async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        match self.ctx.delete_consumer_from_stream(name, stream).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                Err(self.unavailable(format!("deleting consumer {name} of stream {stream}: {e}")))
            }
        }
    }

    pub(crate) fn options(&self) -> &JetStreamOptions {
        &self.opts
    }
}

/// A queue group's consumer made before dead letters (or by someone else) may carry a
/// server-side delivery limit, past which JetStream stops redelivering without a word.
fn warn_if_server_gives_up(consumer: &PullConsumer, name: &str) {
    let limit = consumer.cached_info().config.max_deliver;
    if limit > 0 {
        tracing::warn!(consumer = %name, max_deliver = limit, "this JetStream consumer has a server-side max_deliver: a message that reaches it is no longer redelivered nor dead-lettered; set it to -1 (nats consumer edit) so the broker's dead-lettering sees every failure");
    }
}

enum PublishFailure {
    NoStream,
    Other(Error),
}

fn is_not_found(e: &jetstream::stream::ConsumerError) -> bool {
    matches!(e.kind(), ConsumerErrorKind::JetStream(ref j)
        if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND
            || j.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// The consumer a subscriber uses: a queue group shares `<prefix>_<topic>_<queue>`; a
/// subscriber alone gets `<prefix>_<topic>_<random>`.
pub(crate) fn consumer_name(prefix: &str, topic: &str, queue: Option<&str>) -> String {
    match queue {
        Some(q) => name_from(&[prefix, topic, q]),
        None => {
            let own = uuid::Uuid::new_v4().simple().to_string();
            format!("{}_{}", name_from(&[prefix, topic]), &own[..12])
        }
    }
}

/// `<prefix>_<topic>`, readable where possible.
pub(crate) fn stream_name(prefix: &str, topic: &str) -> String {
    name_from(&[prefix, topic])
}

/// Joins `parts` with `_` into a JetStream name (no `.`, `*`, `>`, spaces or path separators).
/// When a part had to be changed, or the name is long, a hash of the original parts is added,
/// so two different topics never share a name.
fn name_from(parts: &[&str]) -> String {
    const MAX: usize = 64;
    let mut changed = false;
    let cleaned: Vec<String> = parts
        .iter()
        .map(|part| {
            part.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        changed = true;
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    let mut name = cleaned.join("_");
    if changed || name.len() > MAX {
        name.truncate(MAX);
        let hash = fnv1a(parts.join("\u{0}").as_bytes());
        name = format!("{name}_{hash:016x}");
    }
    name
}

/// FNV-1a, 64 bits: stable across builds and Rust versions, unlike `DefaultHasher`, because the
/// names it shapes live on in the server.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Settles one JetStream delivery; the first ack or nack wins. A nack of a delivery that used
/// up its budget (or one without requeue) dead-letters it first.
struct JsAcker {
    acker: Acker,
    settled: AtomicBool,
    nack_delay: Duration,
    js: Arc<JetStream>,
    message: Message,
    subject: String,
    queue: Option<String>,
    stream: String,
    sequence: u64,
    /// Which delivery of the message this is (1 for the first).
    delivered: i64,
}

impl fmt::Debug for JsAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsAcker")
            .field("settled", &self.settled.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl JsAcker {
    async fn send(&self, kind: AckKind) -> Result<()> {
        if self.settled.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.acker.ack_with(kind).await.map_err(|e| {
            Error::new(
                ERROR_ID,
                503,
                format!("acknowledging a JetStream delivery: {e}"),
            )
        })
    }

    fn is_settled(&self) -> bool {
        self.settled.load(Ordering::SeqCst)
    }

    /// Tells JetStream the handler is still at it, restarting the ack wait.
    async fn progress(&self) {
        if self.is_settled() {
            return;
        }
        if let Err(e) = self.acker.ack_with(AckKind::Progress).await {
            tracing::debug!(subject = %self.subject, error = %e, "sending an in-progress ack");
        }
    }

    /// Whether this delivery used up the message's budget (never under block).
    fn last_chance(&self) -> bool {
        let budget = self.js.opts.max_deliver;
        let dead_letters = matches!(self.js.opts.dead_letter, PoisonPolicy::DeadLetter(_));
        dead_letters && budget > 0 && self.delivered >= budget
    }

    /// The message was not handled (`why`): redelivered if `requeue` and it has deliveries
    /// left (always under block); otherwise dead-lettered, then terminated. When the dead
    /// letter cannot be published, the message is nacked instead, so it comes back and the
    /// dead letter is tried again.
    async fn fail(&self, requeue: bool, why: &str) -> Result<()> {
        let redeliver = if self.nack_delay.is_zero() {
            AckKind::Nak(None)
        } else {
            AckKind::Nak(Some(self.nack_delay))
        };
        let destination = self.js.opts.dead_letter.destination(&self.subject);
        let Some(destination) = destination else {
            return self
                .send(if requeue { redeliver } else { AckKind::Term })
                .await;
        };
        if requeue && !self.last_chance() {
            return self.send(redeliver).await;
        }
        if self.is_settled() {
            return Ok(());
        }
        let mut letter = dead_letter::letter(
            &self.message,
            Reason {
                topic: &self.subject,
                queue: self.queue.as_deref(),
                error: why,
                attempts: u64::try_from(self.delivered).unwrap_or_default(),
            },
        );
        letter
            .header
            .insert(dead_letter::STREAM_HEADER, self.stream.as_str());
        letter
            .header
            .insert(dead_letter::SEQUENCE_HEADER, self.sequence.to_string());
        match self.js.publish_dead_letter(&destination, letter).await {
            Ok(()) => {
                tracing::warn!(subject = %self.subject, dead_letter = %destination, delivered = self.delivered, error = %why, "gave a message up to its dead-letter subject");
                self.send(AckKind::Term).await
            }
            Err(e) => {
                tracing::warn!(subject = %self.subject, dead_letter = %destination, error = %e, "publishing a dead letter failed; the message comes back and it is tried again");
                self.send(redeliver).await?;
                Err(e)
            }
        }
    }
}

impl Acknowledger for JsAcker {
    fn ack(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.send(AckKind::Ack))
    }

    fn nack(&self, requeue: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let why = if requeue {
                format!("nacked by the handler on delivery {}", self.delivered)
            } else {
                "nacked by the handler without requeue".to_string()
            };
            self.fail(requeue, &why).await
        })
    }
}

/// What a JetStream subscription loop needs.
pub(crate) struct JsLoop {
    pub(crate) js: Arc<JetStream>,
    pub(crate) topic: String,
    pub(crate) consumer_name: String,
    pub(crate) shared: bool,
    pub(crate) queue: Option<String>,
    pub(crate) stream: String,
    pub(crate) consumer: PullConsumer,
    pub(crate) handler: Handler,
    pub(crate) auto_ack: bool,
    pub(crate) token: CancellationToken,
}

impl JsLoop {
    /// Pulls and handles messages until cancelled. Connection losses are async-nats's to
    /// recover from; a consumer that disappeared (deleted, or lost with a memory store) is made
    /// again. Nothing a handler does ends the loop.
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::default();
        'bind: loop {
            let messages = self
                .consumer
                .stream()
                .max_messages_per_batch(PULL_BATCH)
                .messages()
                .await;
            match messages {
                Ok(mut messages) => loop {
                    let next = tokio::select! {
                        biased;
                        _ = self.token.cancelled() => break 'bind,
                        next = messages.next() => next,
                    };
                    match next {
                        Some(Ok(m)) => {
                            backoff.reset();
                            if self.token.is_cancelled() {
                                break 'bind;
                            }
                            self.deliver(m).await;
                        }
                        Some(Err(e)) => {
                            use pull::MessagesErrorKind as K;
                            let terminal = matches!(
                                e.kind(),
                                K::ConsumerDeleted
                                    | K::NoResponders
                                    | K::PushBasedConsumer
                                    | K::RequestLimitExceeded
                            );
                            tracing::warn!(topic = %self.topic, consumer = %self.consumer_name, error = %e, "pulling from JetStream");
                            if terminal
                                || self
                                    .js
                                    .consumer_missing(&self.stream, &self.consumer_name)
                                    .await
                            {
                                break;
                            }
                        }
                        None => break,
                    }
                },
                Err(e) => {
                    tracing::warn!(topic = %self.topic, consumer = %self.consumer_name, error = %e, "starting to pull from JetStream");
                }
            }
            // Bind again: make the consumer (and its stream) when they are gone.
            loop {
                if !pause(&self.token, backoff.next_delay()).await {
                    break 'bind;
                }
                match self
                    .js
                    .bind(&self.topic, &self.consumer_name, self.shared)
                    .await
                {
                    Ok((stream, consumer)) => {
                        self.stream = stream;
                        self.consumer = consumer;
                        continue 'bind;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, error = %e, "re-creating a JetStream consumer")
                    }
                }
            }
        }
        if !self.shared {
            // Unsubscribe deletes it too; this covers a consumer the loop made again meanwhile.
            if let Err(e) = self
                .js
                .delete_consumer(&self.stream, &self.consumer_name)
                .await
            {
                tracing::debug!(error = %e, "deleting a subscriber's consumer");
            }
        }
    }

    async fn deliver(&self, m: jetstream::Message) {
        let (stream, sequence, delivered) = match m.info() {
            Ok(i) => (i.stream.to_string(), i.stream_sequence, i.delivered),
            Err(_) => (self.stream.clone(), 0, 1),
        };
        let (msg, acker) = m.split();
        let mut acker = JsAcker {
            acker,
            settled: AtomicBool::new(false),
            nack_delay: self.js.options().nack_delay,
            js: self.js.clone(),
            message: Message::default(),
            subject: msg.subject.to_string(),
            queue: self.queue.clone(),
            stream,
            sequence,
            delivered,
        };
        let mut message = match incoming(msg.headers.as_ref(), msg.payload, self.js.limits) {
            Ok(m) => m,
            Err(e) => {
                // Redelivering it would only fail again: terminate it.
                tracing::warn!(topic = %self.topic, error = %e, "dropped a message");
                if let Err(e) = acker.send(AckKind::Term).await {
                    tracing::debug!(error = %e, "terminating a dropped JetStream message");
                }
                return;
            }
        };
        let header = &mut message.header;
        if header.get(NATS_MSG_ID).is_some() && header.get(NATS_MSG_ID) == header.get("Micro-Id") {
            // Set by publish from Micro-Id; not part of the message as it was published.
            header.remove(NATS_MSG_ID);
        }
        acker.message = message.clone();
        let acker = Arc::new(acker);
        let budget = self.js.options().max_deliver;
        if acker.last_chance() && acker.delivered > budget {
            // Its last delivery ended without a settle (a crash, or an ack wait that ran out),
            // or its dead letter could not be published: give it up without running it again.
            let why = format!(
                "delivered {} times without being handled (the limit is {budget})",
                acker.delivered
            );
            if let Err(e) = acker.fail(false, &why).await {
                tracing::warn!(topic = %self.topic, error = %e, "dead-lettering a JetStream delivery");
            }
            return;
        }
        let delivery = Delivery::new(
            msg.subject.as_str(),
            message,
            Some(acker.clone() as Arc<dyn Acknowledger>),
        );
        let handled = call_handler(&self.handler, delivery);
        tokio::pin!(handled);
        // In-progress acks while the handler runs, so a long handler is not redelivered under
        // it. A third of the consumer's ack wait leaves room for one to get lost or be slow.
        let every = (self.consumer.cached_info().config.ack_wait / 3).max(PROGRESS_MIN);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                result = &mut handled => break result,
                _ = ticks.tick() => acker.progress().await,
            }
        };
        let settle = match result {
            Ok(()) if self.auto_ack => acker.ack().await,
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, delivered = acker.delivered, "subscriber failed");
                // Under manual ack too: a failed handler that did not settle gets a prompt retry
                // (or its dead letter) rather than one after the ack wait.
                if acker.is_settled() {
                    Ok(())
                } else {
                    let why = format!("the handler failed {} times: {e}", acker.delivered);
                    acker.fail(true, &why).await
                }
            }
        };
        if let Err(e) = settle {
            tracing::warn!(topic = %self.topic, error = %e, "settling a JetStream delivery");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_and_distinct() {
        assert_eq!(stream_name("MICRO", "orders-new"), "MICRO_orders-new");
        let dotted = stream_name("MICRO", "orders.new");
        let underscored = stream_name("MICRO", "orders_new");
        assert!(dotted.starts_with("MICRO_orders_new_"), "{dotted}");
        assert_ne!(dotted, underscored);
        assert!(!stream_name("MICRO", "a.*.>").contains(['.', '*', '>']));
        let long = "x".repeat(300);
        assert!(stream_name("MICRO", &long).len() < 100);
        assert_eq!(
            consumer_name("micro", "orders", Some("billing")),
            "micro_orders_billing"
        );
        let a = consumer_name("micro", "orders", None);
        let b = consumer_name("micro", "orders", None);
        assert!(a.starts_with("micro_orders_"), "{a}");
        assert_ne!(a, b, "each lone subscriber has a consumer of its own");
    }

    #[test]
    fn hash_is_stable() {
        // Names made by one build must be found by the next.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
