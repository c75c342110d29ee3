//! The dashboard's pages as HTML text. Everything that comes from the registry, a request or
//! a service (names, metadata, addresses, errors) goes through [`escape`] or, in a URL path,
//! [`segment`]: a hostile service name is text on the page, never markup.

use std::fmt::Write as _;

use micro::core::registry::{Endpoint, Service as Registration};

use super::form;
use super::{Health, Listed, NodeHealth};

/// `text` safe to put in HTML text and in quoted attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one URL path segment: everything but RFC 3986's unreserved characters
/// percent-encoded (so `/`, `?`, `#` and quotes cannot leave the segment).
pub(super) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The service page's path.
pub(super) fn service_path(name: &str) -> String {
    format!("/dashboard/service/{}", segment(name))
}

/// A whole page: the navigation, the token field when the gateway asks for tokens, and
/// `main`.
pub(super) fn page(title: &str, secured: bool, main: &str) -> String {
    let token = if secured {
        "<p class=\"token\"><label for=\"token\">Bearer token</label> \
         <input id=\"token\" type=\"password\" autocomplete=\"off\" \
         aria-describedby=\"token-help\"> <small id=\"token-help\">sent with the calls, \
         events and live updates this tab makes; kept for this tab only</small></p>"
    } else {
        ""
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · Micro</title>\n\
         <link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\">\n\
         <script src=\"/dashboard/assets/dashboard.js\" defer></script>\n</head>\n<body>\n\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\n\
         <header>\n<nav aria-label=\"Dashboard\"><a class=\"brand\" href=\"/\">Micro</a> \
         <a href=\"/\">Services</a> <a href=\"/dashboard/events\">Events</a> \
         <a href=\"/openapi.json\">OpenAPI</a></nav>\n{token}\n</header>\n\
         <main id=\"main\">\n{main}\n</main>\n</body>\n</html>\n",
        title = escape(title),
    )
}

/// The services page: the filter, and the table the live updates replace the rows of.
pub(super) fn services(listed: &[Listed], filter: &str, truncated: bool) -> String {
    let shown: Vec<&Listed> = listed
        .iter()
        .filter(|s| matches_filter(&s.name, filter))
        .collect();
    let more = if truncated {
        "<p class=\"note\">Only the first services are shown: the registry holds more.</p>"
    } else {
        ""
    };
    format!(
        "<h1>Services</h1>\n\
         <form method=\"get\" action=\"/\" role=\"search\" class=\"filter\">\
         <label for=\"filter\">Filter by name</label> \
         <input id=\"filter\" name=\"q\" type=\"search\" value=\"{filter}\"> \
         <button type=\"submit\">Filter</button></form>\n\
         <p id=\"live\" class=\"note\" aria-live=\"polite\">Refresh the page to see changes \
         (with JavaScript the list follows the registry).</p>\n{more}\n\
         <table id=\"services\">\n<caption>Services in the registry, their versions, nodes \
         and health (<code>Debug.Health</code> of each node)</caption>\n\
         <thead><tr><th scope=\"col\">Service</th><th scope=\"col\">Versions</th>\
         <th scope=\"col\">Nodes</th><th scope=\"col\">Health</th></tr></thead>\n\
         <tbody id=\"service-rows\">{rows}</tbody>\n</table>\n\
         <p id=\"no-match\" class=\"note\" hidden>No service matches the filter.</p>\n",
        filter = escape(filter),
        rows = rows(&shown),
    )
}

/// Whether a service's name matches the filter (case-insensitive substring).
pub(super) fn matches_filter(name: &str, filter: &str) -> bool {
    let filter = filter.trim();
    filter.is_empty() || name.to_lowercase().contains(&filter.to_lowercase())
}

