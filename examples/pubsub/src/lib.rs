//! The pub/sub example's shared parts: the event type, the topic and logging.

use serde::{Deserialize, Serialize};

/// The event the publisher sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Greeting {
    /// Its number, counting from 1.
    pub id: u64,
    /// Some text.
    pub text: String,
}

/// The topic both sides use unless told otherwise.
pub const TOPIC: &str = "example.greetings";

/// Logs to stderr, `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    micro::log_to_stderr();
}
