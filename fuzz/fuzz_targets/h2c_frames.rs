//! The h2c stream frame reader (`[u32 header len][JSON header][u32 body len][body]`).
//!
//! Properties: frames the writer wrote, cut into random chunks, read back as the same
//! messages and end cleanly; any bytes read the same whether fed whole or in chunks (the
//! same messages, then the same outcome), never past the limits, never panicking.
#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use micro_core::transport::Message;
use micro_fuzz::{chunks, metadata};
use micro_transport_http::fuzzing::{encode_frame, FrameDecoder};
use micro_transport_http::HttpOptions;

/// Everything the decoder gives for `parts` fed one after the other: the messages, then the
/// error that broke the stream (its code) or whether it ended between frames.
fn read_all(opts: &HttpOptions, parts: &[&[u8]]) -> (Vec<Message>, std::result::Result<bool, i32>) {
    let mut d = FrameDecoder::new(opts);
    let mut out = Vec::new();
    for part in parts {
        d.push(part);
        loop {
            match d.parse() {
                Ok(Some(m)) => {
                    assert!(m.header.len() <= opts.max_headers);
                    assert!(m.body.len() <= opts.max_body_bytes);
                    out.push(m);
                }
                Ok(None) => break,
                Err(e) => return (out, Err(e.code)),
            }
        }
    }
    let clean = d.end().is_ok();
    (out, Ok(clean))
}

fn run(data: &[u8]) -> Result<()> {
    // The whole input as a stream, fed whole and in chunks, under the default limits.
    let opts = HttpOptions::default();
    let parts = chunks(&mut Unstructured::new(data), data);
    assert_eq!(read_all(&opts, &[data]), read_all(&opts, &parts));

    let u = &mut Unstructured::new(data);
    let opts = HttpOptions {
        max_header_bytes: u.int_in_range(0..=2048)?,
        max_headers: u.int_in_range(0..=24)?,
        max_body_bytes: u.int_in_range(0..=2048)?,
        ..HttpOptions::default()
    };
    if u.arbitrary()? {
        // Round trip.
        let n = u.int_in_range(0..=8usize)?;
        let mut sent = Vec::new();
        let mut wire = Vec::new();
        for _ in 0..n {
            let msg = Message {
                header: metadata(u, 20)?,
                body: Bytes::from(u.arbitrary::<Vec<u8>>()?),
            };
            if msg.header.len() > opts.max_headers {
                continue;
            }
            if let Ok(frame) = encode_frame(&msg, &opts) {
                wire.extend_from_slice(&frame);
                sent.push(msg);
            }
        }
        let parts = chunks(u, &wire);
        let (got, end) = read_all(&opts, &parts);
        assert_eq!(end, Ok(true), "written frames must read to a clean end");
        assert_eq!(got, sent);
    } else {
        // Any bytes: chunking changes nothing.
        let raw: Vec<u8> = u.arbitrary()?;
        let parts = chunks(u, &raw);
        let whole = read_all(&opts, &[&raw]);
        let chunked = read_all(&opts, &parts);
        assert_eq!(whole, chunked);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