/// The rows of the services table (all of them: the page filters).
pub(super) fn rows(listed: &[&Listed]) -> String {
    if listed.is_empty() {
        return "<tr><td colspan=\"4\">No services.</td></tr>".to_string();
    }
    let mut out = String::new();
    for s in listed {
        let (class, text, title) = summary(&s.health);
        let _ = write!(
            out,
            "<tr data-service=\"{name}\"><th scope=\"row\"><a href=\"{href}\">{name}</a></th>\
             <td>{versions}</td><td>{nodes}</td>\
             <td class=\"health {class}\" title=\"{title}\">{text}</td></tr>",
            name = escape(&s.name),
            href = escape(&service_path(&s.name)),
            versions = escape(&s.versions.join(", ")),
            nodes = s.health.len(),
            title = escape(&title),
        );
    }
    out
}

/// One service's health: a class, the words shown, and the problems (for a tooltip).
fn summary(nodes: &[NodeHealth]) -> (&'static str, String, String) {
    let total = nodes.len();
    let serving = nodes
        .iter()
        .filter(|n| matches!(n.health, Health::Serving))
        .count();
    let unchecked = nodes
        .iter()
        .filter(|n| matches!(n.health, Health::Unchecked))
        .count();
    let problems: Vec<String> = nodes
        .iter()
        .filter_map(|n| match &n.health {
            Health::Failing(why) => Some(format!("{}: {why}", n.id)),
            _ => None,
        })
        .collect();
    let title = problems.join("\n");
    if total == 0 {
        return ("down", "no nodes".into(), title);
    }
    if unchecked == total {
        return ("unknown", "not checked".into(), title);
    }
    if serving == total {
        return ("ok", "serving".into(), title);
    }
    if serving == 0 && unchecked == 0 {
        return ("down", "not serving".into(), title);
    }
    ("partial", format!("{serving} of {total} serving"), title)
}

fn health_cell(health: &Health) -> String {
    match health {
        Health::Serving => "<td class=\"health ok\">serving</td>".to_string(),
        Health::Failing(why) => format!(
            "<td class=\"health down\">not serving: {}</td>",
            escape(why)
        ),
        Health::Unchecked => "<td class=\"health unknown\">not checked</td>".to_string(),
    }
}

/// `key=value` pairs as a definition list.
fn metadata(pairs: &std::collections::BTreeMap<String, String>) -> String {
    if pairs.is_empty() {
        return "<span class=\"note\">none</span>".to_string();
    }
    let mut out = String::from("<dl class=\"meta\">");
    for (key, value) in pairs {
        let _ = write!(
            out,
            "<div><dt>{}</dt><dd>{}</dd></div>",
            escape(key),
            escape(value)
        );
    }
    out.push_str("</dl>");
    out
}

/// The service page: each version's nodes, then the endpoints and subscribers, then the
/// metrics table when some node serves metrics.
pub(super) fn service(
    name: &str,
    versions: &[Registration],
    health: &[NodeHealth],
    metrics: Option<&str>,
) -> String {
    let mut out = format!(
        "<h1>{name}</h1>\n<p><a href=\"/\">All services</a></p>\n",
        name = escape(name)
    );
    for (i, version) in versions.iter().enumerate() {
        let _ = write!(
            out,
            "<section aria-labelledby=\"version-{i}\">\n\
             <h2 id=\"version-{i}\">Version {v}</h2>\n",
            v = escape(&version.version)
        );
        if !version.metadata.is_empty() {
            let _ = write!(
                out,
                "<h3>Service metadata</h3>\n{}\n",
                metadata(&version.metadata)
            );
        }
        out.push_str(
            "<table class=\"nodes\">\n<caption>Nodes</caption>\n<thead><tr>\
             <th scope=\"col\">Node</th><th scope=\"col\">Address</th>\
             <th scope=\"col\">Transport</th><th scope=\"col\">Protocol</th>\
             <th scope=\"col\">Health</th><th scope=\"col\">Metadata</th></tr></thead>\n<tbody>",
        );
        for node in &version.nodes {
            let meta = |key: &str| escape(node.metadata.get(key).map_or("", String::as_str));
            let state = health.iter().find(|h| h.id == node.id).map_or_else(
                || health_cell(&Health::Unchecked),
                |h| health_cell(&h.health),
            );
            let _ = write!(
                out,
                "<tr><th scope=\"row\">{id}</th><td>{address}</td><td>{transport}</td>\
                 <td>{protocol}</td>{state}<td>{metadata}</td></tr>",
                id = escape(&node.id),
                address = escape(&node.address),
                transport = meta("transport"),
                protocol = meta("protocol"),
                metadata = metadata(&node.metadata),
            );
        }
        if version.nodes.is_empty() {
            out.push_str("<tr><td colspan=\"6\">No nodes.</td></tr>");
        }
        out.push_str("</tbody>\n</table>\n</section>\n");
    }
    out.push_str(&endpoints(name, versions));
    if let Some(metrics) = metrics {
        out.push_str(metrics);
    }
    out
}

