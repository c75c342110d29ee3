//! Registries: the interface (re-exported from `micro-core`) and the in-memory registry.

pub mod json_schema;
mod memory;

pub use memory::MemoryRegistry;
pub use micro_core::registry::*;
