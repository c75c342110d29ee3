//! The caller's side: attach a bearer token to outgoing calls.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use micro_core::rpc::{self, Call};
use micro_core::Error;
use tower_layer::Layer;
use tower_service::Service;

use crate::AUTHORIZATION;

type TokenFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Attaches `Authorization: Bearer <token>` to every call on the client call path that does not
/// carry an `Authorization` entry already (a token set on the request itself wins, so a handler
/// can pass its caller's token on).
#[derive(Clone)]
pub struct BearerLayer {
    token: TokenFn,
}

impl fmt::Debug for BearerLayer {
    // The token is left out: it is a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerLayer").finish_non_exhaustive()
    }
}

impl BearerLayer {
    /// Always the same token.
    pub fn new(token: impl Into<String>) -> Self {
        let token: Arc<str> = token.into().into();
        Self::from_fn(move || Some(token.to_string()))
    }

    /// The token `token` returns at each call (`None`: send none), for tokens that are renewed
    /// while the service runs.
    pub fn from_fn(token: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        BearerLayer {
            token: Arc::new(token),
        }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            token: self.token.clone(),
        }
    }
}

/// A call service behind a [`BearerLayer`].
#[derive(Clone)]
pub struct Bearer<S> {
    inner: S,
    token: TokenFn,
}

impl<S: fmt::Debug> fmt::Debug for Bearer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Call> for Bearer<S>
where
    S: Service<Call, Response = rpc::Response, Error = Error>,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: Call) -> S::Future {
        let metadata = &mut call.request.metadata;
        if !metadata.contains_key(AUTHORIZATION) {
            if let Some(token) = (self.token)() {
                metadata.insert(AUTHORIZATION, format!("Bearer {token}"));
            }
        }
        self.inner.call(call)
    }
}
