//! The handler side: verify the caller's token, apply the endpoint's rule, hand the claims on.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use micro_core::rpc::{self, ServerCall};
use micro_core::{BoxFuture, Error, Metadata, Result};
use tower_layer::Layer;
use tower_service::Service;

use crate::{bearer_token, Access, Claims, Rules, Verifier, PREFIX};

/// Authenticates and authorises calls on the handler path. Clones share the verifier and rules.
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

    /// Decides a call: `Ok` with the claims to hand on (none for an anonymous public call), or
    /// the 401/403 to answer.
    async fn check(&self, id: &str, endpoint: &str, metadata: &Metadata) -> Result<Option<Claims>> {
        let access = self.rules.access(endpoint);
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
            Error::unauthorized(
                id,
                format!(
                    "{endpoint} needs a token: send `Authorization: Bearer <token>` in the \
                     call's metadata"
                ),
            )
        })?;
        let claims = self.verifier.verify(token).await.map_err(|mut e| {
            e.id = id.to_string();
            e
        })?;
        access.allows(&claims).map_err(|missing| {
            Error::forbidden(
                id,
                format!(
                    "{} may not call {endpoint}: it needs {missing}",
                    claims.subject
                ),
            )
        })?;
        Ok(Some(claims))
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
            if let Some(claims) = auth.check(&id, &req.endpoint, &req.metadata).await? {
                claims.write_to(&mut req.metadata);
            }
            inner.call(call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
