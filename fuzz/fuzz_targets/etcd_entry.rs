//! etcd registry entries (`<prefix><service>/<node id>` holding the service's JSON), which
//! anyone with access to the etcd cluster can write.
//!
//! Properties: any key and value decode or are refused without panicking; a decoded entry
//! holds only nodes whose id matches its key, and names the service of its key; an entry
//! the registry wrote decodes to the service it wrote.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_fuzz::service;
use micro_registry_etcd::fuzzing::{decode, entry, from_key};

const PREFIX: &str = "/micro/registry/";

fn run(data: &[u8]) -> Result<()> {
    // `<service>/<node id>\n<value>`, the key under the prefix.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let key = [PREFIX.as_bytes(), &data[..split]].concat();
    let value = data.get(split + 1..).unwrap_or_default();
    if let Ok(s) = decode(PREFIX, &key, value) {
        let rest = std::str::from_utf8(&key[PREFIX.len()..]).unwrap_or_default();
        let (service_part, node_part) = rest.split_once('/').unwrap_or_default();
        assert_eq!(s.name.replace('/', "-"), service_part);
        assert!(!s.nodes.is_empty());
        assert!(s.nodes.iter().all(|n| n.id.replace('/', "-") == node_part));
    }
    let _ = from_key(PREFIX, &key);

    let mut u = Unstructured::new(data);

    let s = service(&mut u)?;
    let node = &s.nodes[0];
    let (key, value) = entry(PREFIX, &s, node);
    let json = serde_json::to_vec(&value).unwrap_or_default();
    let back = decode(PREFIX, key.as_bytes(), &json);
    if s.name.is_empty() || node.id.is_empty() {
        assert!(
            back.is_err(),
            "an entry without a name or id must be refused"
        );
    } else {
        assert_eq!(back, Ok(value));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
