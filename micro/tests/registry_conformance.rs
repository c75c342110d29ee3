//! The shared registry conformance suite against the in-memory registry.

use std::sync::Arc;

use micro::core::Registry;
use micro::registry::MemoryRegistry;

micro_conformance::registry_suite!(async {
    Ok::<Arc<dyn Registry>, micro::Error>(Arc::new(MemoryRegistry::new()))
});
