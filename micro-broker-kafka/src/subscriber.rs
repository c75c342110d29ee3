//! Subscriptions: one librdkafka consumer and one thread per subscription, acks turned into
//! offset commits, and redelivery.
//!
//! Kafka commits a position per partition, not single messages, so each partition keeps the
//! offsets handed to the handler and not yet settled; the committed position advances over
//! the settled prefix only. A message that is never acked holds the position back, and the
//! next consumer of the partition (after a restart or a rebalance) gets it again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use micro_core::broker::dead_letter::{self, PoisonPolicy, Reason};
use micro_core::broker::{Acknowledger, Delivery, Handler, Message, SubscribeOptions};
use micro_core::{BoxFuture, Error, MetadataLimits, Result};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::broker::{base_config, blocking, kafka_error, unavailable, Connection};
use crate::log::{forward, forward_error};
use crate::options::{InitialOffset, KafkaOptions, RecordKey};
use crate::ERROR_ID;

/// The longest the consumer thread blocks in one poll, so it notices `stop` quickly.
const POLL: Duration = Duration::from_millis(100);
/// The longest wait between two redeliveries of one message.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often a queue-group subscribe checks whether the group is live.
const GROUP_CHECK: Duration = Duration::from_millis(200);
/// The same consumer error is logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

type KafkaConsumer = BaseConsumer<ConsumerCtx>;

/// A running subscription, shared by its handle and the connection's list.
pub(crate) struct SubscriptionCore {
    topic: String,
    group: Option<String>,
    shared: Arc<Shared>,
    done: watch::Receiver<bool>,
    // A task on the subscriber's runtime whose drop stops the subscription: when that runtime
    // shuts down, no handler can run any more, so the consumer leaves too.
    guard: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for SubscriptionCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionCore")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish()
    }
}

