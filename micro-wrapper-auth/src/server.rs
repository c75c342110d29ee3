//! The receiving side: verify the caller's (or publisher's) token, apply the endpoint's (or
//! topic's) rule, hand the claims on.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use micro_core::broker::Delivery;
use micro_core::rpc::{self, ServerCall};
use micro_core::{BoxFuture, Error, Metadata, Result};
use tower_layer::Layer;
use tower_service::Service;

use crate::{bearer_token, Access, Claims, Rules, Verifier, PREFIX};

/// Authenticates and authorises calls on the handler path (`ServiceBuilder::handler_layer`) and
/// events on the subscriber path (`ServiceBuilder::subscriber_layer`). Clones share the
/// verifier and rules.
///
/// On the subscriber path the token is the message's `Authorization: Bearer <token>` header
/// (what [`BearerLayer`](crate::BearerLayer) on the publish path attaches, and what a Go Micro
/// publisher sends when its context metadata carries one), and rules name topics the way they
/// name endpoints (`orders.placed`, `orders.*`, `*`). An event without a usable token, or
/// whose token lacks what the topic's rule asks, never reaches the subscriber: it is nacked
/// without requeue (the same token would come back with every redelivery; brokers with dead
/// letters dead-letter it) and the subscriber path fails with the `401`/`403`. A verifier that
/// fails otherwise (a `503`: the authority is unreachable) leaves the message to the broker's
/// usual redelivery. A good token's claims reach the subscriber as headers of the event, as
/// they reach handlers as metadata: [`Claims::from_metadata`]`(&event.header)`.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<dyn Verifier>,
    rules: Arc<Rules>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("verifier", &self.verifier)
            .field("rules", &self.rules)
            .finish()
    }
}

impl AuthLayer {
    /// Checks tokens with `verifier`; every endpoint needs a valid token until rules say
    /// otherwise (`Debug.Health` excepted).
    pub fn new(verifier: impl Verifier + 'static) -> Self {
        Self::with_verifier(Arc::new(verifier))
    }

    /// The same, with a verifier shared with other code.
    pub fn with_verifier(verifier: Arc<dyn Verifier>) -> Self {
        AuthLayer {
            verifier,
            rules: Arc::new(Rules::default()),
        }
    }

    /// Sets the rule for `pattern`: `Greeter.Hello`, `Greeter.*` or `*`.
    pub fn rule(mut self, pattern: &str, access: Access) -> Self {
        Arc::make_mut(&mut self.rules).set(pattern, access);
        self
    }

    /// Lets anyone call the endpoints of `pattern`.
    pub fn public(self, pattern: &str) -> Self {
        self.rule(pattern, Access::Public)
    }

    /// The endpoints of `pattern` need a token granting `scope`.
    pub fn require_scope(self, pattern: &str, scope: &str) -> Self {
        self.rule(pattern, Access::AnyScope(vec![scope.to_string()]))
    }

    /// The endpoints of `pattern` need a token with `role`.
    pub fn require_role(self, pattern: &str, role: &str) -> Self {
        self.rule(pattern, Access::AnyRole(vec![role.to_string()]))
    }

