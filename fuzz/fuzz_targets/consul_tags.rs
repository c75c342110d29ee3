//! Consul registry tags (`t-`/`e-`/`v-` + hex(zlib(JSON)), and the legacy `t=`/`e=`/`v=`
//! forms), which any client of the Consul agent can write.
//!
//! Properties: any tags decode (bad ones skipped) without panicking, inflating at most the
//! per-node budget in all (so a zlib bomb costs bounded work); tags the registry wrote decode
//! to the node's version, metadata and endpoints.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_fuzz::service;
use micro_registry_consul::tags::{decode, encode, MAX_DECODED_NODE};

fn run(data: &[u8]) -> Result<()> {
    if let Ok(text) = std::str::from_utf8(data) {
        let tags: Vec<&str> = text.split('\n').collect();
        let d = decode(&tags, "fuzz");
        let size = d.version.len()
            + serde_json::to_vec(&d.metadata).unwrap_or_default().len()
            + serde_json::to_vec(&d.endpoints).unwrap_or_default().len();
        // JSON re-encoding may grow a little past what was inflated (escapes), never far.
        assert!((size as u64) <= 2 * MAX_DECODED_NODE + 64);
    }
    let mut u = Unstructured::new(data);
    let s = service(&mut u)?;
    let d = decode(&encode(&s, &s.nodes[0]), "fuzz");
    assert_eq!(d.version, s.version);
    assert_eq!(d.metadata, s.nodes[0].metadata);
    assert_eq!(d.endpoints, s.endpoints);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
