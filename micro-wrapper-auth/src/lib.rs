//! Bearer-token authentication for Micro for Rust, for calls and for events.
//!
//! - [`AuthLayer`] goes on the handler path (`ServiceBuilder::handler_layer`). It reads the
//!   caller's `Authorization: Bearer <token>` metadata, checks the token with a [`Verifier`],
//!   applies the endpoint's [`Access`] rule, and hands the verified [`Claims`] to the handler as
//!   metadata ([`SUBJECT`], [`SCOPES`], [`ROLES`], [`CLAIMS`]). A call without a usable token
//!   gets `401 Unauthorized`; a call whose token is good but lacks the scope or role the
//!   endpoint needs gets `403 Forbidden`.
//! - The same [`AuthLayer`] goes on the subscriber path (`ServiceBuilder::subscriber_layer`),
//!   for brokers whose messages carry tokens: the token is the message's `Authorization`
//!   header, rules name topics as they name endpoints, and the claims reach the subscriber as
//!   headers of the event (`Claims::from_metadata(&event.header)`). An event refused with a
//!   401 or 403 never reaches the subscriber: it is nacked without requeue (dead-lettered by
//!   brokers that keep dead letters) and its publisher hears the refusal where the broker
//!   answers publishers (the http broker does).
//! - [`BearerLayer`] goes on the client call path (`ServiceBuilder::client_layer`) and attaches
//!   a token to every call that does not carry one; on the publish path
//!   (`ServiceBuilder::publish_layer`) it attaches it to every published message, as the
//!   `Authorization: Bearer <token>` header Go Micro's auth wrapper reads. Two limits keep the
//!   token where it is meant to go: [`BearerLayer::only_to`] (these services, or on the publish
//!   path these topics) and [`BearerLayer::tls_only`] (only over transports that dial with TLS,
//!   decided by the client for each node it tries; a transport that cannot say gets no token,
//!   nor does any broker). Without `tls_only` the token is as safe as the transport: use TLS
//!   (`MICRO_TLS_*`) off this machine.
//! - [`JwtVerifier`] checks JSON Web Tokens signed with HS256 (a shared secret) or RS256 (the
//!   issuer's public key), through the `jsonwebtoken` crate; [`JwtSigner`] makes them. Anything
//!   else (opaque tokens, an introspection endpoint) is a [`Verifier`] away.
//!
//! # What a JWT must pass
//!
//! | check | by default | |
//! |---|---|---|
//! | signature | always | with the verifier's key |
//! | algorithm | always | only the verifier's own (no `none`, no HS/RS confusion) |
//! | `exp` | always, required | 60 s of leeway ([`JwtVerifier::leeway`]) |
//! | `nbf` | when the token has one | same leeway |
//! | `sub` | always, required | it becomes [`Claims::subject`] |
//! | `iss` | only when set | [`JwtVerifier::issuer`]; then required |
//! | `aud` | only when set | [`JwtVerifier::audience`]; then required |
//! | `iat`, `jti` | never | no replay protection |
//!
//! ```
//! use micro_wrapper_auth::{AuthLayer, BearerLayer, JwtSigner, JwtVerifier};
//!
//! let secret = b"a shared secret of at least 32 bytes!!";
//! let auth = AuthLayer::new(JwtVerifier::hs256(secret))
//!     .public("Greeter.Hello")          // anyone may call it
//!     .public("Status.*")               // every endpoint of the Status handler
//!     .require_scope("Admin.*", "admin"); // valid token with the `admin` scope
//! // everything else: any valid token
//!
//! let token = JwtSigner::hs256(secret)
//!     .sign(&serde_json::json!({"sub": "alice", "scope": "admin", "exp": 4102444800u64}))
//!     .expect("sign");
//! let attach = BearerLayer::new(token);
//! // micro::Service::builder("greeter").handler_layer(auth).client_layer(attach)
//! # let _ = (auth, attach);
//! ```
//!
//! A handler reads who called it from its request's metadata:
//!
//! ```
//! use micro_core::Metadata;
//! use micro_wrapper_auth::{Claims, SUBJECT};
//!
//! // In a handler: `who_called(request.metadata())`.
//! fn who_called(metadata: &Metadata) -> Option<String> {
//!     let subject = metadata.get(SUBJECT)?; // "alice"
//!     let claims = Claims::from_metadata(metadata)?; // scopes, roles, every raw claim
//!     Some(format!("{subject} (scopes: {:?})", claims.scopes))
//! }
//! # assert_eq!(who_called(&Metadata::new()), None);
//! ```
//!
//! Events carry them the same way, as headers:
//!
//! ```
//! use micro_wrapper_auth::{AuthLayer, BearerLayer, JwtVerifier};
//!
//! # let (secret, token) = (b"a shared secret of at least 32 bytes!!", "t");
//! // The subscriber: every event on `orders.*` needs a token granting `orders:write`.
//! let events = AuthLayer::new(JwtVerifier::hs256(secret)).require_scope("orders.*", "orders:write");
//! // The publisher: its token on every message.
//! let publish = BearerLayer::new(token);
//! // micro::Service::builder("audit").subscriber_layer(events).publish_layer(publish)
//! # let _ = (events, publish);
//! ```
//!
//! Those entries cannot be forged: every server drops the `Micro-Auth-*` entries a caller sends
//! before any handler layer runs (with or without this crate), every subscriber drops those a
//! publisher's message carries, and the layer sets them only from a verified token.
//! `Debug.Health` is public unless a rule says otherwise, so health probes keep working, as in
//! Go Micro.

