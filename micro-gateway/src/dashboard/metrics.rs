//! Metrics at a glance: the dashboard reads the Prometheus endpoint of each node that names
//! one (node metadata `metrics`, else the service's; what `micro-wrapper-prometheus` serves)
//! and counts the calls and errors of each endpoint from `*_server_requests_total`.
//!
//! A scrape is bounded in time ([`SCRAPE_TIMEOUT`]) and size ([`MAX_BODY`]); the text
//! exposition format is read by a small parser that looks at sample lines only and skips
//! what it does not understand.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt as _;
use micro::core::registry::{Node, Service as Registration};
use serde::Serialize;

/// The metadata key naming a node's (or a service's) metrics URL.
pub(crate) const METADATA_KEY: &str = "metrics";
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest exposition read.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Nodes scraped for one service; scrapes at once.
const MAX_NODES: usize = 32;
const AT_ONCE: usize = 4;
/// Endpoints counted; more are left out.
const MAX_ENDPOINTS: usize = 1000;

/// One endpoint's counts, summed over the nodes read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) errors: u64,
}

/// What the nodes' metrics say of one service.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Scraped {
    /// By endpoint.
    pub(crate) endpoints: BTreeMap<String, Counts>,
    /// Nodes whose metrics could not be read, and why.
    pub(crate) failures: Vec<(String, String)>,
    /// Nodes read.
    pub(crate) nodes: usize,
}

/// The metrics URL of a node, if it (or its service) names one; only `http` is read.
pub(crate) fn url_of(node: &Node, service: &Registration) -> Option<String> {
    let named = node
        .metadata
        .get(METADATA_KEY)
        .or_else(|| service.metadata.get(METADATA_KEY))?
        .trim();
    if named.is_empty() {
        return None;
    }
    if named.contains("://") {
        return Some(named.to_string());
    }
    // `host:port` alone: the conventional path.
    Some(format!("http://{named}/metrics"))
}

/// The host of a URL (`127.0.0.1`, `[::1]`, `node.internal`), lowercased.
fn host_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    uri.host().map(str::to_ascii_lowercase)
}

/// Reads the metrics of every node of `versions` that names them on its own host; `None`
/// when none names any.
pub(crate) async fn scrape(name: &str, versions: &[Registration]) -> Option<Scraped> {
    let mut scraped = Scraped::default();
    let mut targets: Vec<(String, String)> = Vec::new();
    let named = versions
        .iter()
        .flat_map(|v| v.nodes.iter().map(move |n| (n, v)))
        .filter_map(|(node, version)| Some((node, url_of(node, version)?)))
        .take(MAX_NODES);
    for (node, url) in named {
        // Only the node's own host is asked: a registration must not make the gateway
        // fetch whatever address it names.
        match host_of(&url) == host_of(&format!("http://{}", node.address)) {
            true => targets.push((node.id.clone(), url)),
            false => scraped.failures.push((
                node.id.clone(),
                format!(
                    "{url} is not on the node's host ({}): not read",
                    node.address
                ),
            )),
        }
    }
    if targets.is_empty() && scraped.failures.is_empty() {
        return None;
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let reads = futures_util::stream::iter(targets)
        .map(|(id, url)| {
            let client = client.clone();
            async move { (id, read(&client, &url).await) }
        })
        .buffer_unordered(AT_ONCE)
        .collect::<Vec<_>>()
        .await;
    for (id, read) in reads {
        match read {
            Ok(text) => {
                scraped.nodes += 1;
                count(&text, name, &mut scraped.endpoints);
            }
            Err(why) => scraped.failures.push((id, why)),
        }
    }
    Some(scraped)
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// One scrape: `GET url`, a `200` with a body of at most [`MAX_BODY`], within
/// [`SCRAPE_TIMEOUT`].
async fn read(client: &HttpClient, url: &str) -> Result<String, String> {
    use http_body_util::BodyExt as _;

    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// metrics are read"));
    }
    let fetch = async {
        let response = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("{url} answered {}", response.status()));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e} (at most {MAX_BODY} bytes are read)"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: the metrics are not UTF-8"))
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("{url}: no answer within {SCRAPE_TIMEOUT:?}"))?
}

