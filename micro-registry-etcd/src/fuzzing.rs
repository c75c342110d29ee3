//! Not an API: the parsers of peer input this crate holds, reachable by the fuzz targets in
//! the repository's `fuzz/` folder. Hidden from the docs, outside semver: anything here may
//! change or go in any release.

use micro_core::{Node, Service};

/// The service an entry under `prefix` holds, or why it is not one.
pub fn decode(prefix: &str, key: &[u8], value: &[u8]) -> Result<Service, String> {
    crate::layout::decode(prefix, key, value)
}

/// What a deleted key under `prefix` still tells.
pub fn from_key(prefix: &str, key: &[u8]) -> Result<Service, String> {
    crate::layout::from_key(prefix, key)
}

/// The key and value a node of `service` is registered under.
pub fn entry(prefix: &str, service: &Service, node: &Node) -> (String, Service) {
    (
        crate::layout::node_key(prefix, &service.name, &node.id),
        crate::layout::node_value(service, node),
    )
}
