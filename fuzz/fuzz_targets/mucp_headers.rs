//! The mucp request head: the http transport's reader of `Micro-*` headers and `Timeout`
//! (decimal nanoseconds) from an HTTP request, and `micro_core::headers::get`.
//!
//! Properties: reading never panics; what it keeps as metadata is never a protocol or
//! connection header; a request it read, written by the client's writer with any timeout,
//! reads back the same; `headers::get` agrees with a model (plain name first, then `X-`, an
//! empty value being absent).
#![no_main]

use std::time::Duration;

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use micro_core::headers;
use micro_fuzz::{metadata, text, NAMES};
use micro_transport_http::fuzzing::{request_head, request_of};

fn head(u: &mut Unstructured<'_>) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let n = u.int_in_range(0..=24usize)?;
    for _ in 0..n {
        let name = text(u)?;
        let value = match u.int_in_range(0..=3u8)? {
            // A Timeout-like value: digits, maybe padded or signed.
            0 => {
                let ns: u64 = u.arbitrary()?;
                let pad = *u.choose(&["", " ", "+", "-", "0", "\t"])?;
                format!("{pad}{ns}{}", *u.choose(&["", " ", "0", "n"])?)
            }
            _ => text(u)?,
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    Ok(map)
}

fn get_model<'a>(m: &'a micro_core::Metadata, name: &str) -> Option<&'a str> {
    match m.get(name) {
        Some(v) => Some(v),
        None => m.get(&format!("x-{name}")),
    }
    .filter(|v| !v.is_empty())
}

/// An HTTP/1 style head, `Name: value` per line, as a map (lines that are not a header are
/// skipped).
fn lines(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            map.append(k, v);
        }
    }
    map
}

fn run(data: &[u8]) -> Result<()> {
    let u = &mut Unstructured::new(data);
    check(u, lines(data), Bytes::new())?;
    let map = head(u)?;
    let body = Bytes::from(u.arbitrary::<Vec<u8>>()?);
    check(u, map, body)?;
    let md = metadata(u, 20)?;
    for name in NAMES.iter().copied().chain(["Micro-Error", "Timeout"]) {
        assert_eq!(
            headers::get(&md, name),
            get_model(&md, name),
            "get({name:?})"
        );
    }
    Ok(())
}

fn check(u: &mut Unstructured<'_>, map: HeaderMap, body: Bytes) -> Result<()> {
    if let Ok((req, timeout)) = request_of(&map, body.clone()) {
        for (k, _) in req.metadata.iter() {
            assert!(
                !headers::is_protocol(k),
                "protocol header {k:?} kept as metadata"
            );
            assert!(!k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("te"));
        }
        assert_eq!(req.body, body);
        let resend = match timeout {
            Some(t) => t,
            None => Duration::from_nanos(u.arbitrary()?),
        };
        if let Ok(again) = request_head(&req, resend) {
            let (back, t) = match request_of(&again, body) {
                Ok(read) => read,
                Err(e) => panic!("the client's own head does not read: {e}"),
            };
            assert_eq!(t, Some(resend));
            assert_eq!(back.id, req.id);
            assert_eq!(back.service, req.service);
            assert_eq!(back.endpoint, req.endpoint);
            assert_eq!(back.content_type, req.content_type);
            assert_eq!(back.metadata, req.metadata);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
