//! NATS message headers and payloads as a subscriber reads them: Micro's NATS headers, or Go
//! Micro's JSON envelope in a payload without headers, from any publisher on the server.
//!
//! Properties: nothing panics; what is delivered stays within the header limits; a message
//! published in either envelope is delivered as it was sent.
#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use micro_broker_nats::fuzzing::{headers, incoming, outgoing};
use micro_core::broker::Message;
use micro_core::MetadataLimits;
use micro_fuzz::{limits, metadata, text};

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let lim = limits(u)?;
    let mut pairs = Vec::new();
    for _ in 0..u.int_in_range(0..=30)? {
        pairs.push((text(u)?, text(u)?));
    }
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let with_headers: bool = u.arbitrary()?;
    let map = headers(with_headers.then_some(&pairs[..]));
    let payload = Bytes::from(u.arbitrary::<Vec<u8>>()?);
    if let Ok(m) = incoming(map.as_ref(), payload, lim) {
        assert!(m.header.len() <= lim.max_entries);
        assert!(m.header.byte_len() <= lim.max_bytes);
    }

    let msg = Message {
        header: metadata(u, 20)?,
        body: Bytes::from(u.arbitrary::<Vec<u8>>()?),
    };
    let big = MetadataLimits {
        max_entries: 1 << 20,
        max_bytes: 1 << 30,
    };
    if let Ok((h, body)) = outgoing(false, &msg) {
        if !msg.header.is_empty() {
            let got = incoming(Some(&h), body, big).map_err(|e| e.to_string());
            assert_eq!(got, Ok(msg.clone()));
        }
    }
    let (h, body) = outgoing(true, &msg).unwrap_or_else(|e| panic!("Go Micro envelope: {e}"));
    let got = incoming(Some(&h), body.clone(), big).map_err(|e| e.to_string());
    assert_eq!(got, Ok(msg.clone()));
    let got = incoming(None, body, big).map_err(|e| e.to_string());
    assert_eq!(got, Ok(msg));
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
