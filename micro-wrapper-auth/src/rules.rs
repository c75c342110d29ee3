//! Which endpoints need what.

use std::collections::HashMap;

use crate::Claims;

/// What an endpoint asks of its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a token.
    Public,
    /// Any caller with a valid token (the default).
    Authenticated,
    /// A valid token granting at least one of these scopes.
    AnyScope(Vec<String>),
    /// A valid token with at least one of these roles.
    AnyRole(Vec<String>),
}

impl Access {
    /// Whether `claims` satisfy the rule; when not, what is missing.
    pub fn allows(&self, claims: &Claims) -> Result<(), String> {
        match self {
            Access::Public | Access::Authenticated => Ok(()),
            Access::AnyScope(scopes) if scopes.iter().any(|s| claims.has_scope(s)) => Ok(()),
            Access::AnyRole(roles) if roles.iter().any(|r| claims.has_role(r)) => Ok(()),
            Access::AnyScope(scopes) => Err(format!("scope {}", one_of(scopes))),
            Access::AnyRole(roles) => Err(format!("role {}", one_of(roles))),
        }
    }
}

fn one_of(items: &[String]) -> String {
    match items {
        [one] => format!("`{one}`"),
        many => format!(
            "(one of) {}",
            many.iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Access rules by endpoint pattern: an exact endpoint (`Greeter.Hello`), every endpoint of a
/// handler (`Greeter.*`), or every endpoint (`*`). The most specific pattern wins; an endpoint
/// no pattern matches gets the default ([`Access::Authenticated`] unless set).
#[derive(Debug, Clone)]
pub struct Rules {
    exact: HashMap<String, Access>,
    handlers: HashMap<String, Access>,
    any: Option<Access>,
    default: Access,
}

impl Default for Rules {
    fn default() -> Self {
        let mut rules = Rules {
            exact: HashMap::new(),
            handlers: HashMap::new(),
            any: None,
            default: Access::Authenticated,
        };
        // Health probes carry no tokens; Go Micro's auth wrapper lets Debug calls through too.
        rules.set("Debug.Health", Access::Public);
        rules
    }
}

impl Rules {
    /// Sets the rule for `pattern`, replacing an earlier rule for the same pattern.
    pub fn set(&mut self, pattern: &str, access: Access) {
        match pattern {
            "*" => self.any = Some(access),
            p => match p.strip_suffix(".*") {
                Some(handler) => {
                    self.handlers.insert(handler.to_string(), access);
                }
                None => {
                    self.exact.insert(p.to_string(), access);
                }
            },
        }
    }

    /// Sets the rule for endpoints no pattern matches.
    pub fn set_default(&mut self, access: Access) {
        self.default = access;
    }

    /// The rule for `endpoint` (`Greeter.Hello`).
    pub fn access(&self, endpoint: &str) -> &Access {
        if let Some(a) = self.exact.get(endpoint) {
            return a;
        }
        let handler = endpoint.split_once('.').map_or(endpoint, |(h, _)| h);
        self.handlers
            .get(handler)
            .or(self.any.as_ref())
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_pattern_wins() {
        let mut r = Rules::default();
        r.set("Greeter.*", Access::Public);
        r.set("Greeter.Admin", Access::AnyScope(vec!["admin".into()]));
        assert_eq!(r.access("Greeter.Hello"), &Access::Public);
        assert_eq!(
            r.access("Greeter.Admin"),
            &Access::AnyScope(vec!["admin".into()])
        );
        assert_eq!(r.access("Other.Call"), &Access::Authenticated);
        assert_eq!(r.access("Debug.Health"), &Access::Public);
        r.set("*", Access::AnyRole(vec!["staff".into()]));
        assert_eq!(
            r.access("Other.Call"),
            &Access::AnyRole(vec!["staff".into()])
        );
        assert_eq!(r.access("Greeter.Hello"), &Access::Public);
        r.set("Debug.Health", Access::Authenticated);
        assert_eq!(r.access("Debug.Health"), &Access::Authenticated);
    }

    #[test]
    fn scope_and_role_rules_name_what_is_missing() {
        let mut c = Claims::new("alice");
        c.scopes = vec!["read".into()];
        c.roles = vec!["ops".into()];
        assert!(Access::AnyScope(vec!["read".into(), "write".into()])
            .allows(&c)
            .is_ok());
        assert_eq!(
            Access::AnyScope(vec!["admin".into()]).allows(&c),
            Err("scope `admin`".to_string())
        );
        assert_eq!(
            Access::AnyRole(vec!["a".into(), "b".into()]).allows(&c),
            Err("role (one of) `a`, `b`".to_string())
        );
        assert!(Access::AnyRole(vec!["ops".into()]).allows(&c).is_ok());
    }
}
