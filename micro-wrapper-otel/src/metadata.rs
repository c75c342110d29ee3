//! Micro metadata as an OpenTelemetry carrier.

use micro_core::Metadata;
use opentelemetry::propagation::{Extractor, Injector};

/// Lets a propagator write into request metadata or message headers.
///
/// An empty value removes the key instead: a `tracestate` left over from metadata a handler
/// passed on must not survive next to a new `traceparent`, and an empty header is noise.
#[derive(Debug)]
pub struct MetadataInjector<'a>(pub &'a mut Metadata);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            self.0.remove(key);
        } else {
            self.0.insert(key.to_string(), value);
        }
    }
}

/// Lets a propagator read request metadata or message headers; lookups ignore case, as
/// [`Metadata`] does (HTTP transports may lower-case header names).
#[derive(Debug)]
pub struct MetadataExtractor<'a>(pub &'a Metadata);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::Context;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    fn remote(state: TraceState) -> Context {
        let sc = SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            SpanId::from(0xb7ad6b7169203331_u64),
            TraceFlags::SAMPLED,
            true,
            state,
        );
        Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn trace_context_round_trips_through_metadata_whatever_the_case() {
        let propagator = TraceContextPropagator::new();
        let mut md = Metadata::new();
        let state = TraceState::from_key_value([("vendor", "x")]).expect("trace state");
        propagator.inject_context(&remote(state), &mut MetadataInjector(&mut md));
        assert_eq!(
            md.get("traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(md.get("tracestate"), Some("vendor=x"));

        // An HTTP transport may hand the headers back in another case.
        let shouted: Metadata = md
            .iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.to_string()))
            .collect();
        let cx = propagator.extract_with_context(&Context::new(), &MetadataExtractor(&shouted));
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id(),
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128)
        );
        assert_eq!(sc.trace_state().get("vendor"), Some("x"));
    }

    #[test]
    fn an_empty_trace_state_removes_a_stale_one() {
        let propagator = TraceContextPropagator::new();
        let mut md: Metadata = [("TraceState", "old=1"), ("User", "bob")]
            .into_iter()
            .collect();
        propagator.inject_context(&remote(TraceState::NONE), &mut MetadataInjector(&mut md));
        assert!(md.get("tracestate").is_none());
        assert!(md.get("traceparent").is_some());
        assert_eq!(md.get("user"), Some("bob"));
    }

    #[test]
    fn no_trace_context_leaves_the_context_alone() {
        let propagator = TraceContextPropagator::new();
        let md: Metadata = [("traceparent", "garbage")].into_iter().collect();
        let cx = propagator.extract_with_context(&Context::new(), &MetadataExtractor(&md));
        assert!(!cx.has_active_span());
    }
}
