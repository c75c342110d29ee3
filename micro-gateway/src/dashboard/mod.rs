//! The web dashboard, on the gateway's own port: the services and their health, live as the
//! registry changes; a service's nodes and endpoints; a form for each endpoint that calls it
//! through `/api/...`; publishing and subscribing to events. See the crate docs for the pages
//! and their auth rules.
//!
//! Pages are HTML made here ([`html`], [`form`]), readable without JavaScript. The script
//! and stylesheet are compiled in and served from `/dashboard/assets/`, and every page says
//! so in its `Content-Security-Policy`: nothing runs or loads from anywhere else.

mod form;
mod html;
mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _};
use micro::core::registry::{Endpoint, Node, Service as Registration, Watcher};
use micro::rpc::{self, CallOptions};
use micro::Error;
use serde_json::Value;

use crate::{access, bounded, failure, Caller, Shared, ID};

/// The auth rule of the dashboard's pages (which also need `Gateway.Services`'s).
const RULE: &str = "Gateway.Dashboard";
const CSS: &str = include_str!("dashboard.css");
const JS: &str = include_str!("dashboard.js");
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; form-action 'self'; \
                      base-uri 'none'; frame-ancestors 'none'";

/// How long a node has to answer `Debug.Health`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Health probes under way at once, and nodes probed for one listing (past it: not checked).
const PROBES_AT_ONCE: usize = 8;
const MAX_PROBED: usize = 256;
/// Services listed (and read) on the services page.
const MAX_SERVICES: usize = 500;
/// Registry reads under way at once for one listing.
const READS_AT_ONCE: usize = 8;
/// Live services pages open at once (each watches the registry).
const MAX_WATCHERS: usize = 32;
/// How often a live page is brought up to date without a registry change (health changes
/// without one).
const REFRESH: Duration = Duration::from_secs(10);
/// Registry changes that come this close together are shown once.
const SETTLE: Duration = Duration::from_millis(100);

/// The dashboard's routes' state.
struct Dashboard {
    shared: Arc<Shared>,
    watchers: Arc<tokio::sync::Semaphore>,
}

/// The dashboard's routes (none when [`crate::GatewayOptions::dashboard`] is off).
pub(crate) fn routes(shared: &Arc<Shared>) -> Router<Arc<Shared>> {
    if !shared.opts.dashboard {
        return Router::new();
    }
    let state = Arc::new(Dashboard {
        shared: shared.clone(),
        watchers: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHERS)),
    });
    Router::new()
        .route("/", get(services_page))
        .route("/dashboard/service/{name}", get(service_page))
        .route("/dashboard/service/{name}/{endpoint}", get(endpoint_page))
        .route("/dashboard/events", get(events_page))
        .route("/dashboard/watch", get(watch))
        .route("/dashboard/metrics/{name}", get(metrics_json))
        .route("/dashboard/assets/dashboard.css", get(css))
        .route("/dashboard/assets/dashboard.js", get(js))
        .with_state(state)
}

/// One node's answer to `Debug.Health`.
#[derive(Debug, Clone, PartialEq)]
enum Health {
    Serving,
    Failing(String),
    /// Past [`MAX_PROBED`].
    Unchecked,
}

#[derive(Debug, Clone)]
struct NodeHealth {
    id: String,
    health: Health,
}

/// A service on the services page.
#[derive(Debug)]
struct Listed {
    name: String,
    versions: Vec<String>,
    health: Vec<NodeHealth>,
}

impl Dashboard {
    fn secured(&self) -> bool {
        self.shared.opts.auth.is_some()
    }

    /// Lets `caller` see the dashboard's pages: `Gateway.Dashboard` (counted by the rate
    /// limit) and, as the pages show the registry, `Gateway.Services`.
    async fn admit(&self, caller: &Caller) -> Result<(), Error> {
        self.shared.admit(caller, RULE).await?;
        let auth = self.shared.opts.auth.as_ref();
        access::admit(auth, None, &caller.headers, caller.peer, "Gateway.Services").await?;
        Ok(())
    }

    /// An HTML page, with the headers every page has.
    fn page(&self, status: StatusCode, title: &str, main: &str) -> Response {
        let body = html::page(title, self.secured(), main);
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        protect(headers);
        response
    }

