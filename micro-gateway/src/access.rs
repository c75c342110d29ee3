//! Who may call: bearer tokens (static or JWT) with per-endpoint rules, browser origins, and
//! a rate per client.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use micro::auth::{Access, Claims, JwtVerifier, Rules, Verifier};
use micro::{Error, Result};

use crate::ID;

/// Bearer-token authentication for the gateway: a [`Verifier`] (static tokens, a JWT key, or
/// your own) and the rule each endpoint needs.
///
/// Rules name endpoints as Micro's auth does (`Greeter.Hello`, `Greeter.*`, `*`); the
/// gateway's own routes are named `Event.<topic>` (`POST /event/{topic}` and
/// `GET /event/{topic}`), `Gateway.Services` (`/services`, `/services/{name}`),
/// `Gateway.OpenAPI` (`/openapi.json`) and `Gateway.Dashboard` (the dashboard's pages, which
/// also need what `Gateway.Services` needs). `/health` is always public. Without a rule, any
/// valid token will do.
#[derive(Debug, Clone)]
pub struct Auth {
    verifier: Arc<dyn Verifier>,
    rules: Rules,
}

impl Auth {
    /// Tokens checked by `verifier`; every endpoint needs a valid one until rules say more.
    pub fn new(verifier: impl Verifier + 'static) -> Self {
        Auth {
            verifier: Arc::new(verifier),
            rules: Rules::default(),
        }
    }

    /// Fixed tokens, each with the scopes it grants (Go Micro's gateway takes one static
    /// token). The caller's subject is `token-<n>`, its place in the list from 1.
    pub fn tokens<T, S>(tokens: impl IntoIterator<Item = (T, S)>) -> Self
    where
        T: Into<String>,
        S: IntoIterator<Item = String>,
    {
        let tokens = tokens
            .into_iter()
            .map(|(t, scopes)| (t.into(), scopes.into_iter().collect()))
            .collect();
        Auth::new(StaticTokens(tokens))
    }

    /// Sets what `pattern` (`Greeter.Hello`, `Greeter.*`, `*`) asks of callers.
    pub fn rule(mut self, pattern: &str, access: Access) -> Self {
        self.rules.set(pattern, access);
        self
    }

    /// Lets anyone call `pattern`, token or not.
    pub fn public(self, pattern: &str) -> Self {
        self.rule(pattern, Access::Public)
    }

    /// Asks a valid token with `scope` for `pattern`.
    pub fn require_scope(self, pattern: &str, scope: &str) -> Self {
        self.rule(pattern, Access::AnyScope(vec![scope.to_string()]))
    }

    /// Whether `endpoint` needs no token.
    pub fn is_public(&self, endpoint: &str) -> bool {
        *self.rules.access(endpoint) == Access::Public
    }

