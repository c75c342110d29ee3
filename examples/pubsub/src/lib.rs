//! The pub/sub example's shared parts: the event type and argument parsing.

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

/// Reads `--name value` / `--name=value` flags from what Micro's own flags left over.
pub fn flags(rest: Vec<String>, known: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                (flag.to_string(), v)
            }
        };
        if !known.contains(&name.as_str()) {
            return Err(format!(
                "unknown flag --{name}; known: --{}",
                known.join(", --")
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

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
