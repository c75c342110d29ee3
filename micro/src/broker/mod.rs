//! Brokers: the interface (re-exported from `micro-core`) and the in-memory broker.

mod memory;

pub use memory::MemoryBroker;
pub use micro_core::broker::*;