    /// From `MICRO_GATEWAY_TOKENS` (comma separated; a token may be followed by the scopes
    /// it grants, space separated: `s3cret admin,t0ken greet`), `MICRO_GATEWAY_JWT_SECRET`
    /// (HS256) or `MICRO_GATEWAY_JWT_KEY` (a file with the issuer's RS256 public key in PEM),
    /// then `MICRO_GATEWAY_PUBLIC` (endpoint patterns anyone may call) and
    /// `MICRO_GATEWAY_SCOPES` (`pattern=scope` pairs, comma separated). `None` when no token
    /// source is set.
    pub fn from_env() -> Result<Option<Auth>> {
        Auth::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Auth>> {
        let sources = [
            var("MICRO_GATEWAY_TOKENS").map(|v| ("MICRO_GATEWAY_TOKENS", v)),
            var("MICRO_GATEWAY_JWT_SECRET").map(|v| ("MICRO_GATEWAY_JWT_SECRET", v)),
            var("MICRO_GATEWAY_JWT_KEY").map(|v| ("MICRO_GATEWAY_JWT_KEY", v)),
        ];
        let mut set = sources.into_iter().flatten();
        let Some((name, value)) = set.next() else {
            return Ok(None);
        };
        if let Some((other, _)) = set.next() {
            return Err(Error::bad_request(
                ID,
                format!("set one of {name} and {other}, not both"),
            ));
        }
        let mut auth = match name {
            "MICRO_GATEWAY_TOKENS" => {
                let tokens: Vec<(String, Vec<String>)> = list(&value)
                    .map(|entry| {
                        let mut words = entry.split_whitespace().map(str::to_string);
                        let token = words.next().unwrap_or_default();
                        (token, words.collect())
                    })
                    .collect();
                Auth::tokens(tokens)
            }
            "MICRO_GATEWAY_JWT_SECRET" => Auth::new(JwtVerifier::hs256(value.trim())),
            _ => {
                let pem = std::fs::read(value.trim()).map_err(|e| {
                    micro::core::env::invalid(name, &value, &format!("a readable PEM file ({e})"))
                })?;
                Auth::new(JwtVerifier::rs256_pem(pem)?)
            }
        };
        if let Some(v) = var("MICRO_GATEWAY_PUBLIC") {
            for pattern in list(&v) {
                auth = auth.public(pattern);
            }
        }
        if let Some(v) = var("MICRO_GATEWAY_SCOPES") {
            let mut scopes: Vec<(&str, Vec<String>)> = Vec::new();
            for pair in list(&v) {
                let Some((pattern, scope)) = pair.split_once('=') else {
                    return Err(micro::core::env::invalid(
                        "MICRO_GATEWAY_SCOPES",
                        &v,
                        "pattern=scope pairs, comma separated",
                    ));
                };
                let (pattern, scope) = (pattern.trim(), scope.trim().to_string());
                match scopes.iter_mut().find(|(p, _)| *p == pattern) {
                    Some((_, list)) => list.push(scope),
                    None => scopes.push((pattern, vec![scope])),
                }
            }
            for (pattern, list) in scopes {
                auth = auth.rule(pattern, Access::AnyScope(list));
            }
        }
        Ok(Some(auth))
    }

    /// The caller's claims when `endpoint` lets it in: `401` without a good token (unless
    /// the endpoint is public), `403` when the token lacks what the endpoint asks.
    async fn check(&self, headers: &HeaderMap, endpoint: &str) -> Result<Option<Claims>> {
        let access = self.rules.access(endpoint);
        let token = bearer(headers);
        if *access == Access::Public && token.is_none() {
            return Ok(None);
        }
        let Some(token) = token else {
            return Err(Error::unauthorized(
                ID,
                format!("{endpoint} needs a bearer token (Authorization: Bearer <token>)"),
            ));
        };
        let claims = self.verifier.verify(token).await?;
        access
            .allows(&claims)
            .map_err(|missing| Error::forbidden(ID, format!("{endpoint} needs {missing}")))?;
        Ok(Some(claims))
    }
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    micro::auth::bearer_of(headers.get(http::header::AUTHORIZATION)?.to_str().ok()?)
}

/// Fixed tokens and their scopes.
struct StaticTokens(Vec<(String, Vec<String>)>);

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticTokens({} tokens)", self.0.len())
    }
}

