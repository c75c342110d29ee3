//! The caller's side: attach a bearer token to outgoing calls and published messages.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use micro_core::broker::Publication;
use micro_core::rpc::{self, Call};
use micro_core::{Error, Metadata};
use tower_layer::Layer;
use tower_service::Service;

use crate::AUTHORIZATION;

type TokenFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Attaches `Authorization: Bearer <token>` to every call on the client call path
/// (`ServiceBuilder::client_layer`), and to every message on the publish path
/// (`ServiceBuilder::publish_layer`), that does not carry an `Authorization` entry already (a
/// token set on the request itself wins, so a handler can pass its caller's token on).
///
/// Every call means every service the client calls, whoever registered it, over whatever
/// transport reaches it. Two limits keep the token where it is meant to go:
/// - [`BearerLayer::only_to`]: only to the services named (on the publish path: the topics).
/// - [`BearerLayer::tls_only`]: only over TLS. The client decides per node, once it knows
///   which transport dials it: the token is removed from every attempt or stream whose
///   transport does not dial with TLS (`MICRO_TLS_*`, or the transports' `tls` option), and
///   from every transport that cannot say, such as the in-process `memory` one. Brokers do not
///   say whether they use TLS, so a `tls_only` layer on the publish path sends no token.
///
/// Without `tls_only` the token travels as the transport carries it: in the clear without TLS.
#[derive(Clone)]
pub struct BearerLayer {
    token: TokenFn,
    /// The services (or topics) the token goes to; all when `None`.
    only_to: Option<Arc<[String]>>,
    tls_only: bool,
}

impl fmt::Debug for BearerLayer {
    // The token is left out: it is a credential.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerLayer")
            .field("only_to", &self.only_to)
            .field("tls_only", &self.tls_only)
            .finish_non_exhaustive()
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
            tls_only: false,
        }
    }

    /// Sends the token only on calls to these services (by their registered name), or, on the
    /// publish path, only on messages to these topics; others go without it.
    pub fn only_to<S: Into<String>>(mut self, services: impl IntoIterator<Item = S>) -> Self {
        self.only_to = Some(services.into_iter().map(Into::into).collect());
        self
    }

    /// Sends the `Authorization` entry only over transports that dial with TLS, whoever set
    /// it (this layer, or the request itself), deciding for each node a call tries
    /// ([`CallOptions::tls_only_metadata`](micro_core::rpc::CallOptions)). A call to a
    /// plaintext node still goes, without the token, and its server answers as it answers
    /// anonymous callers (a `401` behind an auth layer).
    pub fn tls_only(mut self) -> Self {
        self.tls_only = true;
        self
    }

    /// Whether the token goes to `name` (a service or a topic).
    fn meant_for(&self, name: &str) -> bool {
        self.only_to
            .as_deref()
            .is_none_or(|only| only.iter().any(|s| s == name))
    }

    /// Adds the token to `metadata` unless it carries an `Authorization` entry already.
    fn attach(&self, metadata: &mut Metadata) {
        if !metadata.contains_key(AUTHORIZATION) {
            if let Some(token) = (self.token)() {
                metadata.insert(AUTHORIZATION, format!("Bearer {token}"));
            }
        }
    }
}

impl<S> Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            layer: self.clone(),
        }
    }
}

/// A call (or publish) service behind a [`BearerLayer`].
#[derive(Clone)]
pub struct Bearer<S> {
    inner: S,
    layer: BearerLayer,
}

impl<S: fmt::Debug> fmt::Debug for Bearer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bearer")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
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
        Service::<Call>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut call: Call) -> S::Future {
        if self.layer.meant_for(&call.request.service) {
            self.layer.attach(&mut call.request.metadata);
        }
        if self.layer.tls_only {
            let names = &mut call.options.tls_only_metadata;
            if !names.iter().any(|n| n.eq_ignore_ascii_case(AUTHORIZATION)) {
                names.push(AUTHORIZATION.to_string());
            }
        }
        self.inner.call(call)
    }
}

impl<S> Service<Publication> for Bearer<S>
where
    S: Service<Publication, Response = (), Error = Error>,
{
    type Response = ();
    type Error = Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Service::<Publication>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut publication: Publication) -> S::Future {
        // No broker says whether its connection is TLS: a TLS-only token stays home.
        if !self.layer.tls_only && self.layer.meant_for(&publication.topic) {
            self.layer.attach(&mut publication.message.header);
        }
        self.inner.call(publication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_core::broker::Message;
    use micro_core::rpc::{CallOptions, Request};

    /// The `Authorization` a call to `service` leaves with through `layer`, and the entries it
    /// asks the client to keep off plaintext.
    async fn sent(layer: &BearerLayer, service: &str) -> (Option<String>, Vec<String>) {
        let inner = tower::service_fn(|call: Call| async move {
            let seen = call.request.metadata.get(AUTHORIZATION).unwrap_or_default();
            let tls_only = call.options.tls_only_metadata.join(",");
            Ok::<_, Error>(rpc::Response {
                body: format!("{seen}|{tls_only}").into(),
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
        let reply = bearer.call(call).await.expect("the inner service answers");
        let reply = String::from_utf8_lossy(&reply.body).into_owned();
        let (token, tls_only) = reply.split_once('|').unwrap_or_default();
        let token = Some(token.to_string()).filter(|t| !t.is_empty());
        let tls_only = tls_only
            .split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        (token, tls_only)
    }

    /// The `Authorization` header a message to `topic` leaves with through `layer`.
    async fn published(layer: &BearerLayer, topic: &str) -> Option<String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = tower::service_fn(move |p: Publication| {
            let _ = tx.send(p.message.header.get(AUTHORIZATION).map(str::to_string));
            async { Ok::<_, Error>(()) }
        });
        let publication = Publication {
            topic: topic.to_string(),
            message: Message::default(),
        };
        let mut bearer = layer.layer(inner);
        bearer.call(publication).await.expect("published");
        rx.try_recv().expect("the inner service saw the message")
    }

    #[tokio::test]
    async fn the_token_goes_only_where_it_is_meant_to() {
        let everywhere = BearerLayer::new("t0k");
        let (token, tls_only) = sent(&everywhere, "billing").await;
        assert_eq!(token.as_deref(), Some("Bearer t0k"));
        assert!(tls_only.is_empty(), "{tls_only:?}");
        let limited = BearerLayer::new("t0k").only_to(["greeter"]);
        assert_eq!(
            sent(&limited, "greeter").await.0.as_deref(),
            Some("Bearer t0k")
        );
        assert_eq!(sent(&limited, "billing").await.0, None);
    }

    #[tokio::test]
    async fn a_tls_only_token_is_left_to_the_client_to_keep_off_plaintext() {
        let layer = BearerLayer::new("t0k").tls_only();
        let (token, tls_only) = sent(&layer, "greeter").await;
        assert_eq!(token.as_deref(), Some("Bearer t0k"));
        assert_eq!(tls_only, [AUTHORIZATION]);
    }

    #[tokio::test]
    async fn messages_carry_the_token_unless_it_must_travel_over_tls() {
        assert_eq!(
            published(&BearerLayer::new("t0k"), "orders")
                .await
                .as_deref(),
            Some("Bearer t0k")
        );
        let topics = BearerLayer::new("t0k").only_to(["orders"]);
        assert!(published(&topics, "orders").await.is_some());
        assert_eq!(published(&topics, "audit").await, None);
        let tls_only = BearerLayer::new("t0k").tls_only();
        assert_eq!(published(&tls_only, "orders").await, None);
    }
}