/// Adds the server request counts of `service` in `text` (Prometheus's text format) to
/// `into`: every `*_server_requests_total` sample with an `endpoint` label, whose `service`
/// label, when it has one, is `service`.
pub(crate) fn count(text: &str, service: &str, into: &mut BTreeMap<String, Counts>) {
    for line in text.lines() {
        let Some(sample) = Sample::parse(line) else {
            continue;
        };
        if !sample.name.ends_with("server_requests_total") {
            continue;
        }
        if sample.label("service").is_some_and(|s| s != service) {
            continue;
        }
        let Some(endpoint) = sample.label("endpoint") else {
            continue;
        };
        // Counters are whole numbers; anything else (NaN, negative) counts as nothing.
        let value = if sample.value.is_finite() && sample.value >= 0.0 {
            sample.value.min(u64::MAX as f64) as u64
        } else {
            0
        };
        if !into.contains_key(endpoint) && into.len() >= MAX_ENDPOINTS {
            continue;
        }
        let counts = into.entry(endpoint.to_string()).or_default();
        counts.calls = counts.calls.saturating_add(value);
        if sample.label("status") == Some("failure") {
            counts.errors = counts.errors.saturating_add(value);
        }
    }
}

/// One sample line: `name{label="value",...} value [timestamp]`.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Labels read on one line; a line with more is skipped.
const MAX_LABELS: usize = 64;

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The sample on `line`, or `None` for comments, blank lines and lines it cannot read.
    fn parse(line: &str) -> Option<Sample> {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        if name_end == 0 {
            return None;
        }
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = Self::labels(after, &mut labels)?;
        }
        let value = rest.split_whitespace().next()?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        };
        Some(Sample {
            name,
            labels,
            value,
        })
    }

    /// Reads `label="value",...}` into `labels`; the text after the `}`.
    fn labels<'a>(mut text: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
        loop {
            text = text.trim_start();
            if let Some(after) = text.strip_prefix('}') {
                return Some(after);
            }
            if labels.len() >= MAX_LABELS {
                return None;
            }
            let (name, after) = text.split_once('=')?;
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let mut chars = after.trim_start().strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((name.to_string(), value));
            let quoted = after.trim_start().strip_prefix('"')?;
            text = quoted[end + 1..].trim_start();
            text = text.strip_prefix(',').unwrap_or(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_and_errors_by_endpoint() {
        let text = r#"# HELP micro_server_requests_total Calls handled.
# TYPE micro_server_requests_total counter
micro_server_requests_total{code="200",endpoint="Greeter.Hello",service="greeter",status="success"} 7
micro_server_requests_total{code="400",endpoint="Greeter.Hello",service="greeter",status="failure"} 2
micro_server_requests_total{code="200",endpoint="Other.Call",service="other",status="success"} 5
shop_server_requests_total{endpoint="Greeter.Stream",status="success",} 1 1700000000000
micro_client_requests_total{endpoint="Greeter.Hello",service="greeter",status="success"} 100
micro_server_requests_total{endpoint="Odd \"quoted\" \\ name",status="failure"} 1
micro_server_requests_total{endpoint="Greeter.Hello" 3
micro_server_requests_total{endpoint="x",status="success"} NaN
garbage line here
"#;
        let mut counts = BTreeMap::new();
        count(text, "greeter", &mut counts);
        assert_eq!(
            counts["Greeter.Hello"],
            Counts {
                calls: 9,
                errors: 2
            }
        );
        assert_eq!(counts["Greeter.Stream"].calls, 1);
        assert_eq!(counts["Odd \"quoted\" \\ name"].errors, 1);
        assert_eq!(counts["x"].calls, 0);
        assert!(!counts.contains_key("Other.Call"));
    }

    #[test]
    fn metrics_urls() {
        let mut node = Node::default();
        let mut service = Registration::default();
        assert_eq!(url_of(&node, &service), None);
        service
            .metadata
            .insert(METADATA_KEY.into(), "127.0.0.1:9100".into());
        assert_eq!(
            url_of(&node, &service).as_deref(),
            Some("http://127.0.0.1:9100/metrics")
        );
        node.metadata
            .insert(METADATA_KEY.into(), "http://127.0.0.1:9200/m".into());
        assert_eq!(
            url_of(&node, &service).as_deref(),
            Some("http://127.0.0.1:9200/m")
        );
    }

    #[tokio::test]
    async fn only_the_nodes_own_host_is_read() {
        let mut service = Registration::default();
        let mut node = Node {
            id: "n1".into(),
            address: "127.0.0.1:1".into(),
            ..Node::default()
        };
        node.metadata
            .insert(METADATA_KEY.into(), "http://169.254.169.254/latest".into());
        service.nodes.push(node);
        let scraped = scrape("greeter", &[service]).await.unwrap_or_default();
        assert_eq!(scraped.nodes, 0);
        assert_eq!(scraped.failures.len(), 1);
        assert!(scraped.failures[0].1.contains("not on the node's host"));
        assert_eq!(host_of("http://[::1]:9/m").as_deref(), Some("[::1]"));
    }
}
