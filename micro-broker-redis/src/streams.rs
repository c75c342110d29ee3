//! Streams mode: one stream per topic, a consumer group per queue group (and per subscriber
//! without one), acks with `XACK`, redelivery of nacked messages and of deliveries left
//! unacknowledged past the visibility timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_core::broker::{Acknowledger, Delivery, Handler};
use micro_core::{BoxFuture, MetadataLimits, Result};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Value};
use tokio_util::sync::CancellationToken;

use crate::broker::{call_handler, pause, unavailable, Backoff};
use crate::options::StreamOptions;
use crate::wire;

/// The stream entry field that holds the message: Go Micro's JSON envelope, as pub/sub mode
/// publishes it.
pub(crate) const FIELD: &str = "message";

/// One subscriber in streams mode.
pub(crate) struct StreamSub {
    pub(crate) client: redis::Client,
    pub(crate) cmd: ConnectionManager,
    pub(crate) label: String,
    pub(crate) topic: String,
    pub(crate) key: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
    /// The group is this subscriber's alone (no queue group): destroyed when it ends.
    pub(crate) own_group: bool,
    pub(crate) handler: Handler,
    pub(crate) auto_ack: bool,
    pub(crate) opts: StreamOptions,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) limits: MetadataLimits,
    pub(crate) token: CancellationToken,
}

/// An entry read from the stream: its id and its fields.
struct Entry {
    id: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A nacked delivery waiting to be delivered again.
struct Retry {
    id: String,
    /// The delivery it will be.
    attempt: u32,
    due: Instant,
}

/// What acks and nacks need, shared by the loop and every delivery's acknowledger.
struct Settle {
    cmd: ConnectionManager,
    label: String,
    key: String,
    group: String,
    nack_delay: Duration,
    max_deliver: u32,
    retries: Mutex<VecDeque<Retry>>,
}

impl Settle {
    async fn xack(&self, id: &str) -> Result<()> {
        let mut cmd = self.cmd.clone();
        redis::cmd("XACK")
            .arg(&self.key)
            .arg(&self.group)
            .arg(id)
            .query_async::<i64>(&mut cmd)
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&self.label, format!("XACK {} {id}: {e}", self.key)))
    }

    fn retries(&self) -> std::sync::MutexGuard<'_, VecDeque<Retry>> {
        self.retries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The retries that are due, taken off the queue.
    fn due(&self, now: Instant) -> Vec<Retry> {
        let mut queue = self.retries();
        let mut due = Vec::new();
        queue.retain_mut(|r| {
            if r.due <= now {
                due.push(Retry {
                    id: std::mem::take(&mut r.id),
                    attempt: r.attempt,
                    due: r.due,
                });
                false
            } else {
                true
            }
        });
        due
    }
}

/// Settles one delivery; the first ack or nack wins.
struct StreamAcker {
    settle: Arc<Settle>,
    id: String,
    attempt: u32,
    settled: AtomicBool,
}

impl std::fmt::Debug for StreamAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamAcker")
            .field("stream", &self.settle.key)
            .field("group", &self.settle.group)
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Acknowledger for StreamAcker {
    fn ack(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.settled.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            self.settle.xack(&self.id).await
        })
    }

    fn nack(&self, requeue: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.settled.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            let s = &self.settle;
            if !requeue {
                return s.xack(&self.id).await;
            }
            if self.attempt >= s.max_deliver {
                tracing::warn!(stream = %s.key, group = %s.group, id = %self.id, "{}: giving up a message after {} deliveries (MICRO_REDIS_MAX_DELIVER)", s.label, self.attempt);
                return s.xack(&self.id).await;
            }
            // Still pending for this consumer: the loop claims it again once due.
            s.retries().push_back(Retry {
                id: self.id.clone(),
                attempt: self.attempt.saturating_add(1),
                due: Instant::now() + s.nack_delay,
            });
            Ok(())
        })
    }
}

impl StreamSub {
    /// Makes the group (reading what is published from now on) and the connection the
    /// subscriber reads on. Once this returns, what anyone publishes reaches the group.
    pub(crate) async fn start(&self) -> Result<MultiplexedConnection> {
        let mut cmd = self.cmd.clone();
        create_group(&mut cmd, &self.key, &self.group)
            .await
            .map_err(|e| {
                unavailable(
                    &self.label,
                    format!(
                        "creating consumer group {} on {}: {e}",
                        self.group, self.key
                    ),
                )
            })?;
        self.reader()
            .await
            .map_err(|e| unavailable(&self.label, format!("subscribing to {:?}: {e}", self.topic)))
    }

