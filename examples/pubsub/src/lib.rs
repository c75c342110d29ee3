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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
