//! librdkafka's log lines and error callbacks, sent to `tracing` with the client and cluster.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::ClientContext;

/// A client context that forwards librdkafka's logs to `tracing` (target `librdkafka`).
#[derive(Debug, Clone)]
pub(crate) struct LogContext {
    client: &'static str,
    brokers: String,
}

impl LogContext {
    pub(crate) fn new(client: &'static str, brokers: &str) -> Self {
        LogContext {
            client,
            brokers: brokers.to_string(),
        }
    }
}

pub(crate) fn forward(client: &str, brokers: &str, level: RDKafkaLogLevel, fac: &str, line: &str) {
    // librdkafka reports a broker that is down as an error on every reconnect attempt; it
    // recovers by itself, so such lines are warnings here, and our own errors say what failed.
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", client, brokers, facility = fac, "{line}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", client, brokers, facility = fac, "{line}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", client, brokers, facility = fac, "{line}")
        }
    }
}

pub(crate) fn forward_error(client: &str, brokers: &str, error: &KafkaError, reason: &str) {
    tracing::warn!(target: "librdkafka", client, brokers, error = %error, "{reason}");
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward(self.client, &self.brokers, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(self.client, &self.brokers, &error, reason);
    }
}
