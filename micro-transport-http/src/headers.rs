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

/// The typed request an HTTP request head carries, read in one pass: Go Micro's `Micro-Id`,
/// `Micro-Service`, `Micro-Endpoint` (or `Micro-Method`), `Content-Type` and `Timeout` (decimal
/// nanoseconds) as fields, the plain names over their `X-` forms; every other header that is
/// neither the protocol's nor the connection's as metadata, named in Go's canonical form.
pub(crate) fn request_of(
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<(rpc::Request, Option<Duration>)> {
    let mut req = rpc::Request {
        body,
        metadata: Metadata::with_capacity(headers.keys_len()),
        ..rpc::Request::default()
    };
    // Per field: the value, and whether it came in the plain form (which wins).
    let mut fields: [(Option<&str>, bool); 6] = [(None, false); 6];
    const NAMES: [&str; 6] = [
        "micro-id",
        "micro-service",
        "micro-endpoint",
        "micro-method",
        "content-type",
        "timeout",
    ];
    for (name, value) in headers {
        let name = name.as_str();
        let (bare, plain) = match name.strip_prefix("x-") {
            Some(bare) if bare.starts_with("micro-") => (bare, false),
            _ => (name, true),
        };
        if let Some(i) = NAMES.iter().position(|n| *n == bare) {
            let taken = fields[i].0.is_some() && (fields[i].1 || !plain);
            if !taken {
                fields[i] = (value.to_str().ok(), plain);
            }
            continue;
        }
        if is_transport_header(name) || is_protocol(name) {
            continue;
        }
        // The first value of a repeated header wins, as in Go Micro.
        let key = canonical(name);
        if !req.metadata.contains_key(&key) {
            req.metadata
                .insert(key, String::from_utf8_lossy(value.as_bytes()));
        }
    }
    let text = |i: usize| fields[i].0.unwrap_or_default().to_string();
    req.id = text(0);
    req.service = text(1);
    req.endpoint = match fields[2].0.filter(|e| !e.is_empty()) {
        Some(endpoint) => endpoint.to_string(),
        None => text(3),
    };
    req.content_type = text(4);
    let timeout = match fields[5].0.map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(ns) => Some(Duration::from_nanos(ns.parse().map_err(|_| {
            Error::bad_request(
                ID,
                format!("Timeout header {ns:?} is not a number of nanoseconds"),
            )
        })?)),
    };
    Ok((req, timeout))
}

/// The head of a unary reply: the request's `Micro-Id`, `Micro-Service`, `Micro-Endpoint` and
/// `Micro-Method` echoed (Go Micro's clients read them), the reply's `Content-Type`, and its
/// metadata. Metadata HTTP cannot carry is an error naming it.
pub(crate) fn reply_head(request: &HeaderMap, rsp: &rpc::Response) -> Result<HeaderMap> {
    let mut map = HeaderMap::with_capacity(rsp.metadata.len() + 5);
    for (key, value) in rsp.metadata.iter() {
        if is_transport_header(key) || is_protocol(key) {
            continue;
        }
        let (name, value) = pair(key, value, "reply")?;
        map.insert(name, value);
    }
    echo(request, &mut map);
    let content_type = HeaderValue::from_str(&rsp.content_type).map_err(|_| {
        Error::internal(
            ID,
            format!(
                "reply content type {:?} cannot travel in HTTP",
                rsp.content_type
            ),
        )
    })?;
    map.insert(http::header::CONTENT_TYPE, content_type);
    Ok(map)
}

/// Copies the request's `Micro-Id`, `Micro-Service`, `Micro-Endpoint` and `Micro-Method` (in
/// either form) into a reply head.
pub(crate) fn echo(request: &HeaderMap, reply: &mut HeaderMap) {
    for name in [
        "micro-id",
        "micro-service",
        "micro-endpoint",
        "micro-method",
    ] {
        let x = format!("x-{name}");
        if let Some(value) = request.get(name).or_else(|| request.get(x.as_str())) {
            reply.insert(HeaderName::from_static(name), value.clone());
        }
    }
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
        h.insert("micro-service", HeaderValue::from_static("plain"));
        h.insert("timeout", HeaderValue::from_static("2000000000"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        let (req, timeout) = request_of(&h, bytes::Bytes::new()).expect("a request");
        assert_eq!(req.endpoint, "Greeter.Hello");
        assert_eq!(req.service, "plain", "the plain form wins over X-");
        assert_eq!(timeout, Some(Duration::from_secs(2)));
        assert_eq!(req.metadata.len(), 1, "{:?}", req.metadata);
        let keys: Vec<&str> = req.metadata.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["Trace-Id"], "canonical names");
        assert_eq!(req.metadata.get("trace-id"), Some("t-1"));
        h.insert("timeout", HeaderValue::from_static("soon"));
        let e = request_of(&h, bytes::Bytes::new()).expect_err("a bad timeout");
        assert_eq!(e.code, 400);
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