/// Every version's endpoints, each once, and the subscribers apart.
fn endpoints(name: &str, versions: &[Registration]) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut rpc = String::new();
    let mut subscribers = String::new();
    for endpoint in versions.iter().flat_map(|v| &v.endpoints) {
        if endpoint.name.is_empty() || !seen.insert(endpoint.name.as_str()) {
            continue;
        }
        let request = form::sketch(&super::request_schema(endpoint), endpoint.request.as_ref());
        let response = form::sketch(
            &super::response_schema(endpoint),
            endpoint.response.as_ref(),
        );
        if is_subscriber(endpoint) {
            let topic = endpoint.metadata.get("topic").map_or("", String::as_str);
            let _ = write!(
                subscribers,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td><code>{}</code></td></tr>",
                escape(&endpoint.name),
                escape(topic),
                escape(&request)
            );
            continue;
        }
        let _ = write!(
            rpc,
            "<tr data-endpoint=\"{ep}\"><th scope=\"row\"><a href=\"{href}\">{ep}</a></th>\
             <td>{kind}</td><td><code>{request}</code></td><td><code>{response}</code></td></tr>",
            ep = escape(&endpoint.name),
            href = escape(&endpoint_path(name, &endpoint.name)),
            kind = if is_stream(endpoint) {
                "stream"
            } else {
                "unary"
            },
            request = escape(&request),
            response = escape(&response),
        );
    }
    if rpc.is_empty() {
        rpc = "<tr><td colspan=\"4\">No endpoints.</td></tr>".into();
    }
    let mut out = format!(
        "<section aria-labelledby=\"endpoints-title\">\n<h2 id=\"endpoints-title\">Endpoints</h2>\n\
         <table id=\"endpoints\">\n<thead><tr><th scope=\"col\">Endpoint</th>\
         <th scope=\"col\">Kind</th><th scope=\"col\">Request</th><th scope=\"col\">Response</th>\
         </tr></thead>\n<tbody>{rpc}</tbody>\n</table>\n</section>\n"
    );
    if !subscribers.is_empty() {
        let _ = write!(
            out,
            "<section aria-labelledby=\"subscribers-title\">\n\
             <h2 id=\"subscribers-title\">Subscribers</h2>\n<table>\n<thead><tr>\
             <th scope=\"col\">Subscriber</th><th scope=\"col\">Topic</th>\
             <th scope=\"col\">Message</th></tr></thead>\n<tbody>{subscribers}</tbody>\n</table>\n\
             </section>\n"
        );
    }
    out
}

pub(super) fn endpoint_path(service: &str, endpoint: &str) -> String {
    format!("{}/{}", service_path(service), segment(endpoint))
}

pub(super) fn is_stream(endpoint: &Endpoint) -> bool {
    endpoint.metadata.get("stream").is_some_and(|v| v == "true")
}

pub(super) fn is_subscriber(endpoint: &Endpoint) -> bool {
    endpoint
        .metadata
        .get("subscriber")
        .is_some_and(|v| v == "true")
}

