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
///
/// Every call means every service the client calls, whoever registered it: limit the token to
/// the services meant to see it with [`BearerLayer::only_to`]. The token travels as the
/// transport carries it, in the clear without TLS (`MICRO_TLS_*`).
#[derive(Clone)]
pub struct BearerLayer {
    token: TokenFn,
    /// The services the token goes to; all when `None`.
    only_to: Option<Arc<[String]>>,
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
            only_to: None,
        }
    }

    /// Sends the token only on calls to these services (by their registered name); calls to
    /// others go without it.
    pub fn only_to<S: Into<String>>(mut self, services: impl IntoIterator<Item = S>) -> Self {
        self.only_to = Some(services.into_iter().map(Into::into).collect());
        self
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            token: self.token.clone(),
            only_to: self.only_to.clone(),
        }
    }
}

/// A call service behind a [`BearerLayer`].
#[derive(Clone)]
pub struct Bearer<S> {
    inner: S,
    token: TokenFn,
    only_to: Option<Arc<[String]>>,
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
        let service = &call.request.service;
        let meant = self
            .only_to
            .as_deref()
            .is_none_or(|only| only.iter().any(|s| s == service));
        let metadata = &mut call.request.metadata;
        if meant && !metadata.contains_key(AUTHORIZATION) {
            if let Some(token) = (self.token)() {
                metadata.insert(AUTHORIZATION, format!("Bearer {token}"));
            }
        }
        self.inner.call(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_core::rpc::{CallOptions, Request};

    /// The `Authorization` a call to `service` leaves with, through `layer`.
    async fn sent(layer: &BearerLayer, service: &str) -> Option<String> {
        let inner = tower::service_fn(|call: Call| async move {
            let seen = call.request.metadata.get(AUTHORIZATION).map(str::to_string);
            Ok::<_, Error>(rpc::Response {
                body: seen.unwrap_or_default().into(),
                ..rpc::Response::default()
            })
        });
        let call = Call {
            request: Request {
                service: service.to_string(),
                ..Request::default()
            },
            options: CallOptions::default(),
            stream: false,
        };
        let mut bearer = layer.layer(inner);
        let reply = bearer.call(call).await.ok()?;
        Some(String::from_utf8_lossy(&reply.body).into_owned()).filter(|s| !s.is_empty())
    }

    #[tokio::test]
    async fn the_token_goes_only_where_it_is_meant_to() {
        let everywhere = BearerLayer::new("t0k");
        assert_eq!(
            sent(&everywhere, "billing").await.as_deref(),
            Some("Bearer t0k")
        );
        let limited = BearerLayer::new("t0k").only_to(["greeter"]);
        assert_eq!(
            sent(&limited, "greeter").await.as_deref(),
            Some("Bearer t0k")
        );
        assert_eq!(sent(&limited, "billing").await, None);
    }
}