impl SubscriptionCore {
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    pub(crate) fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Stops delivery and waits (bounded) until the consumer committed what was acked and left.
    pub(crate) async fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(g) = lock(&self.guard).take() {
            g.abort();
        }
        let bound = self.shared.options.operation_timeout * 3;
        let mut done = self.done.clone();
        let finished = tokio::time::timeout(bound, done.wait_for(|d| *d))
            .await
            .is_ok();
        if !finished {
            tracing::warn!(topic = %self.topic, brokers = %self.shared.brokers, "the kafka subscriber did not finish within {bound:?} (a handler still running?); it stops once the handler returns");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a subscription: a consumer group member for a queue, else a consumer of every
/// partition from its end.
pub(crate) async fn start(
    conn: &Arc<Connection>,
    topic: &str,
    handler: Handler,
    opts: SubscribeOptions,
) -> Result<Arc<SubscriptionCore>> {
    let o = conn.options.clone();
    let group_mode = opts.queue.is_some();
    // A broadcast subscriber never joins its group (it assigns itself every partition), so
    // the unique id leaves no group behind on the cluster; librdkafka wants one all the same.
    let group_id = opts.queue.clone().unwrap_or_else(|| {
        format!(
            "{}-broadcast-{}",
            o.client_id,
            uuid::Uuid::new_v4().simple()
        )
    });
    let (assigned, mut assigned_rx) = watch::channel(0u64);
    let next_gen_protocol = o
        .consumer_config
        .get("group.protocol")
        .or_else(|| o.config.get("group.protocol"))
        .is_some_and(|p| p.eq_ignore_ascii_case("consumer"));
    let shared = Arc::new(Shared {
        topic: topic.to_string(),
        group_mode,
        brokers: conn.brokers.clone(),
        key_header: match &o.key {
            RecordKey::Header(h) => Some(h.clone()),
            _ => None,
        },
        group: opts.queue.clone(),
        conn: Arc::downgrade(conn),
        options: o.clone(),
        stop: AtomicBool::new(false),
        state: Mutex::new(State::default()),
        assigned,
    });

    let mut config = base_config(&o);
    config
        .set(
            "auto.offset.reset",
            match o.initial_offset {
                InitialOffset::Latest => "latest",
                InitialOffset::Earliest => "earliest",
            },
        )
        .set("enable.partition.eof", "false");
    for (k, v) in &o.consumer_config {
        config.set(k, v);
    }
    // What at-least-once rests on: offsets move only when handlers settle messages.
    config
        .set("group.id", &group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("allow.auto.create.topics", "false");

    let ctx = ConsumerCtx {
        shared: shared.clone(),
    };
    let s = shared.clone();
    let consumer = blocking(move || {
        let c: KafkaConsumer = config
            .create_with_context(ctx)
            .map_err(|e| kafka_error(&s.brokers, "creating a consumer", &e))?;
        if s.group_mode {
            c.subscribe(&[&s.topic]).map_err(|e| {
                kafka_error(
                    &s.brokers,
                    &format!("subscribing to topic {:?}", s.topic),
                    &e,
                )
            })?;
        } else {
            s.assign_from_end(&c)?;
        }
        Ok(Arc::new(c))
    })
    .await?;

    let rt = Handle::current();
    let (done_tx, done) = watch::channel(false);
    // For the liveness check below; the consumer thread holds the only strong reference, so
    // the consumer closes when it ends.
    let probe = Arc::downgrade(&consumer);
    let runner = Runner {
        consumer,
        shared: shared.clone(),
        handler,
        auto_ack: opts.auto_ack,
        rt: rt.clone(),
    };
    std::thread::Builder::new()
        .name(format!("kafka-sub-{topic}"))
        .spawn(move || {
            runner.run();
            let _ = done_tx.send(true);
        })
        .map_err(|e| {
            Error::internal(
                ERROR_ID,
                format!("starting the consumer thread for topic {topic:?}: {e}"),
            )
        })?;
    let stop_on_drop = StopOnDrop(shared.clone());
    let guard = rt.spawn(async move {
        let _stop = stop_on_drop;
        std::future::pending::<()>().await
    });
    let core = Arc::new(SubscriptionCore {
        topic: topic.to_string(),
        group: opts.queue.clone(),
        shared,
        done,
        guard: Mutex::new(Some(guard)),
    });

    if group_mode {
        // Publishing right after subscribe must reach the group, and this member should be
        // in it: wait for its first assignment (where it pins the start offsets of partitions
        // the group never committed). The classic protocol reports an empty assignment too;
        // the newer consumer protocol (KIP-848) reports none, so a member that gets no
        // partition (more members than partitions) is live once the group has a committed
        // position on every partition.
        let deadline = tokio::time::Instant::now() + o.subscribe_timeout;
        let mut live = false;
        while tokio::time::Instant::now() < deadline {
            if *assigned_rx.borrow_and_update() > 0 {
                live = true;
                break;
            }
            if *core.done.borrow() {
                // The consumer failed for good (logged); nothing more will come.
                break;
            }
            let (p, t) = (probe.clone(), topic.to_string());
            if next_gen_protocol
                && matches!(
                    blocking(move || Ok(p.upgrade().is_some_and(|c| group_has_positions(&c, &t))))
                        .await,
                    Ok(true)
                )
            {
                live = true;
                break;
            }
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + GROUP_CHECK),
                assigned_rx.changed(),
            )
            .await;
        }
        if !live {
            core.stop().await;
            return Err(unavailable(
                &conn.brokers,
                &format!(
                    "consumer group {group_id:?} got no partition assignment for topic {topic:?} within {:?}",
                    o.subscribe_timeout
                ),
            ));
        }
    }
    Ok(core)
}

/// Whether `c`'s group has a committed position on every partition of `topic` (blocking).
fn group_has_positions(c: &KafkaConsumer, topic: &str) -> bool {
    let timeout = Duration::from_secs(2);
    let Ok(md) = c.fetch_metadata(Some(topic), timeout) else {
        return false;
    };
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    if tpl.count() == 0 {
        return false;
    }
    c.committed_offsets(tpl, timeout).is_ok_and(|committed| {
        committed
            .elements()
            .iter()
            .all(|e| matches!(e.offset(), Offset::Offset(_)))
    })
}

struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// What the consumer thread, the rebalance callback and the ackers share.
struct Shared {
    topic: String,
    group_mode: bool,
    group: Option<String>,
    // Weak: the connection holds the subscriptions. Gone means disconnected, and then no
    // dead letter can be produced (the message stays unsettled).
    conn: Weak<Connection>,
    brokers: String,
    key_header: Option<String>,
    options: Arc<KafkaOptions>,
    stop: AtomicBool,
    state: Mutex<State>,
    // Counts assignments, so subscribe can wait for the first.
    assigned: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    epoch: u64,
    parts: HashMap<i32, Part>,
    unsettled: usize,
    paused: bool,
    redeliveries: Vec<Redelivery>,
}

/// One assigned partition: offsets handed out and whether each is settled.
struct Part {
    // Which assignment this is; acks from an earlier one are stale.
    epoch: u64,
    pending: BTreeMap<i64, bool>,
    // The position last committed (the next offset to read).
    committed: Option<i64>,
}

struct Redelivery {
    due: Instant,
    partition: i32,
    offset: i64,
    epoch: u64,
    attempt: u32,
    message: Message,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.options
            .redelivery_backoff
            .saturating_mul(factor)
            .min(MAX_BACKOFF)
    }

