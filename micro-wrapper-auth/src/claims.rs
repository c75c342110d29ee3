//! What a verified token says about its bearer.

use micro_core::Metadata;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{CLAIMS, ROLES, SCOPES, SUBJECT};

/// The verified facts about a caller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the caller is (`sub`).
    pub subject: String,
    /// What the caller may do (`scope`, space separated, or `scopes`/`scp` as a list).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// What the caller is (`roles`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Who vouches for it (`iss`).
    #[serde(default)]
    pub issuer: Option<String>,
    /// When the token expires, in seconds since the Unix epoch (`exp`).
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Every claim of the token, as it was.
    #[serde(default)]
    pub raw: Map<String, Value>,
}

impl Claims {
    /// Claims for `subject` alone.
    pub fn new(subject: impl Into<String>) -> Self {
        Claims {
            subject: subject.into(),
            ..Claims::default()
        }
    }

    /// Reads the standard claims out of a JWT's claim set; `sub` must be there.
    pub fn from_jwt(raw: Map<String, Value>) -> Result<Self, String> {
        let subject = match raw.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("the token names no subject (`sub`)".to_string()),
        };
        let mut scopes = strings(raw.get("scope"));
        for key in ["scopes", "scp"] {
            scopes.extend(strings(raw.get(key)));
        }
        Ok(Claims {
            subject,
            scopes,
            roles: strings(raw.get("roles")),
            issuer: raw.get("iss").and_then(Value::as_str).map(str::to_owned),
            expires_at: raw.get("exp").and_then(Value::as_u64),
            raw,
        })
    }

    /// Whether the claims grant `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the claims include `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Puts the claims into a handler's metadata.
    pub(crate) fn write_to(&self, metadata: &mut Metadata) {
        metadata.insert(SUBJECT, self.subject.clone());
        metadata.insert(SCOPES, self.scopes.join(" "));
        metadata.insert(ROLES, self.roles.join(" "));
        if let Ok(json) = serde_json::to_string(self) {
            metadata.insert(CLAIMS, json);
        }
    }

    /// The claims the auth layer verified for this call, read from the handler's metadata;
    /// `None` for an anonymous call to a public endpoint.
    pub fn from_metadata(metadata: &Metadata) -> Option<Self> {
        serde_json::from_str(metadata.get(CLAIMS)?).ok()
    }
}

/// A claim as a list of strings: a JSON array of strings, or one string of space-separated
/// words (OAuth 2's `scope`).
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn standard_claims_are_read_in_their_usual_shapes() {
        let c = Claims::from_jwt(map(json!({
            "sub": "alice", "scope": "read write", "scp": ["admin"],
            "roles": ["ops"], "iss": "auth", "exp": 10, "tenant": "t1"
        })))
        .expect("claims");
        assert_eq!(c.subject, "alice");
        assert_eq!(c.scopes, ["read", "write", "admin"]);
        assert!(c.has_scope("admin") && !c.has_scope("delete"));
        assert!(c.has_role("ops"));
        assert_eq!(c.issuer.as_deref(), Some("auth"));
        assert_eq!(c.expires_at, Some(10));
        assert_eq!(c.raw.get("tenant"), Some(&json!("t1")));
        assert!(Claims::from_jwt(map(json!({"scope": "x"}))).is_err());
    }

    #[test]
    fn claims_round_trip_through_metadata() {
        let mut c = Claims::new("bob");
        c.scopes = vec!["a".into(), "b".into()];
        let mut md = Metadata::new();
        c.write_to(&mut md);
        assert_eq!(md.get(SUBJECT), Some("bob"));
        assert_eq!(md.get(SCOPES), Some("a b"));
        assert_eq!(Claims::from_metadata(&md), Some(c));
        assert_eq!(Claims::from_metadata(&Metadata::new()), None);
    }
}