    fn error_page(&self, e: &Error) -> Response {
        let status = crate::status_of(e);
        self.page(status, "Error", &html::error(e))
    }

    /// Every service's versions (at most [`MAX_SERVICES`] services, read concurrently), and
    /// whether there were more.
    async fn fleet(&self) -> Result<(Vec<Vec<Registration>>, bool), Error> {
        let registry = self.shared.service.registry().clone();
        let read = async {
            let names: BTreeSet<String> = registry
                .list_services()
                .await?
                .into_iter()
                .map(|s| s.name)
                .collect();
            let truncated = names.len() > MAX_SERVICES;
            let reads = futures_util::stream::iter(names.into_iter().take(MAX_SERVICES))
                .map(|name| {
                    let registry = registry.clone();
                    async move { registry.get_service(&name).await }
                })
                .buffered(READS_AT_ONCE)
                .collect::<Vec<_>>()
                .await;
            let mut fleet = Vec::new();
            for versions in reads {
                match versions {
                    Ok(versions) if !versions.is_empty() => fleet.push(versions),
                    // Gone since the listing.
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((fleet, truncated))
        };
        bounded(&self.shared.opts, "reading the registry", read).await
    }

    /// The services page's rows: the fleet with every node probed.
    async fn listing(&self) -> Result<(Vec<Listed>, bool), Error> {
        let (fleet, truncated) = self.fleet().await?;
        let nodes: Vec<(&str, &Node)> = fleet
            .iter()
            .flatten()
            .flat_map(|v| v.nodes.iter().map(move |n| (v.name.as_str(), n)))
            .collect();
        let health = self.probe(&nodes).await;
        let listed = fleet
            .iter()
            .filter_map(|versions| {
                let name = versions.first()?.name.clone();
                let ids: Vec<&str> = versions
                    .iter()
                    .flat_map(|v| v.nodes.iter().map(|n| n.id.as_str()))
                    .collect();
                Some(Listed {
                    name,
                    versions: versions.iter().map(|v| v.version.clone()).collect(),
                    health: health
                        .iter()
                        .filter(|h| ids.contains(&h.id.as_str()))
                        .cloned()
                        .collect(),
                })
            })
            .collect();
        Ok((listed, truncated))
    }

    /// Asks each node (its service's name, and the node) for `Debug.Health`,
    /// [`PROBES_AT_ONCE`] at a time, each within [`PROBE_TIMEOUT`]; nodes past [`MAX_PROBED`]
    /// are not asked.
    async fn probe(&self, nodes: &[(&str, &Node)]) -> Vec<NodeHealth> {
        let client = self.shared.service.client();
        // Owned, so that the probes' futures borrow nothing (the live page's stream is `Send`
        // only then).
        let asked: Vec<(String, String, String)> = nodes
            .iter()
            .take(MAX_PROBED)
            .map(|(service, node)| (service.to_string(), node.id.clone(), node.address.clone()))
            .collect();
        let mut health: Vec<NodeHealth> = futures_util::stream::iter(asked)
            .map(move |(service, id, address)| {
                let client = client.clone();
                async move {
                    let health = probe(&client, service, address).await;
                    NodeHealth { id, health }
                }
            })
            .buffered(PROBES_AT_ONCE)
            .collect()
            .await;
        health.extend(nodes.iter().skip(MAX_PROBED).map(|(_, node)| NodeHealth {
            id: node.id.clone(),
            health: Health::Unchecked,
        }));
        health
    }

    /// One service's versions, a `404` when the registry has none.
    async fn versions(&self, name: &str) -> Result<Vec<Registration>, Error> {
        let registry = self.shared.service.registry();
        let versions = bounded(
            &self.shared.opts,
            "reading the registry",
            registry.get_service(name),
        )
        .await?;
        if versions.is_empty() {
            return Err(Error::not_found(
                ID,
                format!("no service {name:?} in the registry"),
            ));
        }
        Ok(versions)
    }
}

/// `Debug.Health` on one node, through Micro's client, straight to its address.
async fn probe(client: &micro::Client, service: String, address: String) -> Health {
    let request = rpc::Request {
        service,
        endpoint: "Debug.Health".to_string(),
        content_type: "application/json".to_string(),
        body: Bytes::from_static(b"{}"),
        ..rpc::Request::default()
    };
    let options = CallOptions {
        timeout: Some(PROBE_TIMEOUT),
        retries: Some(0),
        address: Some(address),
        ..CallOptions::default()
    };
    // The client bounds the call; this bounds the rest (a hanging dial).
    let call = tokio::time::timeout(PROBE_TIMEOUT * 2, client.call_raw(request, options));
    match call.await {
        Err(_) => Health::Failing(format!("no answer within {PROBE_TIMEOUT:?}")),
        Ok(Err(e)) => Health::Failing(e.detail),
        Ok(Ok(reply)) => {
            let status = serde_json::from_slice::<Value>(&reply.body)
                .ok()
                .and_then(|v| v.get("status")?.as_str().map(str::to_string))
                .unwrap_or_default();
            if status == "ok" {
                Health::Serving
            } else {
                Health::Failing(format!("status {status:?}"))
            }
        }
    }
}

/// The headers that keep a page to itself: the content policy, no sniffing, no referrer,
/// no caching of registry data.
fn protect(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

async fn services_page(
    State(d): State<Arc<Dashboard>>,
    Query(query): Query<BTreeMap<String, String>>,
    caller: Caller,
) -> Response {
    if let Err(e) = d.admit(&caller).await {
        return d.error_page(&e);
    }
    let filter = query.get("q").map_or("", String::as_str);
    match d.listing().await {
        Ok((listed, truncated)) => d.page(
            StatusCode::OK,
            "Services",
            &html::services(&listed, filter, truncated),
        ),
        Err(e) => d.error_page(&e),
    }
}

async fn service_page(
    State(d): State<Arc<Dashboard>>,
    Path(name): Path<String>,
    caller: Caller,
) -> Response {
    if let Err(e) = d.admit(&caller).await {
        return d.error_page(&e);
    }
    let versions = match d.versions(&name).await {
        Ok(versions) => versions,
        Err(e) => return d.error_page(&e),
    };
    let nodes: Vec<(&str, &Node)> = versions
        .iter()
        .flat_map(|v| v.nodes.iter().map(move |n| (v.name.as_str(), n)))
        .collect();
    let (health, scraped) = tokio::join!(d.probe(&nodes), metrics::scrape(&name, &versions));
    let metrics = scraped.map(|s| html::metrics(&name, &s));
    let main = html::service(&name, &versions, &health, metrics.as_deref());
    d.page(StatusCode::OK, &name, &main)
}

async fn endpoint_page(
    State(d): State<Arc<Dashboard>>,
    Path((name, endpoint)): Path<(String, String)>,
    caller: Caller,
) -> Response {
    if let Err(e) = d.admit(&caller).await {
        return d.error_page(&e);
    }
    let versions = match d.versions(&name).await {
        Ok(versions) => versions,
        Err(e) => return d.error_page(&e),
    };
    let found = versions
        .iter()
        .flat_map(|v| &v.endpoints)
        .find(|e| e.name == endpoint && !html::is_subscriber(e));
    let Some(found) = found else {
        let e = Error::not_found(ID, format!("{name} has no endpoint {endpoint:?}"));
        return d.error_page(&e);
    };
    let origin = origin(&caller);
    let main = html::endpoint(&name, found, &origin, d.secured());
    d.page(StatusCode::OK, &format!("{name} {endpoint}"), &main)
}

/// `http://` and the `Host` the page was asked for (as the browser reached the gateway),
/// for the command lines; a host that is not one stays out.
fn origin(caller: &Caller) -> String {
    let host = caller
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.parse::<http::uri::Authority>().is_ok())
        .unwrap_or("127.0.0.1:8080");
    format!("http://{host}")
}

async fn events_page(State(d): State<Arc<Dashboard>>, caller: Caller) -> Response {
    if let Err(e) = d.admit(&caller).await {
        return d.error_page(&e);
    }
    d.page(StatusCode::OK, "Events", &html::events())
}

/// `GET /dashboard/metrics/{name}`: the service's counts as JSON, for the service page's
/// script to work out rates from.
async fn metrics_json(
    State(d): State<Arc<Dashboard>>,
    Path(name): Path<String>,
    caller: Caller,
) -> Response {
    if let Err(e) = d.admit(&caller).await {
        return failure(e);
    }
    let versions = match d.versions(&name).await {
        Ok(versions) => versions,
        Err(e) => return failure(e),
    };
    let scraped = metrics::scrape(&name, &versions).await.unwrap_or_default();
    let mut response = axum::Json(scraped).into_response();
    protect(response.headers_mut());
    response
}

/// `GET /dashboard/watch`: the services table's rows as Server-Sent Events (`services`), now
/// and whenever the registry changes (or every [`REFRESH`], for health), until the client
/// goes away. Without a registry watch it refreshes only.
async fn watch(State(d): State<Arc<Dashboard>>, caller: Caller) -> Response {
    if let Err(e) = d.admit(&caller).await {
        return failure(e);
    }
    let Ok(permit) = d.watchers.clone().try_acquire_owned() else {
        return failure(Error::new(
            ID,
            503,
            format!("{MAX_WATCHERS} live pages are open: try again later"),
        ));
    };
    let registry = d.shared.service.registry().clone();
    let changes = match bounded(
        &d.shared.opts,
        "watching the registry",
        registry.watch(None),
    )
    .await
    {
        Ok(changes) => Some(changes),
        Err(e) => {
            tracing::debug!(error = %e, "the dashboard refreshes without a registry watch");
            None
        }
    };
    let feed = Feed {
        closing: d.shared.closing.clone(),
        dashboard: d,
        changes,
        last: None,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            if feed.last.is_some() && !feed.wait().await {
                return None;
            }
            let rows = match feed.dashboard.listing().await {
                Ok((listed, _)) => html::rows(&listed.iter().collect::<Vec<_>>()),
                Err(e) => format!(
                    "<tr><td colspan=\"4\">The registry cannot be read: {}</td></tr>",
                    html::escape(&e.detail)
                ),
            };
            if feed.last.as_ref() != Some(&rows) {
                feed.last = Some(rows.clone());
                let event = Event::default().event("services").data(rows);
                return Some((Ok::<_, std::convert::Infallible>(event), feed));
            }
        }
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    protect(response.headers_mut());
    response
}

/// A live services page's state: owned by its event stream, dropped with it.
struct Feed {
    dashboard: Arc<Dashboard>,
    changes: Option<Watcher>,
    /// The rows last sent.
    last: Option<String>,
    closing: tokio_util::sync::CancellationToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Feed {
    /// Waits for a registry change (and lets the ones right after it arrive too) or the
    /// refresh; `false` when the gateway is closing.
    async fn wait(&mut self) -> bool {
        let change = async {
            match self.changes.as_mut() {
                Some(changes) => changes.next().await,
                None => std::future::pending().await,
            }
        };
        let changed = tokio::select! {
            change = change => Some(change),
            () = tokio::time::sleep(REFRESH) => None,
            () = self.closing.cancelled() => return false,
        };
        match changed {
            Some(Some(Ok(_))) => {
                tokio::time::sleep(SETTLE).await;
                // Drain what came meanwhile: one update shows them all.
                if let Some(changes) = self.changes.as_mut() {
                    while let Some(Some(_)) = changes.next().now_or_never() {}
                }
            }
            // The watch ended or failed: refresh from now on.
            Some(_) => self.changes = None,
            None => {}
        }
        true
    }
}

async fn css(State(d): State<Arc<Dashboard>>, caller: Caller) -> Response {
    asset(&d, &caller, "text/css; charset=utf-8", CSS).await
}

async fn js(State(d): State<Arc<Dashboard>>, caller: Caller) -> Response {
    asset(&d, &caller, "text/javascript; charset=utf-8", JS).await
}

async fn asset(
    d: &Dashboard,
    caller: &Caller,
    content_type: &'static str,
    body: &'static str,
) -> Response {
    if let Err(e) = d.shared.admit(caller, RULE).await {
        return failure(e);
    }
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An endpoint's request schema (always an object schema).
fn request_schema(endpoint: &Endpoint) -> Value {
    Value::Object(micro::registry::json_schema::message(
        endpoint.request.as_ref(),
    ))
}

fn response_schema(endpoint: &Endpoint) -> Value {
    Value::Object(micro::registry::json_schema::message(
        endpoint.response.as_ref(),
    ))
}
