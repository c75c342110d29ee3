//! The tool list: one tool per endpoint of every service in the registry, and the way back
//! from a tool's name to the endpoint it calls.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use micro::core::registry::{Endpoint, Registry, Service as Registration};
use micro::registry::json_schema;
use micro::Result;
use rmcp::model::Tool;
use serde_json::{json, Map, Value};

use crate::McpOptions;

/// The longest tool name MCP allows.
const MAX_NAME: usize = 128;

/// How many services are read from the registry at once.
const READS_AT_ONCE: usize = 8;

/// The endpoint a tool calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// The service's name (`greeter`).
    pub(crate) service: String,
    /// The endpoint (`Greeter.Hello`).
    pub(crate) endpoint: String,
    /// Whether the endpoint streams (`stream = "true"` in its metadata).
    pub(crate) stream: bool,
    /// The scopes a caller needs, any one of them (none: anyone may call): the endpoint's
    /// `scopes` metadata (comma separated) and [`McpOptions::scopes`].
    pub(crate) scopes: Vec<String>,
}

/// Every tool, by name, with the endpoint it calls.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Catalog {
    entries: BTreeMap<String, (Tool, Route)>,
}

impl Catalog {
    /// Reads every exposed service from the registry; a service that went away meanwhile is
    /// left out, a registry that cannot list is an error.
    pub(crate) async fn read(registry: &Arc<dyn Registry>, opts: &McpOptions) -> Result<Catalog> {
        let listed = registry.list_services().await?;
        let mut names: Vec<String> = listed
            .into_iter()
            .map(|s| s.name)
            .filter(|name| opts.exposes(name))
            .collect();
        names.sort();
        names.dedup();
        // Listings may leave endpoints out (mDNS, etcd's list), so each service is read whole.
        let services: Vec<Vec<Registration>> = futures_util::stream::iter(names)
            .map(|name| async move {
                match registry.get_service(&name).await {
                    Ok(versions) => versions,
                    Err(e) => {
                        tracing::debug!(service = %name, error = %e, "left out of the tool list");
                        Vec::new()
                    }
                }
            })
            .buffered(READS_AT_ONCE)
            .collect()
            .await;
        let mut catalog = Catalog::default();
        for version in services.iter().flatten() {
            for endpoint in &version.endpoints {
                catalog.add(&version.name, endpoint, opts);
            }
        }
        Ok(catalog)
    }

    fn add(&mut self, service: &str, endpoint: &Endpoint, opts: &McpOptions) {
        let flag = |key: &str| endpoint.metadata.get(key).is_some_and(|v| v == "true");
        // Subscribers are not callable, and the `Debug` handler every server has (health) is
        // for probes, not agents.
        if flag("subscriber") || endpoint.name.is_empty() || endpoint.name.starts_with("Debug.") {
            return;
        }
        let Some(name) = tool_name(service, &endpoint.name) else {
            tracing::warn!(
                service,
                endpoint = %endpoint.name,
                "no tool for this endpoint: its name is longer than MCP's {MAX_NAME} characters"
            );
            return;
        };
        let registered = endpoint.metadata.get("scopes").map_or("", String::as_str);
        let mut scopes: Vec<String> = registered
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .chain(opts.scopes_of(&name).iter().cloned())
            .collect();
        scopes.sort();
        scopes.dedup();
        let route = Route {
            service: service.to_string(),
            endpoint: endpoint.name.clone(),
            stream: flag("stream"),
            scopes,
        };
        match self.entries.get(&name) {
            // Another version of the same service, or a name that only differs in characters
            // MCP does not allow: the first one keeps the name.
            Some((_, taken)) if *taken != route => tracing::warn!(
                tool = %name,
                service,
                endpoint = %endpoint.name,
                "no tool for this endpoint: {}.{} already has the name",
                taken.service,
                taken.endpoint
            ),
            Some(_) => {}
            None => {
                let tool = tool(&name, endpoint, &route, opts);
                self.entries.insert(name, (tool, route));
            }
        }
    }

    /// The tools, ordered by name.
    pub(crate) fn tools(&self) -> Vec<Tool> {
        self.entries
            .values()
            .map(|(tool, _)| tool.clone())
            .collect()
    }

    /// The endpoint the tool called `name` calls.
    pub(crate) fn route(&self, name: &str) -> Option<&Route> {
        self.entries.get(name).map(|(_, route)| route)
    }
}

/// `{service}.{Endpoint}` (Go Micro's tool name), with every character MCP does not allow in
/// a name (anything but `a-z A-Z 0-9 _ . -`) replaced by `_`; `None` past 128 characters.
pub(crate) fn tool_name(service: &str, endpoint: &str) -> Option<String> {
    let name: String = format!("{service}.{endpoint}")
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    (name.len() <= MAX_NAME).then_some(name)
}