    /// Broadcast: every partition, from its current end, so whatever is published after
    /// subscribe returns arrives.
    fn assign_from_end(&self, c: &KafkaConsumer) -> Result<()> {
        let timeout = self.options.operation_timeout;
        let what = format!("reading the partitions of topic {:?}", self.topic);
        let md = c
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(|e| kafka_error(&self.brokers, &what, &e))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if parts.is_empty() {
            return Err(Error::not_found(
                ERROR_ID,
                format!(
                    "kafka at {}: topic {:?} has no partitions",
                    self.brokers, self.topic
                ),
            ));
        }
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            let (_, high) = c
                .fetch_watermarks(&self.topic, p, timeout)
                .map_err(|e| kafka_error(&self.brokers, &what, &e))?;
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(high))
                .map_err(|e| kafka_error(&self.brokers, &what, &e))?;
        }
        c.assign(&tpl)
            .map_err(|e| kafka_error(&self.brokers, &what, &e))?;
        self.on_assigned(&tpl);
        Ok(())
    }

    /// Queue groups: partitions the group never committed start where `initial_offset` says,
    /// resolved now and committed at once, so a later rebalance cannot skip what was published
    /// in between.
    fn pin_start_offsets(
        &self,
        c: &KafkaConsumer,
        tpl: &mut TopicPartitionList,
    ) -> TopicPartitionList {
        let mut pins = TopicPartitionList::new();
        let timeout = self.options.operation_timeout;
        let committed = match c.committed_offsets(tpl.clone(), timeout) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(topic = %self.topic, brokers = %self.brokers, error = %e, "could not read the group's committed offsets; falling back to auto.offset.reset");
                return pins;
            }
        };
        for el in committed.elements() {
            if el.offset() != Offset::Invalid {
                continue;
            }
            let (low, high) = match c.fetch_watermarks(el.topic(), el.partition(), timeout) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, partition = el.partition(), error = %e, "could not read the partition's offsets; falling back to auto.offset.reset");
                    continue;
                }
            };
            let start = match self.options.initial_offset {
                InitialOffset::Latest => high,
                InitialOffset::Earliest => low,
            };
            let ok = tpl
                .set_partition_offset(el.topic(), el.partition(), Offset::Offset(start))
                .and_then(|_| {
                    pins.add_partition_offset(el.topic(), el.partition(), Offset::Offset(start))
                });
            if let Err(e) = ok {
                tracing::warn!(topic = %self.topic, error = %e, "could not pin a start offset");
            }
        }
        pins
    }

    fn on_assigned(&self, tpl: &TopicPartitionList) {
        {
            let mut s = self.state();
            s.epoch += 1;
            s.paused = false;
            let epoch = s.epoch;
            for el in tpl.elements() {
                let committed = match el.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                if let Some(old) = s.parts.insert(
                    el.partition(),
                    Part {
                        epoch,
                        pending: BTreeMap::new(),
                        committed,
                    },
                ) {
                    let open = old.pending.values().filter(|d| !**d).count();
                    s.unsettled = s.unsettled.saturating_sub(open);
                }
            }
        }
        self.assigned.send_modify(|n| *n += 1);
    }

    /// Partitions leave this consumer: commit what was settled, forget the rest (their next
    /// owner reads from the committed position, so unsettled messages come again).
    fn on_revoked(&self, c: &KafkaConsumer, tpl: Option<&TopicPartitionList>) {
        let mut commits = Vec::new();
        {
            let mut s = self.state();
            let revoked: Vec<i32> = match tpl {
                Some(t) => t.elements().iter().map(|e| e.partition()).collect(),
                None => s.parts.keys().copied().collect(),
            };
            for p in &revoked {
                if let Some(part) = s.parts.remove(p) {
                    let open = part.pending.values().filter(|d| !**d).count();
                    s.unsettled = s.unsettled.saturating_sub(open);
                    if let Some(n) = part.committed {
                        commits.push((*p, n));
                    }
                }
            }
            s.redeliveries.retain(|r| !revoked.contains(&r.partition));
        }
        if self.group_mode && !commits.is_empty() {
            self.commit(c, &commits, CommitMode::Sync);
        }
    }

    /// Commits every partition's settled position and waits for it (on stop).
    fn commit_all(&self, c: &KafkaConsumer) {
        if !self.group_mode {
            return;
        }
        let commits: Vec<(i32, i64)> = self
            .state()
            .parts
            .iter()
            .filter_map(|(p, part)| part.committed.map(|n| (*p, n)))
            .collect();
        if !commits.is_empty() {
            self.commit(c, &commits, CommitMode::Sync);
        }
    }

    fn commit(&self, c: &KafkaConsumer, positions: &[(i32, i64)], mode: CommitMode) {
        let mut tpl = TopicPartitionList::new();
        for (p, n) in positions {
            if let Err(e) = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*n)) {
                tracing::warn!(topic = %self.topic, error = %e, "could not build an offset commit");
                return;
            }
        }
        if let Err(e) = c.commit(&tpl, mode) {
            tracing::warn!(topic = %self.topic, brokers = %self.brokers, error = %e, "committing offsets failed; those messages may be delivered again");
        }
    }

    /// Records that `offset` is being handed out; returns the assignment it belongs to.
    fn track(&self, partition: i32, offset: i64) -> u64 {
        let mut s = self.state();
        let Some(part) = s.parts.get_mut(&partition) else {
            return 0;
        };
        let epoch = part.epoch;
        let fresh = part.pending.insert(offset, false).is_none();
        if fresh {
            s.unsettled += 1;
        }
        epoch
    }

    /// Marks `offset` settled; returns the new position to commit, if it moved.
    fn settle(&self, partition: i32, offset: i64, epoch: u64) -> Option<i64> {
        let mut s = self.state();
        let part = s.parts.get_mut(&partition)?;
        if part.epoch != epoch {
            return None;
        }
        match part.pending.get_mut(&offset) {
            Some(done) if !*done => *done = true,
            _ => return None,
        }
        let mut next = None;
        while let Some(first) = part.pending.first_entry() {
            if !*first.get() {
                break;
            }
            next = Some(*first.key() + 1);
            first.remove();
        }
        if next.is_some() {
            part.committed = next;
        }
        s.unsettled = s.unsettled.saturating_sub(1);
        next.filter(|_| self.group_mode)
    }

    fn requeue(&self, r: Redelivery) {
        self.state().redeliveries.push(r);
    }

    /// The next redelivery that is due and still belongs to a current assignment.
    fn take_due(&self) -> Option<Redelivery> {
        let mut s = self.state();
        let State {
            parts,
            redeliveries,
            ..
        } = &mut *s;
        redeliveries.retain(|r| parts.get(&r.partition).is_some_and(|p| p.epoch == r.epoch));
        let now = Instant::now();
        let i = redeliveries.iter().position(|r| r.due <= now)?;
        Some(redeliveries.remove(i))
    }

    fn poll_wait(&self) -> Duration {
        let now = Instant::now();
        self.state()
            .redeliveries
            .iter()
            .map(|r| r.due.saturating_duration_since(now))
            .min()
            .map_or(POLL, |d| d.min(POLL))
    }

    /// Produces the dead letter of the message at `partition`/`offset` and waits until the
    /// cluster has it. `Ok(())` also under [`PoisonPolicy::Block`], where there is none to make.
    async fn dead_letter(
        &self,
        message: &Message,
        partition: i32,
        offset: i64,
        attempts: u32,
        error: &str,
    ) -> Result<()> {
        let Some(topic) = self.options.dead_letter.destination(&self.topic) else {
            return Ok(());
        };
        let conn = self.conn.upgrade().ok_or_else(|| {
            unavailable(
                &self.brokers,
                "the broker disconnected before the dead letter could be produced",
            )
        })?;
        let mut letter = dead_letter::letter(
            message,
            Reason {
                topic: &self.topic,
                queue: self.group.as_deref(),
                error,
                attempts: u64::from(attempts),
            },
        );
        letter
            .header
            .insert(dead_letter::PARTITION_HEADER, partition.to_string());
        letter
            .header
            .insert(dead_letter::OFFSET_HEADER, offset.to_string());
        conn.publish(&topic, &letter).await?;
        tracing::warn!(topic = %self.topic, partition, offset, dead_letter = %topic, attempts, %error, "gave a message up to its dead-letter topic");
        Ok(())
    }

    /// Waits `d` unless the subscription stops first; false when it stopped.
    fn pause_for(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.stopped() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
        false
    }
}

