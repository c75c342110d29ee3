//! [`McpOptions`]: the limits of each call and which services become tools.

use std::time::Duration;

use micro::core::env::{invalid, parse_duration};
use micro::Result;

/// How the MCP server calls services and which of them it offers as tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpOptions {
    /// Each tool call, from the request to the last reply of a stream
    /// (`MICRO_MCP_TIMEOUT`, default 10 s); also bounds reading the registry.
    pub timeout: Duration,
    /// The most replies a streaming endpoint's tool collects before it stops reading
    /// (`MICRO_MCP_MAX_REPLIES`, default 100).
    pub max_replies: usize,
    /// Only these services become tools; empty offers every service
    /// (`MICRO_MCP_SERVICES`, comma separated).
    pub allow: Vec<String>,
    /// These services never become tools, whatever `allow` says
    /// (`MICRO_MCP_DENY`, comma separated).
    pub deny: Vec<String>,
}

impl Default for McpOptions {
    fn default() -> Self {
        McpOptions {
            timeout: Duration::from_secs(10),
            max_replies: 100,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

impl McpOptions {
    /// The defaults, changed by the `MICRO_MCP_*` variables that are set; a value that does not
    /// read is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`McpOptions::from_env`] over any source of variables (a map, in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut opts = McpOptions::default();
        if let Some(v) = var("MICRO_MCP_TIMEOUT") {
            opts.timeout = parse_duration(&v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid("MICRO_MCP_TIMEOUT", &v, "a duration like 10s"))?;
        }
        if let Some(v) = var("MICRO_MCP_MAX_REPLIES") {
            opts.max_replies = v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("MICRO_MCP_MAX_REPLIES", &v, "a whole number above 0"))?;
        }
        if let Some(v) = var("MICRO_MCP_SERVICES") {
            opts.allow = names(&v);
        }
        if let Some(v) = var("MICRO_MCP_DENY") {
            opts.deny = names(&v);
        }
        Ok(opts)
    }

    /// Whether the service called `name` is offered as tools.
    pub fn exposes(&self, name: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|n| n == name);
        (self.allow.is_empty() || listed(&self.allow)) && !listed(&self.deny)
    }
}

/// A comma-separated list of service names.
fn names(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<McpOptions> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        McpOptions::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn reads_every_variable() -> Result<()> {
        let opts = read(&[
            ("MICRO_MCP_TIMEOUT", "1.5s"),
            ("MICRO_MCP_MAX_REPLIES", "7"),
            ("MICRO_MCP_SERVICES", "greeter, blog,"),
            ("MICRO_MCP_DENY", "admin"),
        ])?;
        assert_eq!(opts.timeout, Duration::from_millis(1500));
        assert_eq!(opts.max_replies, 7);
        assert_eq!(opts.allow, ["greeter", "blog"]);
        assert_eq!(opts.deny, ["admin"]);
        assert_eq!(read(&[])?, McpOptions::default());
        Ok(())
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("MICRO_MCP_TIMEOUT", "soon"),
            ("MICRO_MCP_TIMEOUT", "0s"),
            ("MICRO_MCP_MAX_REPLIES", "0"),
        ] {
            let e = read(&[(var, value)]).expect_err("refused");
            assert!(e.detail.contains(var), "{e}");
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let opts = McpOptions {
            allow: vec!["a".into(), "b".into()],
            deny: vec!["b".into()],
            ..McpOptions::default()
        };
        assert!(opts.exposes("a"));
        assert!(!opts.exposes("b"));
        assert!(!opts.exposes("c"));
        assert!(McpOptions::default().exposes("c"));
    }
}
