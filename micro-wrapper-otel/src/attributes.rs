//! The span names and attributes, after OpenTelemetry's semantic conventions for RPC and
//! messaging.
//!
//! | span | name | kind | attributes |
//! |---|---|---|---|
//! | call | `{service}/{endpoint}` (`greeter/Greeter.Hello`) | `Client` | `rpc.system`, `rpc.service`, `rpc.method`, `server.address`/`server.port` when the call names an address |
//! | attempt | the same | `Client` | the same, `server.address`/`server.port` of the node tried, `micro.attempt` (0 first), `micro.node.id` |
//! | handler | the same | `Server` | `rpc.system`, `rpc.service`, `rpc.method` |
//! | publish | `publish {topic}` | `Producer` | `messaging.system`, `messaging.destination.name`, `messaging.operation.type` = `send`, `messaging.operation.name` = `publish`, `messaging.message.id` (`Micro-Id`), `messaging.message.body.size` |
//! | delivery | `process {topic}` | `Consumer` | the same with `messaging.operation.type` = `process` |
//!
//! `rpc.system` is `micro` (Go Micro's `mucp`), or `grpc` for an attempt on a node that
//! registered the gRPC protocol (and for handlers when [`Tracing::rpc_system`] says so).
//!
//! Outcome: every RPC span records the Micro error code as `rpc.micro.status_code` (200 on
//! success), or the gRPC code as `rpc.grpc.status_code` when `rpc.system` is `grpc`. A failed
//! call sets `error.type` to the code (`"500"`), or `unreachable` when an attempt could not
//! reach its node, or `cancelled` when the span's future was dropped (the deadline passed).
//! Span status is `Error` (with the error's text) on client, attempt, publish and delivery
//! spans for any error; on handler spans only for server faults (code 5xx or not an HTTP
//! code), as the conventions ask: a 4xx is the caller's mistake, not the server's.
//!
//! [`Tracing::rpc_system`]: crate::Tracing::rpc_system

use micro_core::Error;
use opentelemetry::trace::{SpanRef, Status};
use opentelemetry::KeyValue;

/// `rpc.system` / `messaging.system` for Micro's own protocol and brokers.
pub const SYSTEM_MICRO: &str = "micro";
/// `rpc.system` on the gRPC transport.
pub const SYSTEM_GRPC: &str = "grpc";

/// The RPC system: `micro` or `grpc`.
pub const RPC_SYSTEM: &str = "rpc.system";
/// The called service (`greeter`).
pub const RPC_SERVICE: &str = "rpc.service";
/// The called endpoint (`Greeter.Hello`).
pub const RPC_METHOD: &str = "rpc.method";
/// The Micro error code of the outcome, 200 on success.
pub const RPC_MICRO_STATUS_CODE: &str = "rpc.micro.status_code";
/// The gRPC status code of the outcome, 0 on success.
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
/// The host of the node called.
pub const SERVER_ADDRESS: &str = "server.address";
/// The port of the node called.
pub const SERVER_PORT: &str = "server.port";
/// What kind of failure: the error code, `unreachable` or `cancelled`.
pub const ERROR_TYPE: &str = "error.type";
/// Which try of the call an attempt span is: 0 for the first, 1 for the first retry.
pub const MICRO_ATTEMPT: &str = "micro.attempt";
/// The registry id of the node an attempt went to.
pub const MICRO_NODE_ID: &str = "micro.node.id";

/// The messaging system: `micro` or the broker's name.
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// The topic.
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
/// `send` for a publish, `process` for a delivery.
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// `publish` or `process`.
pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
/// The message's `Micro-Id`.
pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
/// The size of the encoded message body in bytes.
pub const MESSAGING_MESSAGE_BODY_SIZE: &str = "messaging.message.body.size";

/// `error.type` of an attempt whose node could not be reached.
pub const UNREACHABLE: &str = "unreachable";
/// `error.type` of a span whose future was dropped before it finished.
pub const CANCELLED: &str = "cancelled";

/// The span name of a call to `endpoint` of `service`.
pub(crate) fn rpc_span_name(service: &str, endpoint: &str) -> String {
    format!("{service}/{endpoint}")
}

/// The attributes every RPC span starts with.
pub(crate) fn rpc(system: &str, service: &str, endpoint: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new(RPC_SYSTEM, system.to_string()),
        KeyValue::new(RPC_SERVICE, service.to_string()),
        KeyValue::new(RPC_METHOD, endpoint.to_string()),
    ]
}

/// `server.address` and `server.port` of a `host:port` (`[::1]:8080` too).
pub(crate) fn server(address: &str) -> Vec<KeyValue> {
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            (host, port.parse::<i64>().ok())
        }
        _ => (address, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut out = vec![KeyValue::new(SERVER_ADDRESS, host.to_string())];
    if let Some(port) = port {
        out.push(KeyValue::new(SERVER_PORT, port));
    }
    out
}

/// Who is to blame for a failure, which decides the span status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Client, attempt, publish and delivery spans: every error is an error.
    Caller,
    /// Handler spans: only server faults are.
    Server,
}

/// Records the outcome of an RPC span.
pub(crate) fn rpc_outcome(span: &SpanRef<'_>, system: &str, side: Side, error: Option<&Error>) {
    let grpc = system == SYSTEM_GRPC;
    match error {
        None => {
            span.set_attribute(match grpc {
                true => KeyValue::new(RPC_GRPC_STATUS_CODE, 0_i64),
                false => KeyValue::new(RPC_MICRO_STATUS_CODE, 200_i64),
            });
        }
        Some(e) => {
            span.set_attribute(match grpc {
                true => KeyValue::new(RPC_GRPC_STATUS_CODE, e.grpc_code() as i64),
                false => KeyValue::new(RPC_MICRO_STATUS_CODE, i64::from(e.code)),
            });
            failed(span, side, e, e.code.to_string());
        }
    }
}

/// Records a failure: `error.type` and, when `side` counts it as an error, the status.
pub(crate) fn failed(span: &SpanRef<'_>, side: Side, e: &Error, kind: String) {
    span.set_attribute(KeyValue::new(ERROR_TYPE, kind));
    let server_fault = !(400..500).contains(&e.code);
    if side == Side::Caller || server_fault {
        span.set_status(Status::error(e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(kvs: Vec<KeyValue>) -> Vec<(String, String)> {
        kvs.into_iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect()
    }

    #[test]
    fn server_address_splits_host_and_port() {
        assert_eq!(
            pairs(server("127.0.0.1:8080")),
            [
                ("server.address".to_string(), "127.0.0.1".to_string()),
                ("server.port".to_string(), "8080".to_string())
            ]
        );
        assert_eq!(pairs(server("[::1]:9"))[0].1, "::1");
        assert_eq!(
            pairs(server("unix-socket")),
            [("server.address".to_string(), "unix-socket".to_string())]
        );
    }
}
