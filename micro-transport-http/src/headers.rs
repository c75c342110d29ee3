//! Message headers to HTTP headers and back.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use micro_core::headers::is_protocol;
use micro_core::{rpc, Error, Metadata, Result};

use crate::ID;

/// Headers that describe one HTTP connection or message framing rather than the Micro message,
/// so they never become message headers and message headers never overwrite them.
const TRANSPORT_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "user-agent",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

fn is_transport_header(name: &str) -> bool {
    TRANSPORT_HEADERS
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// The message header carried by an HTTP head. Names are put in Go's canonical form
/// (`Micro-Endpoint`), as a Go Micro handler would see them; the first value of a repeated header
/// wins, as in Go Micro.
pub(crate) fn to_metadata(headers: &HeaderMap) -> Metadata {
    let mut md = Metadata::with_capacity(headers.keys_len());
    for name in headers.keys() {
        if is_transport_header(name.as_str()) {
            continue;
        }
        if let Some(value) = headers.get(name) {
            md.insert(
                canonical(name.as_str()),
                String::from_utf8_lossy(value.as_bytes()),
            );
        }
    }
    md
}

/// The HTTP headers for a message header; `what` ("request", "reply") names the message in
/// errors.
pub(crate) fn to_header_map(md: &Metadata, what: &str) -> Result<HeaderMap> {
    let mut map = HeaderMap::with_capacity(md.len());
    for (key, value) in md.iter() {
        if is_transport_header(key) {
            continue;
        }
        let (name, value) = pair(key, value, what)?;
        map.insert(name, value);
    }
    Ok(map)
}

/// The HTTP head of a unary request, written straight from the request: its metadata, then
/// Go Micro's `Micro-Id`, `Micro-Service`, `Micro-Endpoint`, `Micro-Method`, `Content-Type`,
/// `Accept` and `Timeout` (decimal nanoseconds) from the typed fields.
pub(crate) fn request_head(req: &rpc::Request, timeout: Duration) -> Result<HeaderMap> {
    let mut map = HeaderMap::with_capacity(req.metadata.len() + 7);
    for (key, value) in req.metadata.iter() {
        // The request's own fields say these; metadata cannot override them.
        if is_transport_header(key) || is_protocol(key) {
            continue;
        }
        let (name, value) = pair(key, value, "request")?;
        map.insert(name, value);
    }
    let timeout = timeout.as_nanos().to_string();
    for (name, value) in [
        ("micro-id", req.id.as_str()),
        ("micro-service", &req.service),
        ("micro-endpoint", &req.endpoint),
        ("micro-method", &req.endpoint),
        ("content-type", &req.content_type),
        ("accept", &req.content_type),
        ("timeout", &timeout),
    ] {
        let value = HeaderValue::from_str(value).map_err(|_| {
            Error::bad_request(
                ID,
                format!("the request's {name} {value:?} cannot travel in an HTTP header"),
            )
        })?;
        map.insert(HeaderName::from_static(name), value);
    }
    Ok(map)
}

/// A reply's metadata: its headers less the protocol's and the connection's.
pub(crate) fn reply_metadata(headers: &HeaderMap) -> Metadata {
    let mut md = Metadata::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let name = name.as_str();
        if is_transport_header(name) || is_protocol(name) {
            continue;
        }
        if let Some(value) = headers.get(name) {
            md.insert(canonical(name), String::from_utf8_lossy(value.as_bytes()));
        }
    }
    md
}

fn pair(key: &str, value: &str, what: &str) -> Result<(HeaderName, HeaderValue)> {
    let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
        Error::bad_request(
            ID,
            format!("{what} header name {key:?} is not a valid HTTP header name"),
        )
    })?;
    let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
        Error::bad_request(
            ID,
            format!(
                "{what} header {key} has a value that cannot travel in HTTP (control characters?)"
            ),
        )
    })?;
    Ok((name, value))
}

/// Whether an HTTP head opens a stream: it carries `Micro-Stream` (or `X-Micro-Stream`).
pub(crate) fn is_stream(headers: &HeaderMap) -> bool {
    headers.contains_key("micro-stream") || headers.contains_key("x-micro-stream")
}

/// The `Micro-Error` a peer sent, if any, in either spelling.
pub(crate) fn micro_error(headers: &HeaderMap) -> Option<Error> {
    let value = headers
        .get("micro-error")
        .or_else(|| headers.get("x-micro-error"))?;
    Some(Error::parse(&String::from_utf8_lossy(value.as_bytes())))
}

/// Go's canonical header key: `micro-endpoint` -> `Micro-Endpoint`.
fn canonical(lower: &str) -> String {
    let mut out = String::with_capacity(lower.len());
    let mut upper = true;
    for c in lower.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_headers_stay_out_and_names_are_canonical() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        h.insert("content-length", HeaderValue::from_static("15"));
        h.insert("user-agent", HeaderValue::from_static("Go-http-client/1.1"));
        h.insert("micro-endpoint", HeaderValue::from_static("Greeter.Hello"));
        h.insert("x-micro-service", HeaderValue::from_static("greeter"));
        h.append("trace-id", HeaderValue::from_static("t-1"));
        h.append("trace-id", HeaderValue::from_static("t-2"));
        let md = to_metadata(&h);
        assert_eq!(md.len(), 3);
        let keys: Vec<&str> = md.iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&"Micro-Endpoint"), "{keys:?}");
        assert!(keys.contains(&"X-Micro-Service"), "{keys:?}");
        assert_eq!(md.get("trace-id"), Some("t-1"));
    }

    #[test]
    fn bad_header_names_are_errors() {
        let md: Metadata = [("Bad Name", "x")].into_iter().collect();
        let e = to_header_map(&md, "request").err().unwrap_or_default();
        assert_eq!(e.code, 400);
        assert!(e.detail.contains("Bad Name"), "{e}");
        let md: Metadata = [("Content-Length", "99"), ("Micro-Id", "1")]
            .into_iter()
            .collect();
        let h = to_header_map(&md, "request").unwrap_or_default();
        assert_eq!(h.len(), 1);
    }
}
