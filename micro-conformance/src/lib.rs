//! Conformance suites: one per interface, run by every plugin against its real backend, so that
//! semantics stay the same across plugins and a contributor knows when a new plugin is done.
//!
//! ```text
//! // micro-registry-foo/tests/conformance.rs
//! micro_conformance::registry_suite!(async { Ok(std::sync::Arc::new(FooRegistry::new(opts)?) as _) });
//! ```
//!
//! Each check uses service names of its own (with a random suffix), so checks can run at the
//! same time against one shared backend. Every wait is bounded; nothing sleeps in place of a
//! condition.

pub mod broker;
pub mod fault;
pub mod program;
pub mod registry;
pub mod transport;

/// Whether tests must fail, rather than skip, when their backend is missing
/// (`MICRO_TEST_REQUIRE_SERVICES=1`, as CI sets it).
pub fn services_required() -> bool {
    std::env::var("MICRO_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
}
