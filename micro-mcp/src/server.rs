//! [`McpServer`]: the MCP server handler over a Micro service's registry and client, and the
//! registry watch that keeps its tool list current.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use micro::core::registry::Registry;
use micro::{Client, Result};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::call::{self, Progress};
use crate::catalog::Catalog;
use crate::guard::{Caller, Guard};
use crate::McpOptions;

/// How long the registry watch waits before it is opened again after it failed or ended.
const REWATCH: Duration = Duration::from_secs(5);

/// The MCP server handler: every endpoint in the registry as a tool, called through the
/// service's client. Clones share one tool list and one registry watch.
///
/// [`crate::serve_stdio`] and [`crate::http_service`] serve it; any other rmcp transport can
/// too (`rmcp::ServiceExt::serve`).
#[derive(Debug, Clone)]
pub struct McpServer {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Arc<dyn Registry>,
    client: Client,
    opts: McpOptions,
    guard: Guard,
    cache: Mutex<Cache>,
    /// Whether the registry watch is running, so a cached tool list follows the registry.
    live: AtomicBool,
    /// Counts tool list changes; each `subscriptions/listen` (MCP 2026-07-28) waits on it.
    changes: watch::Sender<u64>,
    /// The peers of sessions opened with `initialize` (MCP up to 2025-11-25), which are sent
    /// `notifications/tools/list_changed` unasked.
    peers: Mutex<Vec<Peer<RoleServer>>>,
    /// Stops the registry watch when the last clone goes.
    _watch: DropGuard,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("registry", &self.registry.name())
            .field("opts", &self.opts)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// The tool list last read, and a count of registry changes: a read that started before a
/// change must not be kept after it.
#[derive(Default)]
struct Cache {
    changes: u64,
    catalog: Option<Arc<Catalog>>,
}

impl McpServer {
    /// A handler over `service`'s registry and client, offering the services `opts` exposes.
    /// Starts watching the registry, so it must be called within a Tokio runtime.
    pub fn new(service: &micro::Service, opts: McpOptions) -> Self {
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            registry: service.registry().clone(),
            client: service.client().with_content_type("application/json"),
            guard: Guard::new(&opts),
            opts,
            cache: Mutex::default(),
            live: AtomicBool::new(false),
            changes: watch::Sender::new(0),
            peers: Mutex::default(),
            _watch: stop.clone().drop_guard(),
        });
        tokio::spawn(follow(Arc::downgrade(&shared), stop));
        McpServer { shared }
    }
}

impl Shared {
    /// The current tool list: the cached one while the registry watch runs, else a fresh read.
    async fn catalog(&self) -> Result<Arc<Catalog>> {
        let seen = {
            let cache = lock(&self.cache);
            if let Some(catalog) = &cache.catalog {
                return Ok(catalog.clone());
            }
            cache.changes
        };
        let fresh = Arc::new(self.read().await?);
        let mut cache = lock(&self.cache);
        if self.live.load(Ordering::Acquire) && cache.changes == seen {
            cache.catalog = Some(fresh.clone());
        }
        Ok(fresh)
    }

    async fn read(&self) -> Result<Catalog> {
        let limit = self.opts.timeout;
        tokio::time::timeout(limit, Catalog::read(&self.registry, &self.opts))
            .await
            .map_err(|_| {
                micro::Error::timeout(
                    crate::ID,
                    format!(
                        "the {} registry did not list the services within {limit:?}",
                        self.registry.name()
                    ),
                )
            })?
    }

    /// The registry changed: reads the tool list again and, if it differs from the one
    /// clients were given, tells them.
    async fn registry_changed(&self) {
        let (seen, before) = {
            let mut cache = lock(&self.cache);
            cache.changes += 1;
            (cache.changes, cache.catalog.take())
        };
        let fresh = match self.read().await {
            Ok(fresh) => Arc::new(fresh),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the tool list after a registry change");
                self.announce().await;
                return;
            }
        };
        let same = before.as_deref() == Some(&*fresh);
        {
            let mut cache = lock(&self.cache);
            if self.live.load(Ordering::Acquire) && cache.changes == seen {
                cache.catalog = Some(fresh);
            }
        }
        if !same {
            self.announce().await;
        }
    }

    /// Tells every client that the tool list changed: listening ones through their
    /// subscription, sessions through their peer (all at once, each bounded by the timeout).
    async fn announce(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        let peers = lock(&self.peers).clone();
        let limit = self.opts.timeout;
        let sends = peers
            .iter()
            .map(|peer| tokio::time::timeout(limit, peer.notify_tool_list_changed()));
        futures_util::future::join_all(sends).await;
        lock(&self.peers).retain(|peer| !peer.is_transport_closed());
    }

    /// The registry watch is not running: nothing cached can be trusted.
    fn forget(&self) {
        self.live.store(false, Ordering::Release);
        let mut cache = lock(&self.cache);
        cache.changes += 1;
        cache.catalog = None;
    }
}