/// The endpoint page: the form made from the request's shape, the raw JSON, the result, and
/// the call as command lines (written for `{}` here; the page's script keeps them in step
/// with the form).
pub(super) fn endpoint(service: &str, endpoint: &Endpoint, origin: &str, secured: bool) -> String {
    let stream = is_stream(endpoint);
    let request = super::request_schema(endpoint);
    let api = format!("/api/{}/{}", segment(service), segment(&endpoint.name));
    let lines = commands(
        service,
        &endpoint.name,
        &format!("{origin}{api}"),
        stream,
        secured,
    );
    let kind = if stream {
        "A streaming endpoint: its replies appear as they arrive (Server-Sent Events)."
    } else {
        "A unary endpoint: one request, one reply."
    };
    format!(
        "<h1><a href=\"{service_href}\">{service}</a> · {name}</h1>\n<p>{kind}</p>\n\
         <p>Request <code>{request_sketch}</code>, reply <code>{response_sketch}</code></p>\n\
         <form id=\"call-form\" data-api=\"{api}\" data-service=\"{service}\" \
         data-endpoint=\"{name}\" data-stream=\"{stream}\" data-secured=\"{secured}\">\n\
         <fieldset id=\"fields\" data-kind=\"object\"><legend>Request fields</legend>\n{fields}\
         </fieldset>\n\
         <p><label for=\"request-json\">Request (JSON)</label>\n\
         <textarea id=\"request-json\" name=\"request\" rows=\"3\" spellcheck=\"false\" \
         aria-describedby=\"request-help\">{{}}</textarea>\n\
         <small id=\"request-help\">What is sent. The fields above write it; edit it to send \
         anything else (changing a field writes it again).</small></p>\n\
         <p><button type=\"submit\" id=\"call\">Call</button> \
         <button type=\"button\" id=\"stop\" hidden>Stop</button></p>\n</form>\n\
         <section id=\"result\" aria-labelledby=\"result-title\" aria-live=\"polite\">\n\
         <h2 id=\"result-title\">Result</h2>\n\
         <p id=\"outcome\">Not called yet (calling needs JavaScript).</p>\n\
         <dl id=\"error\" hidden><div><dt>Code</dt><dd id=\"error-code\"></dd></div>\
         <div><dt>Detail</dt><dd id=\"error-detail\"></dd></div>\
         <div><dt>Id</dt><dd id=\"error-id\"></dd></div></dl>\n\
         <pre id=\"reply\" hidden></pre>\n<ol id=\"replies\" hidden></ol>\n</section>\n\
         <section aria-labelledby=\"commands-title\">\n\
         <h2 id=\"commands-title\">The same call from a shell</h2>\n\
         <p><label for=\"curl-line\">curl</label>\n\
         <textarea id=\"curl-line\" readonly rows=\"2\" spellcheck=\"false\">{curl}</textarea>\n\
         <button type=\"button\" data-copy=\"curl-line\">Copy curl</button></p>\n\
         <p><label for=\"micro-line\">micro</label>\n\
         <textarea id=\"micro-line\" readonly rows=\"2\" spellcheck=\"false\">{micro}</textarea>\n\
         <button type=\"button\" data-copy=\"micro-line\">Copy micro</button></p>\n</section>\n",
        service_href = escape(&service_path(service)),
        service = escape(service),
        name = escape(&endpoint.name),
        api = escape(&api),
        request_sketch = escape(&form::sketch(&request, endpoint.request.as_ref())),
        response_sketch = escape(&form::sketch(
            &super::response_schema(endpoint),
            endpoint.response.as_ref()
        )),
        fields = form::fields(&request, endpoint.request.as_ref()),
        curl = escape(&lines.0),
        micro = escape(&lines.1),
    )
}

