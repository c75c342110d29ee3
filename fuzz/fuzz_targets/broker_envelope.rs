//! Broker envelopes `{"Header":{..},"Body":"<base64>"}`: the http broker's two readers (the
//! compact fast path and the general serde reader), differentially, and Go Micro's envelope
//! of `micro_core::broker::envelope` (Redis, MQTT, NATS); plus the http broker's `?id=` query.
//!
//! Properties: where the compact reader reads an envelope, the general one reads the same
//! message; where it refuses the headers (431), so does the general one; `decode` gives what
//! the reader in charge gives; what either encoder writes decodes to the message sent (and
//! the compact reader takes every envelope whose strings need no escape); headers past the
//! limits are always refused; a query value escaped and read back is the same text, and an
//! escape that is not `%` and two hex digits is not read.
#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use micro_broker_http::fuzzing as http_broker;
use micro_core::broker::{envelope, Message};
use micro_core::{Metadata, MetadataLimits};
use micro_fuzz::{limits, metadata, text};

fn within(m: &Message, limits: MetadataLimits) {
    assert!(m.header.len() <= limits.max_entries);
    assert!(m.header.byte_len() <= limits.max_bytes);
}

fn differential(json: &[u8], limits: MetadataLimits) {
    let general = http_broker::decode_general(json, limits);
    let decoded = http_broker::decode(json, limits);
    match http_broker::decode_compact(json, limits) {
        Some(Ok(m)) => {
            within(&m, limits);
            match &general {
                Ok(g) => assert_eq!(g, &m, "the readers disagree"),
                Err(e) => panic!("compact read {m:?}, general refused: {e}"),
            }
            assert_eq!(decoded.ok(), Some(m));
        }
        Some(Err(e)) => {
            assert_eq!(e.code, 431);
            let g = general.err().map(|e| e.code);
            assert_eq!(g, Some(431), "compact refused the headers, general did not");
            assert_eq!(decoded.err().map(|e| e.code), Some(431));
        }
        None => {
            if let Ok(g) = &general {
                within(g, limits);
            }
            assert_eq!(decoded.map_err(|e| e.code), general.map_err(|e| e.code));
        }
    }
}

fn needs_escape(s: &str) -> bool {
    s.chars().any(|c| c == '"' || c == '\\' || c < ' ')
}

fn run(data: &[u8]) -> Result<()> {
    // The whole input as an envelope, with the default limits and with limits it may cross.
    let mut u = Unstructured::new(data);
    for lim in [MetadataLimits::default(), limits(&mut u)?] {
        differential(data, lim);
        if let Ok(msg) = envelope::decode(data, lim, "fuzz", "fuzz") {
            within(&msg, lim);
        }
    }

    let topic = text(&mut u)?;
    let msg = Message {
        header: metadata(&mut u, 20)?,
        body: Bytes::from(u.arbitrary::<Vec<u8>>()?),
    };
    let wire = http_broker::encode(&topic, &msg);
    let mut want: Metadata = msg
        .header
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("Micro-Topic"))
        .collect();
    want.insert("Micro-Topic", topic.as_str());
    let want = Message {
        header: want,
        body: msg.body.clone(),
    };
    let big = MetadataLimits {
        max_entries: 1 << 20,
        max_bytes: 1 << 30,
    };
    differential(&wire, big);
    assert_eq!(http_broker::decode(&wire, big).ok().as_ref(), Some(&want));
    let plain = !want
        .header
        .iter()
        .any(|(k, v)| needs_escape(k) || needs_escape(v));
    if plain {
        assert!(
            matches!(http_broker::decode_compact(&wire, big), Some(Ok(_))),
            "the compact reader must take what the encoder writes: {}",
            String::from_utf8_lossy(&wire)
        );
    }
    let go = envelope::encode(&msg);
    assert_eq!(
        envelope::decode(&go, big, "fuzz", "fuzz").ok().as_ref(),
        Some(&msg)
    );

    let id = text(&mut u)?;
    let query = format!("a=1&id={}&b=2", http_broker::query_escape(&id));
    assert_eq!(
        http_broker::query_value(&query, "id").as_deref(),
        Some(id.as_str())
    );
    let raw = text(&mut u)?;
    if let Some(v) = http_broker::query_value(&raw, "id") {
        // With one `id` pair, every `%` of it must start a hex escape for it to be read.
        let pairs: Vec<&str> = raw
            .split('&')
            .filter(|p| p.starts_with("id=") || *p == "id")
            .collect();
        if let [pair] = pairs[..] {
            let b = pair.as_bytes();
            for i in (0..b.len()).filter(|&i| b[i] == b'%') {
                let hex = b.get(i + 1..i + 3);
                let ok = hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                assert!(ok, "{raw:?} read as {v:?} despite a bad escape");
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
