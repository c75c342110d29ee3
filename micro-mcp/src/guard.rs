//! Who may call which tool: the caller, the scopes a tool asks of it, and a rate for each
//! caller of each tool.

use std::fmt;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use micro::auth::{Access, Claims};
use micro::{Error, Result};
use rmcp::service::RequestContext;
use rmcp::RoleServer;

use crate::options::rule_for;
use crate::{McpOptions, ID};

/// How many (tool, caller) pairs a rate remembers before it forgets idle ones.
const MAX_KEYS: usize = 100_000;

/// Who calls.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// Not over HTTP (stdio, or a transport in the same process): the user who started the
    /// server, who may call every tool.
    Local,
    /// Over HTTP, with a token the gateway verified (its claims).
    Token(Claims),
    /// Over HTTP, with no verified token.
    Anonymous,
}

impl Caller {
    /// The caller of a request: rmcp's HTTP transport puts the request's head in the
    /// context, and the gateway puts the verified token's claims in the head.
    pub(crate) fn of(context: &RequestContext<RoleServer>) -> Caller {
        match context.extensions.get::<http::request::Parts>() {
            None => Caller::Local,
            Some(head) => match head.extensions.get::<Claims>() {
                Some(claims) => Caller::Token(claims.clone()),
                None => Caller::Anonymous,
            },
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Local => f.write_str("local"),
            Caller::Token(claims) => write!(f, "subject {}", claims.subject),
            Caller::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// The scope checks and rates of [`McpOptions`].
pub(crate) struct Guard {
    rates: Vec<(String, DefaultKeyedRateLimiter<String>)>,
}

impl Guard {
    pub(crate) fn new(opts: &McpOptions) -> Guard {
        let rates = opts
            .rate_limits
            .iter()
            .map(|(pattern, rate)| {
                (
                    pattern.clone(),
                    RateLimiter::keyed(Quota::per_second(*rate)),
                )
            })
            .collect();
        Guard { rates }
    }

    /// Lets `caller` call `tool`, which asks any one of `scopes` (none: anyone), or says why
    /// not: `401` without a token, `403` without the scope, `429` past the tool's rate.
    pub(crate) fn admit(&self, tool: &str, scopes: &[String], caller: &Caller) -> Result<()> {
        if !scopes.is_empty() {
            let rule = Access::AnyScope(scopes.to_vec());
            match caller {
                Caller::Local => {}
                Caller::Anonymous => {
                    return Err(Error::unauthorized(
                        ID,
                        format!(
                            "{tool} needs a bearer token with scope {}",
                            scopes.join(" or ")
                        ),
                    ))
                }
                Caller::Token(claims) => rule
                    .allows(claims)
                    .map_err(|missing| Error::forbidden(ID, format!("{tool} needs {missing}")))?,
            }
        }
        if let Some(rate) = rule_for(&self.rates, tool) {
            if rate.len() > MAX_KEYS {
                rate.retain_recent();
            }
            rate.check_key(&format!("{tool} by {caller}"))
                .map_err(|_| {
                    Error::new(
                        ID,
                        429,
                        format!("too many calls of {tool} by {caller}: slow down and try again"),
                    )
                })?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let patterns: Vec<&str> = self.rates.iter().map(|(p, _)| p.as_str()).collect();
        f.debug_struct("Guard").field("rates", &patterns).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn token(scopes: &[&str]) -> Caller {
        let mut claims = Claims::new("ann");
        claims.scopes = scopes.iter().map(|s| s.to_string()).collect();
        Caller::Token(claims)
    }

    #[test]
    fn a_scoped_tool_asks_a_token_with_the_scope() {
        let guard = Guard::new(&McpOptions::default());
        let scopes = vec!["greet".to_string()];
        let tool = "greeter.Greeter.Hello";
        assert!(guard.admit(tool, &scopes, &token(&["greet"])).is_ok());
        assert!(guard.admit(tool, &scopes, &Caller::Local).is_ok());
        assert_eq!(
            guard
                .admit(tool, &scopes, &token(&["read"]))
                .map_err(|e| e.code),
            Err(403)
        );
        assert_eq!(
            guard
                .admit(tool, &scopes, &Caller::Anonymous)
                .map_err(|e| e.code),
            Err(401)
        );
        assert!(guard.admit(tool, &[], &Caller::Anonymous).is_ok());
    }

    #[test]
    fn each_caller_has_its_own_rate_for_each_tool() {
        let opts = McpOptions {
            rate_limits: vec![("greeter.*".to_string(), NonZeroU32::MIN)],
            ..McpOptions::default()
        };
        let guard = Guard::new(&opts);
        let hello = "greeter.Greeter.Hello";
        assert!(guard.admit(hello, &[], &token(&[])).is_ok());
        assert_eq!(
            guard.admit(hello, &[], &token(&[])).map_err(|e| e.code),
            Err(429)
        );
        // Another caller, another tool, a tool with no rate: each its own.
        assert!(guard.admit(hello, &[], &Caller::Local).is_ok());
        assert!(guard
            .admit("greeter.Greeter.Stream", &[], &token(&[]))
            .is_ok());
        assert!(guard.admit("blog.Blog.Create", &[], &token(&[])).is_ok());
        assert!(guard.admit("blog.Blog.Create", &[], &token(&[])).is_ok());
    }
}