    /// A connection of its own for the blocking reads, which would hold up every other
    /// command on a shared one.
    async fn reader(&self) -> std::result::Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.opts.block + self.connect_timeout));
        let made = tokio::time::timeout(
            self.connect_timeout + Duration::from_secs(1),
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match made {
            Err(_) => Err(format!("no connection within {:?}", self.connect_timeout)),
            Ok(r) => r.map_err(|e| e.to_string()),
        }
    }

    /// Reads and delivers until cancelled: due retries first, then deliveries other members
    /// left unacknowledged past the visibility timeout, then new entries.
    pub(crate) async fn run(self, mut reader: MultiplexedConnection) {
        let settle = Arc::new(Settle {
            cmd: self.cmd.clone(),
            label: self.label.clone(),
            key: self.key.clone(),
            group: self.group.clone(),
            nack_delay: self.opts.nack_delay,
            max_deliver: self.opts.max_deliver,
            retries: Mutex::new(VecDeque::new()),
        });
        let mut backoff = Backoff::default();
        let reclaim_every = (self.opts.visibility_timeout / 2).max(Duration::from_millis(100));
        let mut last_reclaim = Instant::now();
        let block_ms = u64::try_from(self.opts.block.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        loop {
            if self.token.is_cancelled() {
                break;
            }
            for retry in settle.due(Instant::now()) {
                let claimed = self.claim(&[retry.id.as_str()], 0).await;
                for entry in claimed.unwrap_or_default() {
                    self.deliver(&settle, entry, retry.attempt).await;
                }
            }
            if last_reclaim.elapsed() >= reclaim_every {
                last_reclaim = Instant::now();
                self.reclaim(&settle).await;
            }
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(self.opts.batch)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(">");
            let got = tokio::select! {
                biased;
                _ = self.token.cancelled() => break,
                got = read.query_async::<Value>(&mut reader) => got,
            };
            match got {
                Ok(reply) => {
                    backoff.reset();
                    for entry in stream_entries(reply) {
                        if self.token.is_cancelled() {
                            break;
                        }
                        self.deliver(&settle, entry, 1).await;
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    if self.token.is_cancelled() {
                        break;
                    }
                    // The stream or the group was deleted (by hand, or FLUSHALL): make it again.
                    tracing::warn!(stream = %self.key, group = %self.group, "{}: the consumer group is gone; making it again", self.label);
                    let mut cmd = self.cmd.clone();
                    if let Err(e) = create_group(&mut cmd, &self.key, &self.group).await {
                        tracing::warn!(error = %e, "{}: making the consumer group", self.label);
                        if !pause(&self.token, backoff.next_delay()).await {
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(stream = %self.key, error = %e, "{}: reading the stream; connecting again", self.label);
                    if !pause(&self.token, backoff.next_delay()).await {
                        break;
                    }
                    match self.reader().await {
                        Ok(r) => reader = r,
                        Err(e) => tracing::warn!(error = %e, "{}: connecting again", self.label),
                    }
                }
            }
        }
        if !self.own_group {
            self.leave().await;
        }
    }

    /// Hands one entry to the handler and settles it as the subscription asks.
    async fn deliver(&self, settle: &Arc<Settle>, entry: Entry, attempt: u32) {
        let payload = entry
            .fields
            .iter()
            .find(|(k, _)| k == FIELD.as_bytes())
            .map(|(_, v)| v.as_slice());
        let message = match payload {
            None => Err(format!("the entry has no {FIELD:?} field")),
            Some(p) if p.len() > self.max_message_size => Err(format!(
                "{} bytes, more than the {} allowed (MICRO_REDIS_MAX_MESSAGE_SIZE)",
                p.len(),
                self.max_message_size
            )),
            Some(p) => wire::decode(p, self.limits).map_err(|e| e.detail),
        };
        let message = match message {
            Ok(m) => m,
            Err(why) => {
                // Acked, so that it does not come back for ever.
                tracing::warn!(stream = %self.key, id = %entry.id, "{}: dropped an entry: {why}", self.label);
                if let Err(e) = settle.xack(&entry.id).await {
                    tracing::warn!(error = %e, "dropping an entry");
                }
                return;
            }
        };
        let acker = Arc::new(StreamAcker {
            settle: settle.clone(),
            id: entry.id,
            attempt,
            settled: AtomicBool::new(false),
        });
        let delivery = Delivery::new(self.topic.as_str(), message, Some(acker.clone()));
        let handled = call_handler(&self.handler, delivery).await;
        let settled = match handled {
            Ok(()) if self.auto_ack => acker.ack().await,
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "subscriber failed; the message will be delivered again");
                // Under manual ack too: what the handler left unsettled comes back.
                acker.nack(true).await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(topic = %self.topic, error = %e, "settling a delivery; unacknowledged, it is delivered again after the visibility timeout");
        }
    }

    /// `XCLAIM` of `ids` for this consumer, if idle at least `min_idle_ms`; the entries that
    /// still exist.
    async fn claim(&self, ids: &[&str], min_idle_ms: u64) -> Option<Vec<Entry>> {
        let mut cmd = self.cmd.clone();
        let claimed = redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(min_idle_ms)
            .arg(ids)
            .query_async::<Value>(&mut cmd)
            .await;
        match claimed {
            Ok(reply) => Some(entries(reply)),
            Err(e) => {
                tracing::warn!(stream = %self.key, error = %e, "{}: claiming pending messages", self.label);
                None
            }
        }
    }

    /// Takes over deliveries that stayed unacknowledged past the visibility timeout (their
    /// subscriber died or hangs), giving up those delivered `max_deliver` times.
    async fn reclaim(&self, settle: &Arc<Settle>) {
        let idle_ms = u64::try_from(self.opts.visibility_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = self.cmd.clone();
        let pending = redis::cmd("XPENDING")
            .arg(&self.key)
            .arg(&self.group)
            .arg("IDLE")
            .arg(idle_ms)
            .arg("-")
            .arg("+")
            .arg(self.opts.batch)
            .query_async::<Value>(&mut cmd)
            .await;
        let pending = match pending {
            Ok(Value::Array(rows)) => rows,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(stream = %self.key, error = %e, "{}: listing pending messages", self.label);
                return;
            }
        };
        let mut take = Vec::new();
        let mut deliveries = std::collections::HashMap::new();
        for row in pending {
            let Value::Array(cols) = row else { continue };
            let (Some(id), Some(count)) = (cols.first().and_then(text), cols.get(3).and_then(int))
            else {
                continue;
            };
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            if count >= self.opts.max_deliver {
                tracing::warn!(stream = %self.key, group = %self.group, id = %id, "{}: giving up a message after {count} deliveries (MICRO_REDIS_MAX_DELIVER)", self.label);
                if let Err(e) = settle.xack(&id).await {
                    tracing::warn!(error = %e, "giving up a message");
                }
                continue;
            }
            deliveries.insert(id.clone(), count);
            take.push(id);
        }
        if take.is_empty() {
            return;
        }
        let ids: Vec<&str> = take.iter().map(String::as_str).collect();
        for entry in self.claim(&ids, idle_ms).await.unwrap_or_default() {
            let attempt = deliveries
                .get(&entry.id)
                .map_or(1, |n: &u32| n.saturating_add(1));
            if self.token.is_cancelled() {
                break;
            }
            self.deliver(settle, entry, attempt).await;
        }
    }

    /// A queue-group member leaving: its consumer is removed when it holds nothing pending
    /// (removing it would lose those; the other members claim them after the visibility
    /// timeout instead).
    async fn leave(&self) {
        let mut cmd = self.cmd.clone();
        let pending = redis::cmd("XPENDING")
            .arg(&self.key)
            .arg(&self.group)
            .arg("-")
            .arg("+")
            .arg(1)
            .arg(&self.consumer)
            .query_async::<Value>(&mut cmd)
            .await;
        if matches!(pending, Ok(Value::Array(ref rows)) if rows.is_empty()) {
            let _ = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&self.key)
                .arg(&self.group)
                .arg(&self.consumer)
                .query_async::<i64>(&mut cmd)
                .await;
        }
    }
}

/// `XGROUP CREATE <key> <group> $ MKSTREAM`; a group that exists already is fine.
async fn create_group(
    cmd: &mut ConnectionManager,
    key: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let made = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(cmd)
        .await;
    match made {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// The entries of an `XREADGROUP` reply (one stream): `[[key, [entry, ...]]]`, or a map
/// under RESP3; nothing for a timeout (nil) or any other shape.
fn stream_entries(reply: Value) -> Vec<Entry> {
    let per_stream = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect::<Vec<_>>(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    per_stream.into_iter().flat_map(entries).collect()
}

/// `[[id, [field, value, ...]], ...]`: entries deleted meanwhile (nil) are skipped.
fn entries(reply: Value) -> Vec<Entry> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = text(parts.first()?)?;
            let fields = match fields {
                Value::Array(flat) => {
                    let mut pairs = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((bytes(k), bytes(v)));
                    }
                    pairs
                }
                Value::Map(map) => map.into_iter().map(|(k, v)| (bytes(k), bytes(v))).collect(),
                _ => Vec::new(),
            };
            Some(Entry { id, fields })
        })
        .collect()
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        _ => Vec::new(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_entries_of_any_shape_without_panicking() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("micro:stream:t"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("message"), bulk("{}")]),
                ]),
                Value::Nil,
                Value::Array(vec![bulk("2-0"), Value::Array(vec![bulk("odd")])]),
                Value::Int(7),
            ]),
        ])]);
        let got = stream_entries(reply);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "1-0");
        assert_eq!(got[0].fields, vec![(b"message".to_vec(), b"{}".to_vec())]);
        assert_eq!(got[1].id, "2-0");
        assert!(got[1].fields.is_empty());
        assert!(stream_entries(Value::Nil).is_empty());
        assert!(stream_entries(Value::Int(1)).is_empty());
    }
}
