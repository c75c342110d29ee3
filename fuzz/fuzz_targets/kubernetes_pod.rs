//! Kubernetes pods as the registry reads them: the API server's JSON, with the service
//! annotations any pod in the namespace may carry.
//!
//! Properties: any JSON reads or is skipped without panicking; each entry holds one node
//! with a finite expiry if any, and a lookup for one service gives only that service; a pod
//! annotated by the registry reads back as the nodes (and expiries) it announced.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use micro_fuzz::service;
use micro_registry_kubernetes::format::{annotation_key, EXPIRES_KEY};
use micro_registry_kubernetes::fuzzing::{encode, read_pod};

fn run(data: &[u8]) -> Result<()> {
    if let Some(entries) = read_pod(data, None) {
        for (s, expires) in &entries {
            assert_eq!(s.nodes.len(), 1);
            assert!(expires.is_none_or(f64::is_finite));
            assert!(!s.nodes[0].metadata.contains_key(EXPIRES_KEY));
        }
        if let Some(name) = entries.first().map(|(s, _)| s.name.clone()) {
            let only = read_pod(data, Some(&name)).unwrap_or_default();
            assert!(only.iter().all(|(s, _)| s.name == name));
        }
    }
    let mut u = Unstructured::new(data);
    let template = service(&mut u)?;
    let mut nodes = Vec::new();
    for node in &template.nodes {
        nodes.push((node.clone(), u.arbitrary::<Option<u32>>()?.map(u64::from)));
    }
    let value = encode(&template, &nodes);
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "annotations": { annotation_key(&template.name): value },
        },
        "status": { "phase": "Running" },
    });
    let json = serde_json::to_vec(&pod).unwrap_or_default();
    let read = read_pod(&json, Some(&template.name)).unwrap_or_else(|| panic!("not a pod"));
    let want: Vec<_> = nodes
        .iter()
        .map(|(node, expires)| {
            let mut one = template.clone();
            let mut node = node.clone();
            node.metadata.remove(EXPIRES_KEY);
            one.nodes = vec![node];
            (one, expires.map(|e| e as f64))
        })
        .collect();
    assert_eq!(read, want);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
