//! `Error::parse`, which reads what a peer put in `Micro-Error` (or a gRPC trailer, or a
//! broker reply): any text gives an error with a code and a status, never a panic; an error
//! written as JSON reads back equal.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_core::Error;

fn run(data: &[u8]) -> Result<()> {
    if let Ok(text) = std::str::from_utf8(data) {
        let e = Error::parse(text);
        assert_ne!(e.code, 0, "{text:?} parsed with code 0");
        assert!(!e.status.is_empty(), "{text:?} parsed without a status");
        let _ = (
            e.to_string(),
            format!("{e:?}"),
            e.http_status(),
            e.grpc_code(),
        );
        assert_eq!(
            Error::parse(&e.to_json()),
            e,
            "a parsed error must survive its JSON"
        );
    }
    let mut u = Unstructured::new(data);
    let id: String = u.arbitrary()?;
    let code: i32 = u.arbitrary()?;
    let detail: String = u.arbitrary()?;
    let e = Error::new(id, code, detail);
    let back = Error::parse(&e.to_json());
    if code != 0 {
        assert_eq!(back, e, "{:?}", e.to_json());
    } else if !e.id.is_empty() || !e.detail.is_empty() {
        assert_eq!(back.code, 500);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