    /// The rule for endpoints no pattern matches ([`Access::Authenticated`] by default; make it
    /// [`Access::Public`] to protect only the endpoints named).
    pub fn default_access(mut self, access: Access) -> Self {
        Arc::make_mut(&mut self.rules).set_default(access);
        self
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Decides a call or an event: `Ok` with the claims to hand on (none for an anonymous
    /// public one), or the 401/403 to answer.
    async fn check(
        &self,
        id: &str,
        target: Target<'_>,
        metadata: &Metadata,
    ) -> Result<Option<Claims>> {
        let name = target.name();
        let access = self.rules.access(name);
        let token = bearer_token(metadata);
        if *access == Access::Public {
            // A token on a public call is a bonus: its claims go on if it is good, and a bad
            // one is no reason to refuse what anyone may do.
            return Ok(match token {
                Some(t) => self.verifier.verify(t).await.ok(),
                None => None,
            });
        }
        let token = token.ok_or_else(|| {
            let detail = match target {
                Target::Endpoint(endpoint) => format!(
                    "{endpoint} needs a token: send `Authorization: Bearer <token>` in the \
                     call's metadata"
                ),
                Target::Topic(topic) => format!(
                    "events on {topic} need a token: publish them with an \
                     `Authorization: Bearer <token>` header"
                ),
            };
            Error::unauthorized(id, detail)
        })?;
        let claims = self.verifier.verify(token).await.map_err(|mut e| {
            e.id = id.to_string();
            e
        })?;
        access.allows(&claims).map_err(|missing| {
            let subject = &claims.subject;
            let detail = match target {
                Target::Endpoint(endpoint) => {
                    format!("{subject} may not call {endpoint}: it needs {missing}")
                }
                Target::Topic(topic) => {
                    format!("{subject} may not publish to {topic}: it needs {missing}")
                }
            };
            Error::forbidden(id, detail)
        })?;
        Ok(Some(claims))
    }
}

/// What a rule is looked up by.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// A call's endpoint (`Greeter.Hello`).
    Endpoint(&'a str),
    /// An event's topic (`orders.placed`).
    Topic(&'a str),
}

impl<'a> Target<'a> {
    fn name(self) -> &'a str {
        match self {
            Target::Endpoint(n) | Target::Topic(n) => n,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            auth: self.clone(),
        }
    }
}

/// A handler service behind an [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    auth: AuthLayer,
}

/// Removes every `Micro-Auth-*` entry, so that only the layer sets them.
fn strip_auth_entries(metadata: &mut Metadata) {
    metadata.retain(|k, _| {
        !k.get(..PREFIX.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(PREFIX))
    });
}

impl<S> Service<ServerCall> for Authenticated<S>
where
    S: Service<ServerCall, Response = rpc::Response, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = rpc::Response;
    type Error = Error;
    type Future = BoxFuture<'static, Result<rpc::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: ServerCall) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let req = &mut call.request;
            strip_auth_entries(&mut req.metadata);
            let id = format!("{}.{}", req.service, req.endpoint);
            let target = Target::Endpoint(&req.endpoint);
            if let Some(claims) = auth.check(&id, target, &req.metadata).await? {
                claims.write_to(&mut req.metadata);
            }
            inner.call(call).await
        })
    }
}

