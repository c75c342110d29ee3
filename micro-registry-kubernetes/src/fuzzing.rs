//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use k8s_openapi::api::core::v1::Pod;
use micro_core::{Node, Service};

/// The nodes (each with its expiry) a pod, as the API server sends it in JSON, announces of
/// the service `only` or of every service; `None` when the JSON is not a pod.
pub fn read_pod(json: &[u8], only: Option<&str>) -> Option<Vec<(Service, Option<f64>)>> {
    let pod: Pod = serde_json::from_slice(json).ok()?;
    Some(
        crate::format::read_pod(&pod, only)
            .into_iter()
            .map(|e| (e.service, e.expires))
            .collect(),
    )
}

/// The annotation value a pod holds for `template` with `nodes` (each with its expiry in
/// seconds since the epoch).
pub fn encode(template: &Service, nodes: &[(Node, Option<u64>)]) -> String {
    crate::format::encode(template, nodes)
}
