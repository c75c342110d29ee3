//! The TXT payload of an mDNS node: hex(zlib(JSON)), from any host on the link.
//!
//! Properties: any text decodes or is refused without panicking, with inflation bounded (a
//! zlib bomb is cut at the limit, so each input costs bounded work); a payload the encoder
//! wrote decodes to the same service, whatever the JSON holds.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_core::{Node, Service};
use micro_fuzz::{mdns_parts, text};
use micro_registry_mdns::fuzzing::{decode_txt, encode_txt};

fn run(data: &[u8]) -> Result<()> {
    if let Ok(joined) = std::str::from_utf8(data) {
        let _ = decode_txt(joined);
    }
    let mut u = Unstructured::new(data);
    let (endpoints, metadata) = mdns_parts(&mut u)?;
    let service = Service {
        name: text(&mut u)?,
        version: text(&mut u)?,
        metadata: Default::default(),
        endpoints,
        nodes: vec![Node {
            metadata,
            ..Node::default()
        }],
    };
    let strings = encode_txt(&service).unwrap_or_else(|e| panic!("TXT does not encode: {e}"));
    assert!(strings.iter().all(|s| s.len() <= 255));
    let back = decode_txt(&strings.concat()).unwrap_or_else(|e| panic!("TXT does not decode: {e}"));
    assert_eq!(back, service);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