fn tool(name: &str, endpoint: &Endpoint, route: &Route, opts: &McpOptions) -> Tool {
    let mut description = match endpoint.metadata.get("description") {
        Some(text) if !text.trim().is_empty() => text.trim().to_string(),
        _ => format!("Calls {} of {}.", route.endpoint, route.service),
    };
    let mut input = json_schema::message(endpoint.request.as_ref());
    // `micro-build` takes an `@example` from the proto comment; JSON Schema has a place for it.
    let example = endpoint.metadata.get("example");
    if let Some(example) = example.and_then(|e| serde_json::from_str::<Value>(e).ok()) {
        description.push_str(&format!(" Example arguments: {example}"));
        input.insert("examples".into(), json!([example]));
    }
    if !route.scopes.is_empty() {
        description.push_str(&format!(
            " Needs a token with the scope {}.",
            route.scopes.join(" or ")
        ));
    }
    let mut output = json_schema::message(endpoint.response.as_ref());
    if route.stream {
        description.push_str(&format!(
            " A streaming endpoint: the arguments are its one request message, and the result's \
             `replies` are the messages it streams back (at most {}, within {:?}; `truncated` \
             when it had more or ran out of time).",
            opts.max_replies, opts.timeout
        ));
        output = replies(output);
    }
    Tool::new(Cow::Owned(name.to_string()), description, Arc::new(input))
        .with_raw_output_schema(Arc::new(output))
}

/// The output of a streaming tool: the replies in order, and whether some were left unread.
fn replies(reply: Map<String, Value>) -> Map<String, Value> {
    let schema = json!({
        "type": "object",
        "properties": {
            "replies": {"type": "array", "items": reply},
            "truncated": {"type": "boolean"},
        },
        "required": ["replies"],
    });
    match schema {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use micro::core::registry::Value as Shape;
    use std::collections::BTreeMap;

    #[test]
    fn names_follow_go_micro_within_mcp_rules() {
        assert_eq!(
            tool_name("greeter", "Greeter.Hello").as_deref(),
            Some("greeter.Greeter.Hello")
        );
        assert_eq!(
            tool_name("go.micro.srv/blog", "Blog.Create").as_deref(),
            Some("go.micro.srv_blog.Blog.Create")
        );
        assert_eq!(tool_name("dé jà", "A.B").as_deref(), Some("d__j_.A.B"));
        assert_eq!(tool_name(&"s".repeat(130), "A.B"), None);
    }

    fn endpoint(name: &str, metadata: &[(&str, &str)]) -> Endpoint {
        Endpoint {
            name: name.into(),
            request: Some(Shape {
                name: "Req".into(),
                kind: "Req".into(),
                values: vec![Shape {
                    name: "name".into(),
                    kind: "string".into(),
                    values: vec![],
                }],
            }),
            response: None,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn one_tool_per_endpoint_but_not_subscribers() {
        let opts = McpOptions::default();
        let mut catalog = Catalog::default();
        catalog.add(
            "blog",
            &endpoint(
                "Blog.Create",
                &[
                    ("description", "Creates a post."),
                    ("example", r#"{"name":"Hi"}"#),
                    ("scopes", "write, admin"),
                ],
            ),
            &opts,
        );
        catalog.add(
            "blog",
            &endpoint("Blog.Watch", &[("stream", "true")]),
            &opts,
        );
        catalog.add(
            "blog",
            &endpoint("Posts.Handle", &[("subscriber", "true")]),
            &opts,
        );
        catalog.add("blog", &endpoint("Debug.Health", &[]), &opts);
        let tools = catalog.tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, ["blog.Blog.Create", "blog.Blog.Watch"]);
        assert_eq!(
            tools[0].description.as_deref(),
            Some(
                r#"Creates a post. Example arguments: {"name":"Hi"} Needs a token with the scope admin or write."#
            )
        );
        assert_eq!(tools[0].input_schema["examples"], json!([{"name": "Hi"}]));
        assert_eq!(
            catalog.route("blog.Blog.Create").map(|r| r.scopes.clone()),
            Some(vec!["admin".to_string(), "write".to_string()])
        );
        assert_eq!(
            tools[0].input_schema["properties"]["name"]["type"],
            "string"
        );
        let watch = tools[1].description.as_deref().unwrap_or_default();
        assert!(watch.starts_with("Calls Blog.Watch of blog.") && watch.contains("streaming"));
        let output = tools[1]
            .output_schema
            .as_deref()
            .cloned()
            .unwrap_or_default();
        assert_eq!(output["properties"]["replies"]["type"], "array");
        let route = catalog.route("blog.Blog.Watch").cloned();
        assert_eq!(
            route,
            Some(Route {
                service: "blog".into(),
                endpoint: "Blog.Watch".into(),
                stream: true,
                scopes: vec![],
            })
        );
    }
}