mod claims;
mod client;
mod jwt;
mod rules;
mod server;

pub use claims::Claims;
pub use client::{Bearer, BearerLayer};
pub use jsonwebtoken;
pub use jwt::{JwtSigner, JwtVerifier};
pub use rules::{Access, Rules};
pub use server::{AuthLayer, Authenticated};

use micro_core::{Error, Metadata};

/// The metadata key carrying the caller's token, as `Bearer <token>`.
pub const AUTHORIZATION: &str = "Authorization";

/// The prefix of the metadata entries this crate sets for handlers; incoming entries with it
/// are removed before verification.
pub const PREFIX: &str = micro_core::headers::AUTH_PREFIX;

/// The verified subject (`sub`), for the handler.
pub const SUBJECT: &str = "Micro-Auth-Subject";

/// The verified scopes, separated by spaces, for the handler.
pub const SCOPES: &str = "Micro-Auth-Scopes";

/// The verified roles, separated by spaces, for the handler.
pub const ROLES: &str = "Micro-Auth-Roles";

/// All verified claims as JSON, for the handler ([`Claims::from_metadata`] reads them back).
pub const CLAIMS: &str = "Micro-Auth-Claims";

/// Checks a token and says whose it is.
#[async_trait::async_trait]
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// The claims of a good token. A bad token is a `401` [`Error`]; any other error (a `503`
    /// when the authority cannot be reached, say) goes back to the caller as it is.
    async fn verify(&self, token: &str) -> Result<Claims, Error>;
}

/// The token of a `Bearer` `Authorization` entry, if the metadata has one.
pub fn bearer_token(metadata: &Metadata) -> Option<&str> {
    bearer_of(metadata.get(AUTHORIZATION)?)
}

/// The token of an `Authorization` value (`Bearer <token>`, the scheme in any case), if it
/// is one.
pub fn bearer_of(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_whatever_the_scheme_case() {
        let md = |v: &str| -> Metadata { [("authorization", v)].into_iter().collect() };
        assert_eq!(bearer_token(&md("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&md("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&md("Basic abc")), None);
        assert_eq!(bearer_token(&md("Bearer ")), None);
        assert_eq!(bearer_token(&md("abc")), None);
        assert_eq!(bearer_token(&Metadata::new()), None);
    }
}