#[async_trait::async_trait]
impl Verifier for StaticTokens {
    async fn verify(&self, token: &str) -> Result<Claims> {
        // Every token is compared, in time that does not depend on where they differ.
        let mut found = None;
        for (n, (known, scopes)) in self.0.iter().enumerate() {
            if same(known.as_bytes(), token.as_bytes()) {
                found = Some((n, scopes));
            }
        }
        let (n, scopes) =
            found.ok_or_else(|| Error::unauthorized(ID, "the bearer token is not known"))?;
        let mut claims = Claims::new(format!("token-{}", n + 1));
        claims.scopes = scopes.clone();
        Ok(claims)
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Requests per second for each client: the token's subject, or the address it calls from.
pub(crate) struct Limiter(DefaultKeyedRateLimiter<String>);

/// Clients remembered before the idle ones are forgotten.
const MAX_CLIENTS: usize = 100_000;

impl Limiter {
    pub(crate) fn new(per_second: u32) -> Option<Limiter> {
        let rate = NonZeroU32::new(per_second)?;
        Some(Limiter(RateLimiter::keyed(Quota::per_second(rate))))
    }

    fn admit(&self, key: String) -> Result<()> {
        if self.0.len() > MAX_CLIENTS {
            self.0.retain_recent();
        }
        self.0.check_key(&key).map_err(|_| {
            Error::new(
                ID,
                429,
                format!("too many requests from {key}: slow down and try again"),
            )
        })
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limiter({} clients)", self.0.len())
    }
}

/// Lets a request for `endpoint` through, with the caller's claims when it showed a token,
/// or says why not: the token and rules when the gateway has auth, then the client's rate.
pub(crate) async fn admit(
    auth: Option<&Auth>,
    limiter: Option<&Limiter>,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    endpoint: &str,
) -> Result<Option<Claims>> {
    let claims = match auth {
        Some(auth) => auth.check(headers, endpoint).await?,
        None => None,
    };
    if let Some(limiter) = limiter {
        let key = match (&claims, peer) {
            (Some(claims), _) => format!("subject {}", claims.subject),
            (None, Some(ip)) => format!("address {ip}"),
            (None, None) => "an unknown address".to_string(),
        };
        limiter.admit(key)?;
    }
    Ok(claims)
}

/// Whether a host (`host`, `host:port`, `[::1]:port`) is this machine.
fn loopback(host: &str) -> bool {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a page at `origin` may call: loopback pages always, others when listed (`*` for
/// any).
pub(crate) fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    loopback(host)
        || allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The browser checks: a page may call only from an allowed origin. Without auth the
/// gateway also serves this machine's programs only: a loopback `Host` (no DNS rebinding)
/// and no cross-site request without an allowed `Origin`.
pub(crate) fn browser_allowed(
    headers: &HeaderMap,
    allowed: &[String],
    authenticated: bool,
) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = header(http::header::ORIGIN.as_str()) {
        if !origin_allowed(origin, allowed) {
            return false;
        }
    } else if !authenticated {
        let site = header("sec-fetch-site");
        if site.is_some_and(|s| s == "cross-site" || s == "same-site") {
            return false;
        }
    }
    authenticated || header(http::header::HOST.as_str()).is_none_or(loopback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }

    #[test]
    fn env_settings_build_rules() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(Auth::from_lookup(env(&[])).expect("no auth").is_none());
        let auth = Auth::from_lookup(env(&[
            ("MICRO_GATEWAY_TOKENS", "one admin, two"),
            ("MICRO_GATEWAY_PUBLIC", "Greeter.Hello"),
            ("MICRO_GATEWAY_SCOPES", "Admin.*=admin,Admin.*=root"),
        ]))
        .expect("valid")
        .expect("auth");
        assert!(auth.is_public("Greeter.Hello"));
        assert_eq!(
            *auth.rules.access("Admin.Reset"),
            Access::AnyScope(vec!["admin".into(), "root".into()])
        );
        let both = Auth::from_lookup(env(&[
            ("MICRO_GATEWAY_TOKENS", "one"),
            ("MICRO_GATEWAY_JWT_SECRET", "s"),
        ]));
        assert!(both.is_err());
        let bad = Auth::from_lookup(env(&[
            ("MICRO_GATEWAY_TOKENS", "one"),
            ("MICRO_GATEWAY_SCOPES", "Admin.*"),
        ]));
        assert!(bad.is_err());
    }

    #[test]
    fn origins() {
        let listed = ["https://app.example".to_string()];
        assert!(origin_allowed("http://localhost:3000", &[]));
        assert!(origin_allowed("http://[::1]:3000", &[]));
        assert!(!origin_allowed("https://app.example", &[]));
        assert!(origin_allowed("https://app.example", &listed));
        assert!(!origin_allowed("https://evil.example", &listed));
        assert!(origin_allowed("https://evil.example", &["*".to_string()]));
    }
}