/// Follows the registry for as long as the handler lives: every change (a burst of them read
/// as one) is a [`Shared::registry_changed`]; a watch that fails or ends is opened again.
async fn follow(shared: Weak<Shared>, stop: CancellationToken) {
    let Some(registry) = shared.upgrade().map(|s| s.registry.clone()) else {
        return;
    };
    loop {
        match registry.watch(None).await {
            Ok(mut events) => {
                let Some(s) = shared.upgrade() else { return };
                s.live.store(true, Ordering::Release);
                // Changes while no watch ran were missed: read the list again.
                s.registry_changed().await;
                drop(s);
                loop {
                    let event = tokio::select! {
                        () = stop.cancelled() => return,
                        event = events.next() => event,
                    };
                    if event.is_none() {
                        break;
                    }
                    while let Some(Some(_)) = events.next().now_or_never() {}
                    let Some(s) = shared.upgrade() else { return };
                    s.registry_changed().await;
                }
                tracing::warn!(
                    registry = registry.name(),
                    "the registry watch ended; opening it again"
                );
            }
            Err(e) => tracing::warn!(
                registry = registry.name(),
                error = %e,
                "cannot watch the registry; the tool list is read on every request until it can"
            ),
        }
        match shared.upgrade() {
            Some(s) => s.forget(),
            None => return,
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REWATCH) => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("micro-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Every endpoint of the services in the Micro registry is a tool named \
                 {service}.{Endpoint}; its arguments are the endpoint's JSON request and its \
                 result the JSON reply. A failed call is a tool error with the service's error \
                 code and detail.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> std::result::Result<ListToolsResult, McpError> {
        let catalog = self.shared.catalog().await.map_err(internal)?;
        Ok(ListToolsResult::with_all_items(catalog.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> std::result::Result<CallToolResponse, McpError> {
        let shared = &self.shared;
        let catalog = shared.catalog().await.map_err(internal)?;
        let Some(route) = catalog.route(&request.name) else {
            return Err(McpError::invalid_params(
                format!(
                    "no tool {:?}: list the tools again, the registry may have changed",
                    request.name
                ),
                None,
            ));
        };
        let started = tokio::time::Instant::now();
        let caller = Caller::of(&context);
        let progress: Progress = context
            .meta
            .get_progress_token()
            .map(|token| (context.peer.clone(), token));
        let arguments = request.arguments.unwrap_or_default();
        let call = async {
            shared.guard.admit(&request.name, &route.scopes, &caller)?;
            call::call(&shared.client, &shared.opts, route, arguments, progress).await
        };
        let outcome = tokio::select! {
            outcome = call => outcome,
            () = context.ct.cancelled() => {
                return Err(McpError::invalid_request("the call was cancelled", None));
            }
        };
        tracing::info!(
            target: "micro_mcp::audit",
            tool = %request.name,
            caller = %caller,
            code = outcome.as_ref().map_or_else(|e| e.code, |_| 200),
            latency_ms = started.elapsed().as_millis() as u64,
            "tool call"
        );
        Ok(outcome.unwrap_or_else(|e| call::failure(&e)).into())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let mut peers = lock(&self.shared.peers);
        peers.retain(|peer| !peer.is_transport_closed());
        peers.push(context.peer);
    }

    fn accepted_subscription_filter(
        &self,
        _requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Only tool list changes are ever sent; the SDK keeps those the client asked for.
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, subscription: SubscriptionContext) -> std::result::Result<(), McpError> {
        let mut changes = self.shared.changes.subscribe();
        loop {
            tokio::select! {
                () = subscription.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    let sent = match changed {
                        Ok(()) => subscription.sink().notify_tool_list_changed().await.is_ok(),
                        Err(_) => false,
                    };
                    if !sent {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// A failure to produce the tool list: the server cannot serve the request at all.
fn internal(e: micro::Error) -> McpError {
    McpError::internal_error(e.to_string(), None)
}
