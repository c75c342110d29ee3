//! Kafka record headers, key and payload as a subscriber reads them, from any producer on
//! the topic.
//!
//! Properties: nothing panics; a record is read exactly as a model says (each header in
//! order through the limits, values as lossy UTF-8, the key under its header unless a header
//! says it already); a published message is received as it was sent, and one whose header
//! name holds NUL (which librdkafka would cut) is refused.
#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use micro_broker_kafka::fuzzing::{record_message, round_trip};
use micro_core::broker::Message;
use micro_core::MetadataLimits;
use micro_fuzz::{limits, metadata, text};

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let lim = limits(u)?;
    let mut owned: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for _ in 0..u.int_in_range(0..=50)? {
        owned.push((text(u)?, u.arbitrary()?));
    }
    let pairs: Vec<(&str, Option<&[u8]>)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    let with_headers: bool = u.arbitrary()?;
    let key: Option<Vec<u8>> = u.arbitrary()?;
    let key_header: Option<String> = if u.arbitrary()? { Some(text(u)?) } else { None };
    let payload: Option<Vec<u8>> = u.arbitrary()?;
    let got = record_message(
        with_headers.then_some(&pairs[..]),
        key.as_deref(),
        payload.as_deref(),
        key_header.as_deref(),
        lim,
    );

    // The model: the shared header reader, fed in record order.
    let want = (|| {
        let mut reader = lim.reader("a Kafka record");
        if with_headers {
            lim.check("a Kafka record", pairs.len(), 0)?;
            for (k, v) in &pairs {
                // librdkafka gives readers names as C strings: cut at a NUL.
                let k = k.split('\0').next().unwrap_or_default();
                reader.push(k, String::from_utf8_lossy(v.unwrap_or_default()))?;
            }
        }
        let mut header = reader.finish();
        if let (Some(name), Some(key)) = (&key_header, &key) {
            if !header.contains_key(name) {
                header.insert(name.clone(), String::from_utf8_lossy(key));
            }
        }
        Ok::<_, micro_core::Error>(Message {
            header,
            body: Bytes::from(payload.clone().unwrap_or_default()),
        })
    })();
    assert_eq!(got, want);

    let msg = Message {
        header: metadata(u, 20)?,
        body: Bytes::from(u.arbitrary::<Vec<u8>>()?),
    };
    let big = MetadataLimits {
        max_entries: 1 << 20,
        max_bytes: 1 << 30,
    };
    if msg.header.iter().any(|(k, _)| k.contains('\0')) {
        let refused = round_trip(&msg, big).err().map(|e| e.code);
        assert_eq!(
            refused,
            Some(400),
            "a name with NUL must be refused, not cut"
        );
    } else {
        assert_eq!(round_trip(&msg, big), Ok(msg));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
