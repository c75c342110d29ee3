//! [`McpOptions`]: the limits of each call and which services become tools.

use std::num::NonZeroU32;
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
    /// The scopes a tool asks of callers on HTTP, any one of them, by tool pattern (a tool
    /// name, or a prefix ending in `*`: `greeter.*`, `*`), besides the `scopes` its endpoint
    /// registered (`MICRO_MCP_SCOPES`: `pattern=scope` pairs, comma separated).
    pub scopes: Vec<(String, Vec<String>)>,
    /// How many calls per second each caller may make of a tool, by tool pattern as for
    /// `scopes` (`MICRO_MCP_RATE_LIMIT`: `pattern=rate` pairs, comma separated, or a rate
    /// alone for every tool).
    pub rate_limits: Vec<(String, NonZeroU32)>,
}

impl Default for McpOptions {
    fn default() -> Self {
        McpOptions {
            timeout: Duration::from_secs(10),
            max_replies: 100,
            allow: Vec::new(),
            deny: Vec::new(),
            scopes: Vec::new(),
            rate_limits: Vec::new(),
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
        if let Some(v) = var("MICRO_MCP_SCOPES") {
            for (pattern, scope) in pairs("MICRO_MCP_SCOPES", &v, "pattern=scope pairs")? {
                match opts.scopes.iter_mut().find(|(p, _)| *p == pattern) {
                    Some((_, scopes)) => scopes.push(scope),
                    None => opts.scopes.push((pattern, vec![scope])),
                }
            }
        }
        if let Some(v) = var("MICRO_MCP_RATE_LIMIT") {
            let expected = "calls per second above 0, alone or in pattern=rate pairs";
            let rate_of = |text: &str| text.trim().parse::<NonZeroU32>().ok();
            opts.rate_limits = match rate_of(&v) {
                Some(rate) => vec![("*".to_string(), rate)],
                None => pairs("MICRO_MCP_RATE_LIMIT", &v, expected)?
                    .into_iter()
                    .map(|(pattern, rate)| match rate_of(&rate) {
                        Some(rate) => Ok((pattern, rate)),
                        None => Err(invalid("MICRO_MCP_RATE_LIMIT", &v, expected)),
                    })
                    .collect::<Result<_>>()?,
            };
        }
        Ok(opts)
    }

    /// The scopes the tool `name` asks of callers by configuration.
    pub(crate) fn scopes_of(&self, name: &str) -> &[String] {
        rule_for(&self.scopes, name).map_or(&[], Vec::as_slice)
    }

    /// Whether the service called `name` is offered as tools.
    pub fn exposes(&self, name: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|n| n == name);
        (self.allow.is_empty() || listed(&self.allow)) && !listed(&self.deny)
    }
}

/// The value of the most specific pattern matching the tool `name`: the name itself, else the
/// longest prefix pattern (`greeter.Greeter.*` before `greeter.*` before `*`).
pub(crate) fn rule_for<'a, T>(rules: &'a [(String, T)], name: &str) -> Option<&'a T> {
    if let Some((_, value)) = rules.iter().find(|(pattern, _)| pattern == name) {
        return Some(value);
    }
    rules
        .iter()
        .filter_map(|(pattern, value)| Some((pattern.strip_suffix('*')?, value)))
        .filter(|(prefix, _)| name.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, value)| value)
}

/// `key=value` pairs, comma separated.
fn pairs(var: &str, text: &str, expected: &str) -> Result<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => {
                Ok((key.trim().to_string(), value.trim().to_string()))
            }
            _ => Err(invalid(var, text, expected)),
        })
        .collect()
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
            (
                "MICRO_MCP_SCOPES",
                "greeter.*=greet, greeter.*=admin,*=read",
            ),
            ("MICRO_MCP_RATE_LIMIT", "greeter.Greeter.Hello=2, *=50"),
        ])?;
        assert_eq!(
            opts.scopes,
            [
                (
                    "greeter.*".to_string(),
                    vec!["greet".to_string(), "admin".to_string()]
                ),
                ("*".to_string(), vec!["read".to_string()]),
            ]
        );
        let rate = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        assert_eq!(
            opts.rate_limits,
            [
                ("greeter.Greeter.Hello".to_string(), rate(2)),
                ("*".to_string(), rate(50))
            ]
        );
        assert_eq!(
            read(&[("MICRO_MCP_RATE_LIMIT", "7")])?.rate_limits,
            [("*".to_string(), rate(7))]
        );
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
            ("MICRO_MCP_SCOPES", "greeter.*"),
            ("MICRO_MCP_RATE_LIMIT", "0"),
            ("MICRO_MCP_RATE_LIMIT", "*=fast"),
        ] {
            let e = read(&[(var, value)]).expect_err("refused");
            assert!(e.detail.contains(var), "{e}");
        }
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let rules: Vec<(String, u32)> = [("*", 1), ("greeter.*", 2), ("greeter.Greeter.Hello", 3)]
            .iter()
            .map(|(p, n)| (p.to_string(), *n))
            .collect();
        assert_eq!(rule_for(&rules, "greeter.Greeter.Hello"), Some(&3));
        assert_eq!(rule_for(&rules, "greeter.Greeter.Stream"), Some(&2));
        assert_eq!(rule_for(&rules, "blog.Blog.Create"), Some(&1));
        assert_eq!(rule_for(&rules[1..], "blog.Blog.Create"), None);
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