/// The consumer's librdkafka context: logs, rebalances, commit results.
struct ConsumerCtx {
    shared: Arc<Shared>,
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward("consumer", &self.shared.brokers, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error("consumer", &self.shared.brokers, &error, reason);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(c.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let shared = &self.shared;
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // While stopping, only take what librdkafka hands over, so it can take it back.
                let pins = if shared.group_mode && !shared.stopped() {
                    shared.pin_start_offsets(c, tpl)
                } else {
                    TopicPartitionList::new()
                };
                let assigned = if cooperative {
                    c.incremental_assign(tpl)
                } else {
                    c.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::warn!(topic = %shared.topic, error = %e, "taking the assigned partitions failed");
                }
                if pins.count() > 0 {
                    if let Err(e) = c.commit(&pins, CommitMode::Sync) {
                        tracing::warn!(topic = %shared.topic, error = %e, "could not commit the group's start offsets");
                    }
                }
                tracing::debug!(topic = %shared.topic, partitions = tpl.count(), "kafka partitions assigned");
                shared.on_assigned(tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                shared.on_revoked(c, Some(tpl));
                let released = if cooperative {
                    c.incremental_unassign(tpl)
                } else {
                    c.unassign()
                };
                if let Err(e) = released {
                    tracing::warn!(topic = %shared.topic, error = %e, "releasing revoked partitions failed");
                }
            }
            other => {
                tracing::warn!(topic = %shared.topic, brokers = %shared.brokers, error = ?other, "consumer group rebalance failed; librdkafka rejoins");
                shared.on_revoked(c, None);
                let _ = if cooperative {
                    c.incremental_unassign(tpl)
                } else {
                    c.unassign()
                };
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(topic = %self.shared.topic, brokers = %self.shared.brokers, error = %e, "an offset commit failed; those messages may be delivered again")
            }
        }
    }
}

