//! Transports: the interface (re-exported from `micro-core`) and the in-memory transport.

mod memory;

pub use memory::MemoryTransport;
pub use micro_core::transport::*;
