//! Tower layers on Micro's paths.
//!
//! The client's call path, the handler path, the publish path and the subscriber path are
//! tower services whose error is [`Error`]. A layer may also fail with any error that turns
//! into a [`BoxError`], as tower's own do; Micro maps it with [`error_of`]: a Micro error stays
//! as it is, tower's `timeout` becomes a `408`, `load_shed`'s overload a `503` (which
//! callers retry elsewhere), anything else a `500` with its text.
//!
//! # Order
//!
//! Each `*_layer` call wraps what is there, so **the layer added last runs first** (it is
//! the outermost), as when wrapping services by hand. That is the reverse of
//! `tower::ServiceBuilder`, whose first layer is the outermost; to write a stack in
//! `ServiceBuilder` order, pass one `ServiceBuilder` (it is itself a layer):
//!
//! ```
//! use std::time::Duration;
//!
//! let service = micro::Service::builder("greeter")
//! #   .registry(std::sync::Arc::new(micro::registry::MemoryRegistry::new()))
//! #   .broker(std::sync::Arc::new(micro::broker::MemoryBroker::new()))
//!     .handler_layer(
//!         tower::ServiceBuilder::new()
//!             .load_shed() // outermost: over the limit, a 503 at once
//!             .concurrency_limit(64)
//!             .timeout(Duration::from_secs(2)), // innermost: a 408 after 2 s
//!     )
//!     .build()?;
//! # Ok::<(), micro::Error>(())
//! ```
//!
//! # Writing a layer
//!
//! A layer is a `tower::Layer` whose service takes the path's request. This one logs every
//! handler call with its endpoint and outcome:
//!
//! ```
//! use std::task::{Context, Poll};
//!
//! use micro::rpc::{self, ServerCall};
//! use micro::{BoxFuture, Error};
//!
//! #[derive(Clone)]
//! struct LogLayer;
//!
//! impl<S> tower::Layer<S> for LogLayer {
//!     type Service = Log<S>;
//!     fn layer(&self, inner: S) -> Log<S> {
//!         Log(inner)
//!     }
//! }
//!
//! #[derive(Clone)]
//! struct Log<S>(S);
//!
//! impl<S> tower::Service<ServerCall> for Log<S>
//! where
//!     S: tower::Service<ServerCall, Response = rpc::Response, Error = Error>,
//!     S::Future: Send + 'static,
//! {
//!     type Response = rpc::Response;
//!     type Error = Error;
//!     type Future = BoxFuture<'static, Result<rpc::Response, Error>>;
//!
//!     fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
//!         self.0.poll_ready(cx)
//!     }
//!
//!     fn call(&mut self, call: ServerCall) -> Self::Future {
//!         let endpoint = call.request.endpoint.clone();
//!         let reply = self.0.call(call);
//!         Box::pin(async move {
//!             let result = reply.await;
//!             let code = result.as_ref().map_or_else(|e| e.code, |_| 200);
//!             tracing::info!(%endpoint, code, "handled");
//!             result
//!         })
//!     }
//! }
//!
//! let service = micro::Service::builder("greeter")
//! #   .registry(std::sync::Arc::new(micro::registry::MemoryRegistry::new()))
//! #   .broker(std::sync::Arc::new(micro::broker::MemoryBroker::new()))
//!     .handler_layer(LogLayer)
//!     .build()?;
//! # Ok::<(), micro::Error>(())
//! ```

use crate::Error;

/// Any error a layer's service may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ID: &str = "micro.layer";

/// The Micro error for a layer's error: a Micro error as it is, tower's timeout as `408`,
/// its load shedding as `503`, anything else as `500`.
pub fn error_of(e: impl Into<BoxError>) -> Error {
    let e = match e.into().downcast::<Error>() {
        Ok(micro) => return *micro,
        Err(other) => other,
    };
    if e.is::<tower::timeout::error::Elapsed>() {
        return Error::timeout(ID, "the call took longer than its timeout layer allows");
    }
    if e.is::<tower::load_shed::error::Overloaded>() {
        return Error::new(
            ID,
            503,
            "overloaded: a load-shedding layer turned the call away",
        );
    }
    Error::internal(ID, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tower_errors_become_fitting_micro_errors() {
        let kept = Error::new("x", 429, "slow down");
        assert_eq!(error_of(kept.clone()), kept);
        assert_eq!(error_of(tower::timeout::error::Elapsed::new()).code, 408);
        assert_eq!(
            error_of(tower::load_shed::error::Overloaded::new()).code,
            503
        );
        assert_eq!(error_of("something else").code, 500);
    }
}