impl<S> Service<Delivery> for Authenticated<S>
where
    S: Service<Delivery, Response = (), Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<()>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Service::<Delivery>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut delivery: Delivery) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let header = &mut delivery.message.header;
            strip_auth_entries(header);
            let checked = auth
                .check(&delivery.topic, Target::Topic(&delivery.topic), header)
                .await;
            match checked {
                Ok(Some(claims)) => claims.write_to(&mut delivery.message.header),
                Ok(None) => {}
                Err(e) if e.code == 401 || e.code == 403 => {
                    // Settled here, so that no broker redelivers it: the same token would be
                    // refused again. Should the nack fail, the broker redelivers and this
                    // refuses it again; the refusal is what the caller needs to hear.
                    let _ = delivery.nack(false).await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            inner.call(delivery).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro_core::broker::{Acknowledger, Message};
    use std::sync::Mutex;

    /// Tokens `good` (alice, scope `publish`) and `plain` (bob, no scope); `down` fails as an
    /// unreachable authority does.
    #[derive(Debug)]
    struct Fixed;

    #[async_trait::async_trait]
    impl Verifier for Fixed {
        async fn verify(&self, token: &str) -> Result<Claims> {
            match token {
                "good" => {
                    let mut c = Claims::new("alice");
                    c.scopes = vec!["publish".into()];
                    Ok(c)
                }
                "plain" => Ok(Claims::new("bob")),
                "down" => Err(Error::new("authority", 503, "unreachable")),
                _ => Err(Error::unauthorized("fixed", "unknown token")),
            }
        }
    }

    /// Records how a delivery was settled.
    #[derive(Debug, Default)]
    struct Settled(Mutex<Vec<String>>);

    impl Acknowledger for Settled {
        fn ack(&self) -> BoxFuture<'_, Result<()>> {
            self.0.lock().expect("lock").push("ack".into());
            Box::pin(async { Ok(()) })
        }
        fn nack(&self, requeue: bool) -> BoxFuture<'_, Result<()>> {
            self.0
                .lock()
                .expect("lock")
                .push(format!("nack({requeue})"));
            Box::pin(async { Ok(()) })
        }
    }

    /// Delivers a message on `topic` with `headers` through `auth`: the subscriber's view of
    /// its headers (None when it never ran), the outcome, and how the delivery was settled.
    async fn deliver(
        auth: &AuthLayer,
        topic: &str,
        headers: &[(&str, &str)],
    ) -> (Option<Metadata>, Result<()>, Vec<String>) {
        let seen = Arc::new(Mutex::new(None));
        let seen_by = seen.clone();
        let subscriber = tower::service_fn(move |d: Delivery| {
            *seen_by.lock().expect("lock") = Some(d.message.header.clone());
            async { Ok::<_, Error>(()) }
        });
        let settled = Arc::new(Settled::default());
        let message = Message {
            header: headers.iter().copied().collect(),
            body: Default::default(),
        };
        let delivery = Delivery::new(topic, message, Some(settled.clone()));
        let outcome = auth.layer(subscriber).call(delivery).await;
        let seen = seen.lock().expect("lock").take();
        let settled = settled.0.lock().expect("lock").clone();
        (seen, outcome, settled)
    }

    #[tokio::test]
    async fn events_are_checked_like_calls_and_refusals_are_not_requeued() {
        let auth = AuthLayer::new(Fixed)
            .require_scope("orders.*", "publish")
            .public("news");
        let forged = ("Micro-Auth-Subject", "admin");

        let (seen, outcome, settled) = deliver(
            &auth,
            "orders.placed",
            &[("Authorization", "Bearer good"), forged],
        )
        .await;
        outcome.expect("a good token passes");
        let seen = seen.expect("the subscriber ran");
        assert_eq!(seen.get(crate::SUBJECT), Some("alice"));
        assert_eq!(
            Claims::from_metadata(&seen).map(|c| c.scopes),
            Some(vec!["publish".into()])
        );
        assert!(settled.is_empty(), "{settled:?}");

        for (headers, code) in [
            (vec![forged], 401),
            (vec![("Authorization", "Bearer forged")], 401),
            (vec![("Authorization", "Bearer plain")], 403),
        ] {
            let (seen, outcome, settled) = deliver(&auth, "orders.placed", &headers).await;
            assert_eq!(outcome.expect_err("refused").code, code, "{headers:?}");
            assert!(seen.is_none(), "{headers:?} reached the subscriber");
            assert_eq!(settled, ["nack(false)"], "{headers:?}");
        }

        // An authority that cannot be reached is no verdict on the message: redelivery may
        // succeed, so it is left to the broker.
        let (seen, outcome, settled) =
            deliver(&auth, "orders.placed", &[("Authorization", "Bearer down")]).await;
        assert_eq!(outcome.expect_err("unverified").code, 503);
        assert!(seen.is_none() && settled.is_empty(), "{settled:?}");

        // A public topic takes anonymous events, without the claims a publisher wrote.
        let (seen, outcome, _) = deliver(&auth, "news", &[forged]).await;
        outcome.expect("public");
        assert_eq!(seen.expect("delivered").get(crate::SUBJECT), None);
    }

    #[test]
    fn forged_auth_entries_are_removed_whatever_their_case() {
        let mut md: Metadata = [
            ("micro-auth-subject", "mallory"),
            ("MICRO-AUTH-CLAIMS", "{}"),
            ("Micro-Authority", "kept"),
            ("Trace-Id", "t"),
        ]
        .into_iter()
        .collect();
        strip_auth_entries(&mut md);
        assert_eq!(md.get("Micro-Auth-Subject"), None);
        assert_eq!(md.get("Micro-Auth-Claims"), None);
        assert_eq!(md.get("Micro-Authority"), Some("kept"));
        assert_eq!(md.get("Trace-Id"), Some("t"));
    }
}
