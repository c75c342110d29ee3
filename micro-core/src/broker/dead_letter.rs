//! Dead letters: what a broker plugin does with a message whose handler keeps failing, and the
//! headers that tell whoever reads a dead letter why it is there.
//!
//! A broker with redelivery never drops a message silently. Once a message has used up its
//! delivery budget it is either published to a dead-letter destination (a topic, subject or
//! exchange, [`PoisonPolicy::DeadLetter`], the default) and only then settled, or it is kept
//! and redelivered for as long as it fails ([`PoisonPolicy::Block`]), holding back what comes
//! after it where the backend keeps order.
//!
//! A dead letter is the original message, headers and body untouched, plus the headers below.

use super::Message;
use crate::{env, Result};

/// The last error of the handler (or why the message could not be handled), one line, at most
/// [`MAX_ERROR_BYTES`].
pub const ERROR_HEADER: &str = "Micro-Dead-Letter-Error";
/// How many times the message was delivered before it was given up.
pub const ATTEMPTS_HEADER: &str = "Micro-Dead-Letter-Attempts";
/// The topic the message was published to.
pub const TOPIC_HEADER: &str = "Micro-Dead-Letter-Topic";
/// The queue group that gave it up, when there was one.
pub const QUEUE_HEADER: &str = "Micro-Dead-Letter-Queue";
/// Where the message was in the backend, in the backend's own terms: Kafka's partition, ...
pub const PARTITION_HEADER: &str = "Micro-Dead-Letter-Partition";
/// ... Kafka's offset, ...
pub const OFFSET_HEADER: &str = "Micro-Dead-Letter-Offset";
/// ... a JetStream stream, ...
pub const STREAM_HEADER: &str = "Micro-Dead-Letter-Stream";
/// ... and the message's sequence number in that stream.
pub const SEQUENCE_HEADER: &str = "Micro-Dead-Letter-Sequence";

/// The longest error text a dead letter carries; longer ones are cut (on a character boundary).
pub const MAX_ERROR_BYTES: usize = 1024;

/// The dead-letter destination used when none is configured: `{topic}` is replaced by the
/// topic the message came from, so `orders` dead-letters to `orders.dlq`.
pub const DEFAULT_PATTERN: &str = "{topic}.dlq";

/// What a subscription does with a message that failed its whole delivery budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoisonPolicy {
    /// Publish it to the destination this pattern names (`{topic}` is the message's topic),
    /// wait until the backend has it, then settle the original. If the publish fails, the
    /// original stays unsettled and the publish is tried again.
    DeadLetter(String),
    /// Keep redelivering it (with the capped backoff) until a handler takes it: it is never
    /// settled by the broker, and where the backend keeps order nothing after it is delivered.
    Block,
}

impl Default for PoisonPolicy {
    fn default() -> Self {
        PoisonPolicy::DeadLetter(DEFAULT_PATTERN.to_string())
    }
}

impl PoisonPolicy {
    /// The policy written in an environment variable: `block`, or a dead-letter pattern such as
    /// `{topic}.dlq` or `dead-letters`. `id` and `var` name who reads it in the error.
    pub fn from_setting(id: &str, var: &str, value: &str) -> Result<Self> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("block") {
            return Ok(PoisonPolicy::Block);
        }
        if value.is_empty() || value.eq_ignore_ascii_case("off") || value == "{topic}" {
            return Err(env::invalid_from(
                id,
                var,
                value,
                "`block`, or where dead letters go, such as `{topic}.dlq`",
            ));
        }
        Ok(PoisonPolicy::DeadLetter(value.to_string()))
    }

    /// Where dead letters of `topic` go; `None` under [`PoisonPolicy::Block`].
    pub fn destination(&self, topic: &str) -> Option<String> {
        match self {
            PoisonPolicy::DeadLetter(pattern) => Some(pattern.replace("{topic}", topic)),
            PoisonPolicy::Block => None,
        }
    }
}

/// Why a message is being given up.
#[derive(Debug, Clone, Copy)]
pub struct Reason<'a> {
    /// The topic it was published to.
    pub topic: &'a str,
    /// The queue group that gave it up, if any.
    pub queue: Option<&'a str>,
    /// The handler's last error.
    pub error: &'a str,
    /// Deliveries so far.
    pub attempts: u64,
}

/// The dead letter of `original`: its headers and body, plus the reason headers. A header of
/// the original with one of those names is replaced (a dead letter that is dead-lettered again
/// says why it died the second time).
pub fn letter(original: &Message, reason: Reason<'_>) -> Message {
    let mut out = original.clone();
    out.header.insert(ERROR_HEADER, one_line(reason.error));
    out.header
        .insert(ATTEMPTS_HEADER, reason.attempts.to_string());
    out.header.insert(TOPIC_HEADER, reason.topic);
    match reason.queue {
        Some(q) => {
            out.header.insert(QUEUE_HEADER, q);
        }
        None => {
            out.header.remove(QUEUE_HEADER);
        }
    }
    out
}

/// `text` as a header value every backend can carry: control characters (CR, LF, ...) become
/// spaces, and it is cut to [`MAX_ERROR_BYTES`].
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_BYTES));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_ERROR_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        let p = |v| PoisonPolicy::from_setting("t", "VAR", v);
        assert_eq!(p("block").expect("block"), PoisonPolicy::Block);
        assert_eq!(
            p(" {topic}.dead ").expect("pattern"),
            PoisonPolicy::DeadLetter("{topic}.dead".into())
        );
        for bad in ["", "off", "{topic}"] {
            let e = p(bad).expect_err(bad);
            assert!(e.detail.contains("VAR"), "{e}");
        }
        assert_eq!(
            PoisonPolicy::default().destination("orders").as_deref(),
            Some("orders.dlq")
        );
        assert_eq!(
            PoisonPolicy::DeadLetter("dead".into())
                .destination("orders")
                .as_deref(),
            Some("dead")
        );
        assert_eq!(PoisonPolicy::Block.destination("orders"), None);
    }

    #[test]
    fn letters_keep_the_original_and_say_why() {
        let mut m = Message {
            body: "b".into(),
            ..Default::default()
        };
        m.header.insert("Micro-Id", "1");
        m.header.insert(QUEUE_HEADER, "old");
        let long = format!("line one\r\nline two {}", "é".repeat(2000));
        let d = letter(
            &m,
            Reason {
                topic: "orders",
                queue: None,
                error: &long,
                attempts: 3,
            },
        );
        assert_eq!(d.body, m.body);
        assert_eq!(d.header.get("Micro-Id"), Some("1"));
        assert_eq!(d.header.get(ATTEMPTS_HEADER), Some("3"));
        assert_eq!(d.header.get(TOPIC_HEADER), Some("orders"));
        assert_eq!(d.header.get(QUEUE_HEADER), None);
        let e = d.header.get(ERROR_HEADER).expect("error");
        assert!(e.starts_with("line one  line two"), "{e}");
        assert!(e.len() <= MAX_ERROR_BYTES);
    }
}
