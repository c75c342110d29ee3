//! Header names of Go Micro's RPC protocol (`mucp`), shared by the client, the server and every
//! transport. Names compare case-insensitively; an `X-` prefixed form (`X-Micro-Error`) is read
//! too.

/// The request id.
pub const ID: &str = "Micro-Id";
/// The target service.
pub const SERVICE: &str = "Micro-Service";
/// The endpoint, `Greeter.Hello`.
pub const ENDPOINT: &str = "Micro-Endpoint";
/// The same as [`ENDPOINT`], sent by Go Micro too.
pub const METHOD: &str = "Micro-Method";
/// The error of a failed call, as JSON; [`EOS`] ends a stream.
pub const ERROR: &str = "Micro-Error";
/// Present on every message of a stream, holding the stream id.
pub const STREAM: &str = "Micro-Stream";
/// The topic of a published message.
pub const TOPIC: &str = "Micro-Topic";
/// The fully qualified proto service of an endpoint (`greeter.Greeter`) in a header that only
/// ever lives inside a process (the gRPC transport's stream opening); on requests it is the
/// typed field `rpc::Request::proto_service`, never sent on the mucp wire.
pub const PROTO_SERVICE: &str = "Micro-Proto-Service";
/// The codec of the body.
pub const CONTENT_TYPE: &str = "Content-Type";
/// The codec the caller wants back.
pub const ACCEPT: &str = "Accept";
/// The caller's timeout in decimal nanoseconds.
pub const TIMEOUT: &str = "Timeout";
/// The end-of-stream marker in [`ERROR`].
pub const EOS: &str = "EOS";
/// The prefix of the entries that say who the caller is (`Micro-Auth-Subject`, ...). Only the
/// receiving side's own layers set them (the auth layer, after verifying a token): the server
/// and the subscriber path drop every such entry that arrives.
pub const AUTH_PREFIX: &str = "Micro-Auth-";

/// Drops the [`AUTH_PREFIX`] entries of `metadata`: what a caller or publisher sent there.
pub fn drop_auth(metadata: &mut Metadata) {
    metadata.retain(|key, _| !starts_with_ignore_case(key, AUTH_PREFIX));
}

use std::time::Duration;

use crate::{rpc, Metadata};

/// The mucp header of a request: its metadata, then `Micro-Id`, `Micro-Service`,
/// `Micro-Endpoint` (and `Micro-Method`, as Go Micro sends both), `Content-Type`, `Accept`, and
/// `Timeout` in decimal nanoseconds when there is one. Metadata entries under those names give
/// way to the request's own fields.
pub fn request_header(req: &rpc::Request, timeout: Option<Duration>) -> Metadata {
    let mut h = Metadata::with_capacity(req.metadata.len() + 7);
    h.extend_from(&req.metadata);
    h.insert_static(ID, req.id.clone());
    h.insert_static(SERVICE, req.service.clone());
    h.insert_static(ENDPOINT, req.endpoint.clone());
    h.insert_static(METHOD, req.endpoint.clone());
    h.insert_static(CONTENT_TYPE, req.content_type.clone());
    h.insert_static(ACCEPT, req.content_type.clone());
    if let Some(t) = timeout {
        h.insert_static(TIMEOUT, t.as_nanos().to_string());
    }
    h
}

/// Reads a header in its `Micro-X` or `X-Micro-X` form (the plain form first); an empty
/// value counts as absent. Nothing is allocated.
pub fn get<'a>(header: &'a Metadata, name: &str) -> Option<&'a str> {
    // One pass over the entries: the plain form wins wherever it stands.
    let mut found = None;
    for (k, v) in header.iter() {
        if k.eq_ignore_ascii_case(name) {
            found = Some(v);
            break;
        }
        if found.is_none()
            && k.len() == name.len() + 2
            && starts_with_ignore_case(k, "x-")
            && k.as_bytes()[2..].eq_ignore_ascii_case(name.as_bytes())
        {
            found = Some(v);
        }
    }
    found.filter(|v| !v.is_empty())
}

/// Whether `text` starts with `prefix`, ignoring ASCII case.
pub fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Whether a header belongs to the protocol (`Micro-*`, `X-Micro-*`, the codec, timeout and
/// HTTP framing headers) rather than to the caller's metadata.
pub fn is_protocol(name: &str) -> bool {
    starts_with_ignore_case(name, "micro-")
        || starts_with_ignore_case(name, "x-micro-")
        || [
            "content-type",
            "accept",
            "timeout",
            "content-length",
            "accept-encoding",
            "date",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms_without_caring_for_case() {
        let h: Metadata = [
            ("x-micro-error", "EOS"),
            ("MICRO-ID", "7"),
            ("Micro-Topic", ""),
        ]
        .into_iter()
        .collect();
        assert_eq!(get(&h, ERROR), Some(EOS));
        assert_eq!(get(&h, ID), Some("7"));
        assert_eq!(get(&h, TOPIC), None, "empty is absent");
        assert_eq!(get(&h, SERVICE), None);
        let both: Metadata = [("X-Micro-Id", "x"), ("Micro-Id", "plain")]
            .into_iter()
            .collect();
        assert_eq!(get(&both, ID), Some("plain"));
        let odd: Metadata = [("xéMicro-Id", "1")].into_iter().collect();
        assert_eq!(get(&odd, "Micro-Id"), None);
    }

    #[test]
    fn protocol_headers() {
        for h in [
            "Micro-Id",
            "x-micro-error",
            "CONTENT-TYPE",
            "Timeout",
            "date",
        ] {
            assert!(is_protocol(h), "{h}");
        }
        for h in ["trace-id", "micro", "x-user", "authorization"] {
            assert!(!is_protocol(h), "{h}");
        }
    }
}