/// `text` for a POSIX shell: as it is when nothing in it is special, else single-quoted.
fn shell(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/:@%+=,".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The call as `curl` and `micro` command lines, with a `{}` request (the script writes the
/// real one, with the same rules, in `dashboard.js`).
fn commands(
    service: &str,
    endpoint: &str,
    url: &str,
    stream: bool,
    secured: bool,
) -> (String, String) {
    let mut curl = String::from("curl");
    if stream {
        curl.push_str(" -N -H 'Accept: text/event-stream'");
    }
    if secured {
        curl.push_str(" -H \"Authorization: Bearer $TOKEN\"");
    }
    let _ = write!(curl, " -d '{{}}' {}", shell(url));
    let verb = if stream { "stream" } else { "call" };
    let micro = format!("micro {verb} {} {} '{{}}'", shell(service), shell(endpoint));
    (curl, micro)
}

/// The events page: publish, and subscribe.
pub(super) fn events() -> String {
    "<h1>Events</h1>\n\
     <section aria-labelledby=\"publish-title\">\n<h2 id=\"publish-title\">Publish</h2>\n\
     <form id=\"publish-form\">\n\
     <p><label for=\"publish-topic\">Topic</label>\n\
     <input id=\"publish-topic\" name=\"topic\" required></p>\n\
     <p><label for=\"publish-body\">Message (JSON)</label>\n\
     <textarea id=\"publish-body\" name=\"message\" rows=\"5\" spellcheck=\"false\">{}</textarea></p>\n\
     <p><button type=\"submit\" id=\"publish\">Publish</button></p>\n\
     <p id=\"publish-result\" aria-live=\"polite\"></p>\n</form>\n</section>\n\
     <section aria-labelledby=\"subscribe-title\">\n<h2 id=\"subscribe-title\">Subscribe</h2>\n\
     <form id=\"subscribe-form\">\n\
     <p><label for=\"subscribe-topic\">Topic</label>\n\
     <input id=\"subscribe-topic\" name=\"topic\" required></p>\n\
     <p><button type=\"submit\" id=\"subscribe\">Subscribe</button> \
     <button type=\"button\" id=\"unsubscribe\" disabled>Unsubscribe</button></p>\n\
     <p id=\"subscribe-status\" aria-live=\"polite\">Not subscribed (subscribing needs \
     JavaScript; <code>curl -N</code> on <code>/event/{topic}</code> works too).</p>\n\
     </form>\n<ol id=\"messages\" aria-label=\"Messages received\"></ol>\n</section>\n"
        .to_string()
}

/// A page for an error (a refused request, an unknown service).
pub(super) fn error(e: &micro::Error) -> String {
    format!(
        "<h1>{status}</h1>\n<p id=\"page-error\">{detail}</p>\n<p><a href=\"/\">All services</a></p>\n",
        status = escape(&format!("{} {}", e.code, e.status)),
        detail = escape(&e.detail),
    )
}

/// A service's metrics table, filled from the counts read now; the script refreshes it and
/// works out the rates.
pub(super) fn metrics(service: &str, counts: &super::metrics::Scraped) -> String {
    let mut rows = String::new();
    for (endpoint, c) in &counts.endpoints {
        let _ = write!(
            rows,
            "<tr data-endpoint=\"{ep}\"><th scope=\"row\">{ep}</th><td class=\"calls\">{calls}</td>\
             <td class=\"errors\">{errors}</td><td class=\"rate\">–</td></tr>",
            ep = escape(endpoint),
            calls = c.calls,
            errors = c.errors,
        );
    }
    if rows.is_empty() {
        rows = "<tr><td colspan=\"4\">No calls counted yet.</td></tr>".into();
    }
    let mut problems = String::new();
    for (node, why) in &counts.failures {
        let _ = write!(problems, "<li>{}: {}</li>", escape(node), escape(why));
    }
    if !problems.is_empty() {
        problems = format!("<ul class=\"note\">{problems}</ul>");
    }
    format!(
        "<section aria-labelledby=\"metrics-title\">\n<h2 id=\"metrics-title\">Metrics</h2>\n\
         <table id=\"metrics\" data-source=\"/dashboard/metrics/{source}\">\n\
         <caption>Calls handled by the nodes that serve Prometheus metrics</caption>\n\
         <thead><tr><th scope=\"col\">Endpoint</th><th scope=\"col\">Calls</th>\
         <th scope=\"col\">Errors</th><th scope=\"col\">Calls per second</th></tr></thead>\n\
         <tbody>{rows}</tbody>\n</table>\n{problems}</section>\n",
        source = escape(&segment(service)),
    )
}