/// Acknowledges one delivery: the first ack or nack settles it, later ones do nothing.
struct KafkaAcker {
    shared: Arc<Shared>,
    consumer: Weak<KafkaConsumer>,
    partition: i32,
    offset: i64,
    epoch: u64,
    attempt: u32,
    message: Message,
    settled: AtomicBool,
}

impl fmt::Debug for KafkaAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaAcker")
            .field("topic", &self.shared.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl KafkaAcker {
    /// Claims the right to settle; false when someone already did.
    fn claim(&self) -> bool {
        !self.settled.swap(true, Ordering::SeqCst)
    }

    fn finish(&self) {
        let Some(next) = self.shared.settle(self.partition, self.offset, self.epoch) else {
            return;
        };
        // The subscription may be gone, and with it the partition: nothing left to commit.
        if let Some(c) = self.consumer.upgrade() {
            self.shared
                .commit(&c, &[(self.partition, next)], CommitMode::Async);
        }
    }

    fn ack_now(&self) {
        if self.claim() {
            self.finish();
        }
    }

    async fn nack_now(&self, requeue: bool) -> Result<()> {
        if !self.claim() {
            return Ok(());
        }
        let shared = &self.shared;
        let block = shared.options.dead_letter == PoisonPolicy::Block;
        if requeue && (block || self.attempt < shared.options.max_redeliveries) {
            shared.requeue(Redelivery {
                due: Instant::now() + shared.backoff(self.attempt),
                partition: self.partition,
                offset: self.offset,
                epoch: self.epoch,
                attempt: self.attempt.saturating_add(1),
                message: self.message.clone(),
            });
            return Ok(());
        }
        if block {
            // The handler itself said not to deliver it again, and there is nowhere else to
            // put it.
            tracing::warn!(topic = %shared.topic, partition = self.partition, offset = self.offset, "message nacked without requeue and no dead-letter topic (policy block): dropped as the handler asked");
            self.finish();
            return Ok(());
        }
        let why = if requeue {
            format!("nacked by the handler {} times", self.attempt + 1)
        } else {
            "nacked by the handler without requeue".to_string()
        };
        let mut attempt = 0;
        loop {
            let made = shared
                .dead_letter(
                    &self.message,
                    self.partition,
                    self.offset,
                    self.attempt + 1,
                    &why,
                )
                .await;
            match made {
                Ok(()) => {
                    self.finish();
                    return Ok(());
                }
                Err(e) if shared.stopped() || self.consumer.strong_count() == 0 => {
                    // Unsettled: the next consumer of the partition gets it again.
                    return Err(e);
                }
                Err(e) => {
                    let wait = shared.backoff(attempt);
                    tracing::warn!(topic = %shared.topic, partition = self.partition, offset = self.offset, error = %e, "producing a dead letter failed; the message stays unsettled, trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

impl Acknowledger for KafkaAcker {
    fn ack(&self) -> BoxFuture<'_, Result<()>> {
        self.ack_now();
        Box::pin(async { Ok(()) })
    }

    fn nack(&self, requeue: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.nack_now(requeue))
    }
}

/// The consumer thread.
struct Runner {
    consumer: Arc<KafkaConsumer>,
    shared: Arc<Shared>,
    handler: Handler,
    auto_ack: bool,
    rt: Handle,
}

enum Outcome {
    Handled,
    Failed(String),
}

impl Runner {
    fn run(self) {
        let mut last_error: Option<(String, Instant)> = None;
        while !self.shared.stopped() {
            if !self.auto_ack {
                self.apply_window();
            }
            if let Some(r) = self.shared.take_due() {
                self.dispatch(r.message, r.partition, r.offset, r.epoch, r.attempt);
                continue;
            }
            match self.consumer.poll(self.shared.poll_wait()) {
                None => {}
                Some(Ok(m)) => {
                    if self.shared.stopped() {
                        // Unsettled, so the group hands it out again.
                        break;
                    }
                    let (partition, offset) = (m.partition(), m.offset());
                    let message = to_message(
                        &m,
                        self.shared.key_header.as_deref(),
                        self.shared.options.header_limits,
                    );
                    drop(m);
                    let epoch = self.shared.track(partition, offset);
                    match message {
                        Ok(message) => self.dispatch(message, partition, offset, epoch, 0),
                        Err(e) => {
                            tracing::warn!(topic = %self.shared.topic, partition, offset, error = %e, "skipped a record");
                            self.skip(partition, offset, epoch);
                        }
                    }
                }
                Some(Err(e)) => {
                    let fatal = matches!(e, KafkaError::MessageConsumptionFatal(_));
                    let text = e.to_string();
                    let repeat = last_error
                        .as_ref()
                        .is_some_and(|(t, at)| *t == text && at.elapsed() < ERROR_LOG_EVERY);
                    if fatal {
                        tracing::error!(topic = %self.shared.topic, brokers = %self.shared.brokers, error = %text, "the kafka consumer failed for good; the subscription ends");
                        break;
                    }
                    if !repeat {
                        tracing::warn!(topic = %self.shared.topic, brokers = %self.shared.brokers, error = %text, "kafka consumer error; retrying");
                        last_error = Some((text, Instant::now()));
                    }
                }
            }
        }
        self.shared.commit_all(&self.consumer);
        if self.shared.group_mode {
            self.leave_group();
        }
        // Dropping the last reference closes the consumer.
    }

    /// Gives the partitions up before closing (the revoke callback commits what was
    /// settled), so the close finds no assignment in flight and the other members take over
    /// at once. Messages fetched meanwhile are dropped unsettled: the group has them again.
    fn leave_group(&self) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + self.shared.options.operation_timeout;
        while Instant::now() < deadline {
            let idle = self.consumer.assignment().map_or(true, |a| a.count() == 0);
            if idle {
                return;
            }
            let _ = self.consumer.poll(Duration::from_millis(50));
        }
        tracing::warn!(topic = %self.shared.topic, brokers = %self.shared.brokers, "the consumer still had partitions when closing");
    }

    /// Manual ack: stop fetching while too many deliveries are unsettled.
    fn apply_window(&self) {
        let (full, paused) = {
            let s = self.shared.state();
            (s.unsettled >= self.shared.options.max_unacked, s.paused)
        };
        if full == paused {
            return;
        }
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let done = if full {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match done {
            Ok(()) => self.shared.state().paused = full,
            Err(e) => {
                tracing::warn!(topic = %self.shared.topic, error = %e, "pausing or resuming the consumer failed")
            }
        }
    }

    fn dispatch(&self, message: Message, partition: i32, offset: i64, epoch: u64, first: u32) {
        let mut attempt = first;
        loop {
            let acker = Arc::new(KafkaAcker {
                shared: self.shared.clone(),
                consumer: Arc::downgrade(&self.consumer),
                partition,
                offset,
                epoch,
                attempt,
                message: message.clone(),
                settled: AtomicBool::new(false),
            });
            let delivery = Delivery::new(
                self.shared.topic.clone(),
                message.clone(),
                Some(acker.clone() as Arc<dyn Acknowledger>),
            );
            let outcome = self.run_handler(delivery);
            if !self.auto_ack {
                if let Outcome::Failed(e) = outcome {
                    tracing::warn!(topic = %self.shared.topic, partition, offset, error = %e, "handler failed; the message stays unacked until the handler acks or nacks it");
                }
                return;
            }
            let error = match outcome {
                Outcome::Handled => {
                    acker.ack_now();
                    return;
                }
                Outcome::Failed(e) => e,
            };
            if !acker.claim() || self.shared.stopped() {
                // The handler settled it itself, or we are stopping: it stays unsettled and
                // the group hands it out again.
                return;
            }
            let block = self.shared.options.dead_letter == PoisonPolicy::Block;
            if attempt >= self.shared.options.max_redeliveries && !block {
                let failed = format!("the handler failed {} times: {error}", attempt + 1);
                if self.produce_dead_letter(&message, partition, offset, attempt + 1, &failed) {
                    acker.finish();
                }
                return;
            }
            let wait = self.shared.backoff(attempt);
            tracing::warn!(topic = %self.shared.topic, partition, offset, error = %error, attempt = attempt + 1, "handler failed; redelivering in {wait:?}");
            if !self.shared.pause_for(wait) {
                return;
            }
            attempt = attempt.saturating_add(1);
        }
    }

    /// Produces the dead letter, trying again (with the capped backoff) until the cluster has
    /// it; the partition waits meanwhile. False when the subscription stopped first: the
    /// message stays unsettled and its partition's next consumer gets it again.
    fn produce_dead_letter(
        &self,
        message: &Message,
        partition: i32,
        offset: i64,
        attempts: u32,
        error: &str,
    ) -> bool {
        let mut attempt = 0;
        while !self.shared.stopped() {
            let shared = self.shared.clone();
            let (message, error) = (message.clone(), error.to_string());
            let task = self.rt.spawn(async move {
                shared
                    .dead_letter(&message, partition, offset, attempts, &error)
                    .await
            });
            let e = match self.rt.block_on(task) {
                Ok(Ok(())) => return true,
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("the producing task failed: {e}"),
            };
            let wait = self.shared.backoff(attempt);
            tracing::warn!(topic = %self.shared.topic, partition, offset, error = %e, "producing a dead letter failed; the message stays unsettled and its partition waits, trying again in {wait:?}");
            if !self.shared.pause_for(wait) {
                break;
            }
            attempt += 1;
        }
        false
    }

    /// Settles a record no handler will see, so the group moves past it.
    fn skip(&self, partition: i32, offset: i64, epoch: u64) {
        if let Some(next) = self.shared.settle(partition, offset, epoch) {
            self.shared
                .commit(&self.consumer, &[(partition, next)], CommitMode::Async);
        }
    }

    /// Runs the handler on the subscriber's runtime and waits for it; a panic is a failure.
    fn run_handler(&self, delivery: Delivery) -> Outcome {
        let handler = self.handler.clone();
        let fut = match catch_unwind(AssertUnwindSafe(move || handler(delivery))) {
            Ok(f) => f,
            Err(_) => return Outcome::Failed("the handler panicked".into()),
        };
        let task = self.rt.spawn(fut);
        match self.rt.block_on(task) {
            Ok(Ok(())) => Outcome::Handled,
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(e) if e.is_panic() => Outcome::Failed("the handler panicked".into()),
            Err(_) => {
                // The runtime is shutting down: nothing can handle messages any more.
                self.shared.stop.store(true, Ordering::SeqCst);
                Outcome::Failed("the runtime shut down".into())
            }
        }
    }
}

/// A Kafka record as a Micro message: headers as text (invalid UTF-8 replaced, never a
/// panic), the body as it is, and the key in `key_header` when asked and not already there.
/// A record with more headers than `limits` allow is an error, found before any is read.
fn to_message(
    m: &BorrowedMessage<'_>,
    key_header: Option<&str>,
    limits: MetadataLimits,
) -> Result<Message> {
    // Names the record in the warning about a header name that is not UTF-8.
    let _record =
        tracing::warn_span!("kafka record", topic = m.topic(), offset = m.offset()).entered();
    record_message(m.headers(), m.key(), m.payload(), key_header, limits)
}

/// The message of a record's parts: its headers (values as UTF-8, invalid bytes replaced),
/// the record key under `key_header` when set and no header says it already, the payload.
pub(crate) fn record_message<H: Headers + ?Sized>(
    headers: Option<&H>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    key_header: Option<&str>,
    limits: MetadataLimits,
) -> Result<Message> {
    let mut header = limits.reader("a Kafka record");
    if let Some(hs) = headers {
        limits.check("a Kafka record", hs.count(), 0)?;
        for i in 0..hs.count() {
            // rdkafka panics on a header name that is not UTF-8; skip such a header.
            match catch_unwind(AssertUnwindSafe(|| hs.try_get(i))) {
                Ok(Some(h)) => header.push(h.key, text(h.value.unwrap_or_default()))?,
                Ok(None) => {}
                Err(_) => tracing::warn!("skipped a record header whose name is not UTF-8"),
            }
        }
    }
    let mut header = header.finish();
    if let (Some(name), Some(key)) = (key_header, key) {
        if !header.contains_key(name) {
            header.insert(name.to_string(), text(key));
        }
    }
    Ok(Message {
        header,
        body: Bytes::copy_from_slice(payload.unwrap_or_default()),
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
