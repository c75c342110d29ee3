//! What the gRPC transport reads from a peer: `grpc-timeout`, Micro's `Timeout`, the method
//! path, request metadata, and the error a status carries (`micro-error` trailer, Go Micro's
//! JSON message, or the code).
//!
//! Properties: nothing panics; a `grpc-timeout` read is at most eight digits and a unit, and
//! writing a duration then reading it never gives less than the duration (nor more than one
//! unit of the written form more); a path made for an endpoint reads back as that endpoint;
//! metadata never holds reserved or stream-control headers; an error a server ends a call
//! with reads back at the client exactly, whatever its text; any status gives an error.
#![no_main]

use std::time::Duration;

use arbitrary::{Result, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use micro_core::Error;
use micro_fuzz::{metadata, text};
use micro_transport_grpc::fuzzing as grpc;

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let t = text(u)?;
    if let Some(d) = grpc::parse_grpc_timeout(&t) {
        assert!(t.trim().len() <= 9);
        assert!(d <= Duration::from_secs(99_999_999 * 3600));
    }
    let d = Duration::new(
        u.arbitrary::<u64>()? % (1 << 40),
        u.int_in_range(0..=999_999_999)?,
    );
    let written = grpc::format_grpc_timeout(d);
    assert!(written.len() <= 9, "{written}");
    match grpc::parse_grpc_timeout(&written) {
        Some(back) if d <= Duration::from_secs(99_999_999 * 3600) => {
            assert!(back >= d, "{d:?} written {written} read {back:?}");
        }
        Some(_) => {}
        None => panic!("{d:?} written as {written:?}, which does not read"),
    }

    let path = text(u)?;
    if let Some(endpoint) = grpc::endpoint_of_path(&path) {
        assert_eq!(endpoint.matches('.').count(), 1, "{path:?} -> {endpoint:?}");
    }
    let endpoint = text(u)?;
    let proto: Option<String> = if u.arbitrary()? { Some(text(u)?) } else { None };
    let service = text(u)?;
    if let Ok(path) = grpc::method_path(&endpoint, proto.as_deref(), Some(&service)) {
        // The server reads the type from the proto service when the caller named one (the
        // part after its last dot), else from the endpoint.
        let valid = |s: &str| !s.is_empty() && !s.contains(['/', '.', '?', '#']);
        let proto = proto.as_deref().filter(|p| !p.is_empty());
        if let Some((kind, method)) = endpoint.rsplit_once('.') {
            let kind = proto.map_or(kind, |p| p.rsplit('.').next().unwrap_or(p));
            let plain = |s: &str| !s.contains('/');
            if valid(kind) && valid(method) && plain(&service) && proto.is_none_or(plain) {
                let want = format!("{kind}.{method}");
                assert_eq!(grpc::endpoint_of_path(&path), Some(want), "{path}");
            }
        }
    }

    let mut map = HeaderMap::new();
    for _ in 0..u.int_in_range(0..=20)? {
        let (k, v) = (text(u)?, text(u)?);
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            map.append(k, v);
        }
    }
    let md = grpc::metadata_of_headers(&map);
    for (k, _) in md.iter() {
        assert!(
            !k.starts_with("grpc-") && !k.ends_with("-bin") && k != "content-type",
            "{k}"
        );
        assert!(
            !k.eq_ignore_ascii_case("micro-error") && !k.eq_ignore_ascii_case("x-micro-stream")
        );
    }
    let header = metadata(u, 10)?;
    let _ = grpc::timeout_of(&header);
    if let Some(e) = grpc::error_of(&header) {
        assert_ne!(e.code, 0);
    }

    let code = u.int_in_range(400..=599)?;
    let e = Error::new(text(u)?, code, text(u)?);
    let (status, message, trailer) = grpc::status_of_error(&e);
    let back = grpc::error_of_status(status, &message, trailer.as_deref(), "client");
    assert_eq!(
        back,
        e,
        "trailer {:?}",
        trailer.map(|t| String::from_utf8_lossy(&t).into_owned())
    );

    let code: i32 = u.arbitrary()?;
    let message = text(u)?;
    let trailer: Option<Vec<u8>> = u.arbitrary()?;
    let e = grpc::error_of_status(code, &message, trailer.as_deref(), "client");
    assert_ne!(e.code, 0);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
