//! The `Service`: a name, handlers and subscribers, with the client, server, registry, broker
//! and transport wired together from code, environment and flags.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_core::broker::{Delivery, SubscribeOptions, Subscription};
use micro_core::rpc::Server as _;
use micro_core::selector::Strategy;
use micro_core::{Broker, Error, Message, Registry, Result, Selector, Transport};
use tower::Layer;
use tower::Service as TowerService;
use tower::ServiceExt as _;

use crate::client::{
    Attempt, AttemptError, AttemptService, Call, CallService, Client, ClientOptions, Publication,
    PublishService,
};
use crate::codec::{Codecs, Decodable};
use crate::config::Config;
use crate::handler::Handler;
use crate::pubsub::{ErrorHook, Event, Subscriber, SubscriberService};
use crate::selector::{RegistrySelector, SelectorOptions};
use crate::server::{HandlerService, Server, ServerOptions, ServerParts};
use crate::{plugins, BoxFuture};
use micro_core::rpc::ServerCall;

type Hook = Box<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;
type MakeSubscriber = Box<dyn FnOnce(Codecs, Option<ErrorHook>) -> Subscriber + Send>;
type Wrap<S> = Arc<dyn Fn(S) -> S + Send + Sync>;

/// Builds a [`Service`]. Values set here are overridden by `MICRO_*` variables and flags (as in
/// Go Micro) unless [`ServiceBuilder::ignore_env`] is called.
pub struct ServiceBuilder {
    server: ServerOptions,
    client: ClientOptions,
    strategy: Option<Strategy>,
    use_env: bool,
    config: Option<Config>,
    registry: Option<Arc<dyn Registry>>,
    transport: Option<Arc<dyn Transport>>,
    broker: Option<Arc<dyn Broker>>,
    selector: Option<Arc<dyn Selector>>,
    codecs: Codecs,
    handlers: Vec<Handler>,
    subscribers: Vec<MakeSubscriber>,
    on_subscriber_error: Option<ErrorHook>,
    client_layers: Vec<Wrap<CallService>>,
    attempt_layers: Vec<Wrap<AttemptService>>,
    publish_layers: Vec<Wrap<PublishService>>,
    handler_layers: Vec<Wrap<HandlerService>>,
    subscriber_layers: Vec<Wrap<SubscriberService>>,
    before_start: Vec<Hook>,
    after_start: Vec<Hook>,
    before_stop: Vec<Hook>,
    after_stop: Vec<Hook>,
}

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("server", &self.server)
            .field("client", &self.client)
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

macro_rules! layer_method {
    ($(#[$doc:meta])* $name:ident, $field:ident, $svc:ty, $req:ty, $rsp:ty) => {
        $(#[$doc])*
        ///
        /// The layer's service may fail with any error that converts into a
        /// [`BoxError`](crate::layer::BoxError) (tower's own layers do); see
        /// [`crate::layer`] for how those become Micro errors, and for the order of layers.
        pub fn $name<L>(mut self, layer: L) -> Self
        where
            L: Layer<$svc> + Send + Sync + 'static,
            L::Service: TowerService<$req, Response = $rsp> + Clone + Send + Sync + 'static,
            <L::Service as TowerService<$req>>::Error: Into<crate::layer::BoxError>,
            <L::Service as TowerService<$req>>::Future: Send + 'static,
        {
            self.$field.push(Arc::new(move |inner| {
                <$svc>::new(tower::util::MapErr::new(
                    layer.layer(inner),
                    crate::layer::error_of,
                ))
            }));
            self
        }
    };
}

impl ServiceBuilder {
    fn new(name: &str) -> Self {
        ServiceBuilder {
            server: ServerOptions::new(name),
            client: ClientOptions::default(),
            strategy: None,
            use_env: true,
            config: None,
            registry: None,
            transport: None,
            broker: None,
            selector: None,
            codecs: Codecs::default(),
            handlers: Vec::new(),
            subscribers: Vec::new(),
            on_subscriber_error: None,
            client_layers: Vec::new(),
            attempt_layers: Vec::new(),
            publish_layers: Vec::new(),
            handler_layers: Vec::new(),
            subscriber_layers: Vec::new(),
            before_start: Vec::new(),
            after_start: Vec::new(),
            before_stop: Vec::new(),
            after_stop: Vec::new(),
        }
    }

    /// The version (`latest` by default).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.server.version = version.into();
        self
    }

    /// Adds service metadata.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.server.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds metadata of this node (registered with it, unlike [`metadata`](Self::metadata),
    /// which is the service's): where its metrics are (`metrics`, which the gateway's
    /// dashboard reads), its zone. The server's own keys (`protocol`, `transport`, ...) win.
    pub fn node_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.server.node_metadata.insert(key.into(), value.into());
        self
    }

    /// Where to listen (`127.0.0.1:0` by default).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.server.address = address.into();
        self
    }

    /// The address to register instead of the bound one.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.server.advertise = Some(address.into());
        self
    }

    /// How long a registration lives (90 s).
    pub fn register_ttl(mut self, ttl: Duration) -> Self {
        self.server.register_ttl = ttl;
        self
    }

    /// How often the registration is renewed (30 s).
    pub fn register_interval(mut self, interval: Duration) -> Self {
        self.server.register_interval = interval;
        self
    }

    /// How long a stop waits for calls in flight (10 s); handlers still running then are
    /// cancelled.
    pub fn drain_wait(mut self, wait: Duration) -> Self {
        self.server.drain_wait = wait;
        self
    }

    /// How much the server takes on at once: calls in flight (10 000) and the request bytes
    /// they hold (256 MiB); a call past either gets a fast `503` from the listener.
    pub fn limits(mut self, limits: micro_core::transport::LoadLimits) -> Self {
        self.server.limits = limits;
        self
    }

    /// How long one register, renewal or deregister may take (10 s).
    pub fn registry_timeout(mut self, limit: Duration) -> Self {
        self.server.registry_timeout = limit;
        self
    }

    /// Client settings.
    pub fn client_options(mut self, opts: ClientOptions) -> Self {
        self.client = opts;
        self
    }

    /// The selector strategy (random by default).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Uses this registry instead of the configured one.
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Uses this transport instead of the configured one.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Uses this broker instead of the configured one.
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Uses this selector instead of a registry selector.
    pub fn selector(mut self, selector: Arc<dyn Selector>) -> Self {
        self.selector = Some(selector);
        self
    }

    /// Uses these codecs (all compiled in by default).
    pub fn codecs(mut self, codecs: Codecs) -> Self {
        self.codecs = codecs;
        self
    }

    /// Takes these settings instead of reading the `MICRO_*` environment and this process's
    /// flags: what a program that parses its own flags with clap passes
    /// ([`cli::Flags::config`](crate::cli::Flags::config), cargo feature `cli`).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Ignores `MICRO_*` variables and flags: only code decides (useful in tests).
    pub fn ignore_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// Serves a handler's endpoints.
    pub fn handler(mut self, handler: Handler) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Subscribes `f` to `topic`; every subscriber without a queue gets every message.
    pub fn subscriber<T, F>(self, topic: &str, f: F) -> Self
    where
        T: Decodable,
        F: Fn(Event<T>) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    {
        self.subscriber_with(topic, SubscribeOptions::default(), f)
    }

    /// Subscribes `f` to `topic` with options: a queue group (members share the messages) and
    /// whether messages are acked automatically.
    pub fn subscriber_with<T, F>(mut self, topic: &str, options: SubscribeOptions, f: F) -> Self
    where
        T: Decodable,
        F: Fn(Event<T>) -> BoxFuture<'static, Result<()>> + Send + Sync + 'static,
    {
        let topic = topic.to_string();
        self.subscribers.push(Box::new(move |codecs, on_error| {
            Subscriber::new(&topic, options, codecs, on_error, f)
        }));
        self
    }

    /// Called with each message a subscriber cannot decode (after it is logged, before it is
    /// dropped).
    pub fn on_subscriber_error(
        mut self,
        hook: impl Fn(&micro_core::broker::Delivery, &Error) + Send + Sync + 'static,
    ) -> Self {
        self.on_subscriber_error = Some(Arc::new(hook));
        self
    }

    layer_method!(
        /// Wraps the client call path in a tower layer.
        client_layer, client_layers, CallService, Call, micro_core::rpc::Response
    );
    /// Wraps each client attempt (one try on one node) in a tower layer.
    pub fn attempt_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<AttemptService> + Send + Sync + 'static,
        L::Service: TowerService<Attempt, Response = micro_core::rpc::Response, Error = AttemptError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as TowerService<Attempt>>::Future: Send + 'static,
    {
        self.attempt_layers.push(Arc::new(move |inner| {
            AttemptService::new(layer.layer(inner))
        }));
        self
    }
    layer_method!(
        /// Wraps the client's publish path (one message to one topic) in a tower layer.
        publish_layer, publish_layers, PublishService, Publication, ()
    );
    layer_method!(
        /// Wraps the handler path (unary calls) in a tower layer.
        handler_layer, handler_layers, HandlerService, ServerCall, micro_core::rpc::Response
    );
    layer_method!(
        /// Wraps the subscriber path in a tower layer.
        subscriber_layer, subscriber_layers, SubscriberService, micro_core::broker::Delivery, ()
    );

    /// Runs before the server starts; an error aborts the start.
    pub fn before_start<F>(mut self, f: impl Fn() -> F + Send + Sync + 'static) -> Self
    where
        F: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        self.before_start.push(Box::new(move || Box::pin(f())));
        self
    }

    /// Runs once the server serves and is registered.
    pub fn after_start<F>(mut self, f: impl Fn() -> F + Send + Sync + 'static) -> Self
    where
        F: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        self.after_start.push(Box::new(move || Box::pin(f())));
        self
    }

    /// Runs when a stop begins.
    pub fn before_stop<F>(mut self, f: impl Fn() -> F + Send + Sync + 'static) -> Self
    where
        F: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        self.before_stop.push(Box::new(move || Box::pin(f())));
        self
    }

    /// Runs after the server has stopped.
    pub fn after_stop<F>(mut self, f: impl Fn() -> F + Send + Sync + 'static) -> Self
    where
        F: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        self.after_stop.push(Box::new(move || Box::pin(f())));
        self
    }

    /// Applies configuration over the values set in code.
    fn configure(&mut self, c: Config) {
        let s = &mut self.server;
        if let Some(v) = c.server_name {
            s.id = format!("{v}-{}", uuid::Uuid::new_v4());
            s.name = v;
        }
        s.version = c.server_version.unwrap_or(std::mem::take(&mut s.version));
        s.address = c.server_address.unwrap_or(std::mem::take(&mut s.address));
        s.advertise = c.server_advertise.or(s.advertise.take());
        s.register_ttl = c.register_ttl.unwrap_or(s.register_ttl);
        s.register_interval = c.register_interval.unwrap_or(s.register_interval);
        s.limits.max_calls = c.server_max_calls.unwrap_or(s.limits.max_calls);
        s.limits.max_request_bytes = c
            .server_max_request_bytes
            .unwrap_or(s.limits.max_request_bytes);
        self.client.retries = c.client_retries.unwrap_or(self.client.retries);
        self.client.retry = c.client_retry.unwrap_or(self.client.retry);
        self.client.request_timeout = c
            .client_request_timeout
            .unwrap_or(self.client.request_timeout);
    }

    /// Builds the service: resolves configuration and plugins.
    pub fn build(mut self) -> Result<Service> {
        let config = match self.config.take() {
            Some(config) => config,
            None if self.use_env => Config::load()?,
            None => Config::default(),
        };
        // MICRO_SELECTOR names a strategy of the registry selector, or a selector that reads
        // something else than the registry (static addresses, DNS).
        let mut strategy = self.strategy.unwrap_or_default();
        let mut elsewhere = None;
        if let Some(name) = config.selector.as_deref() {
            match Strategy::parse(name) {
                Some(parsed) => strategy = parsed,
                None if plugins::PLUGINS
                    .iter()
                    .any(|p| p.kind == plugins::Kind::Selector && p.name == name) =>
                {
                    elsewhere = Some(plugins::selector(name, strategy)?);
                }
                None => {
                    return Err(Error::configuration(
                        "micro.config",
                        format!(
                            "unknown selector {name:?}; known: random, roundrobin, p2c, static, dns"
                        ),
                    ))
                }
            }
        }
        let registry = match (self.registry.take(), &config.registry) {
            (Some(r), None) => r,
            (_, name) => plugins::registry(
                name.as_deref().unwrap_or(plugins::default_registry()),
                config.registry_address.as_deref(),
            )?,
        };
        let transport = match (self.transport.take(), &config.transport) {
            (Some(t), None) => t,
            (_, name) => {
                plugins::transport(name.as_deref().unwrap_or(plugins::default_transport()))?
            }
        };
        let broker = match (self.broker.take(), &config.broker) {
            (Some(b), None) => b,
            (_, name) => plugins::broker(
                name.as_deref().unwrap_or(plugins::default_broker()),
                config.broker_address.as_deref(),
                &registry,
            )?,
        };
        self.configure(config);
        let selector = self.selector.take().or(elsewhere).unwrap_or_else(|| {
            let opts = SelectorOptions {
                strategy,
                ..Default::default()
            };
            Arc::new(RegistrySelector::new(registry.clone(), opts))
        });

        let mut client = Client::new(
            selector,
            transport.clone(),
            broker.clone(),
            self.codecs.clone(),
            self.client.clone(),
        );
        // Nodes that register another protocol (gRPC next to mucp) are called with the
        // compiled-in transport that speaks it.
        for other in plugins::other_transports(transport.protocol())? {
            client = client.with_transport(other);
        }
        for wrap in &self.client_layers {
            client = client.with_call_wrap(wrap.clone());
        }
        for wrap in &self.attempt_layers {
            client = client.with_attempt_wrap(wrap.clone());
        }
        for wrap in &self.publish_layers {
            client = client.with_publish_wrap(wrap.clone());
        }

        let layers = self.subscriber_layers;
        let subscribers: Vec<Subscriber> = self
            .subscribers
            .into_iter()
            .map(|make| {
                let mut s = make(self.codecs.clone(), self.on_subscriber_error.clone());
                for wrap in &layers {
                    s.service = wrap(s.service);
                }
                // Who published is for the subscriber path's own layers to say, never for the
                // publisher: claims that came with the message are dropped before any layer.
                s.service = SubscriberService::new(s.service.map_request(|mut d: Delivery| {
                    micro_core::headers::drop_auth(&mut d.message.header);
                    d
                }));
                s
            })
            .collect();

        let parts = ServerParts {
            opts: self.server.clone(),
            registry: registry.clone(),
            transport,
            broker_name: broker.name().to_string(),
            codecs: self.codecs,
            handlers: self.handlers,
            extra_endpoints: subscribers.iter().map(|s| s.endpoint.clone()).collect(),
        };
        let handler_layers = self.handler_layers;
        let server = Server::new(parts, move |mut svc| {
            for wrap in &handler_layers {
                svc = wrap(svc);
            }
            // Who calls is for the handler path's own layers to say (the auth layer), never for
            // the caller: claims sent as metadata are dropped before any layer.
            HandlerService::new(svc.map_request(|mut call: ServerCall| {
                micro_core::headers::drop_auth(&mut call.request.metadata);
                call
            }))
        });
        Ok(Service {
            inner: Arc::new(ServiceInner {
                server,
                client,
                broker,
                registry,
                subscribers,
                subscriptions: Mutex::new(Vec::new()),
                before_start: self.before_start,
                after_start: self.after_start,
                before_stop: self.before_stop,
                after_stop: self.after_stop,
            }),
        })
    }
}

/// A microservice: its server, client, registry and broker.
#[derive(Clone)]
pub struct Service {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    server: Server,
    client: Client,
    broker: Arc<dyn Broker>,
    registry: Arc<dyn Registry>,
    subscribers: Vec<Subscriber>,
    subscriptions: Mutex<Vec<Box<dyn Subscription>>>,
    before_start: Vec<Hook>,
    after_start: Vec<Hook>,
    before_stop: Vec<Hook>,
    after_stop: Vec<Hook>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("server", &self.inner.server)
            .field("registry", &self.inner.registry.name())
            .field("broker", &self.inner.broker.name())
            .finish()
    }
}

impl Service {
    /// Starts building a service called `name`.
    pub fn builder(name: &str) -> ServiceBuilder {
        ServiceBuilder::new(name)
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.inner.server.options().name
    }

    /// The client, for calling other services (and this one).
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The server.
    pub fn server(&self) -> &Server {
        &self.inner.server
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.inner.registry
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Publishes an event through the broker.
    pub async fn publish<T: Message>(&self, topic: &str, msg: &T) -> Result<()> {
        self.inner.client.publish(topic, msg).await
    }

    /// Starts serving: hooks, broker, server (which serves, then registers), subscribers. A
    /// start that fails halfway undoes what it did: subscriptions made are cancelled, the server
    /// deregisters and closes, the broker disconnects; the error says what failed.
    pub async fn start(&self) -> Result<()> {
        let i = &self.inner;
        for hook in &i.before_start {
            hook().await?;
        }
        i.broker.connect().await?;
        if let Err(e) = i.server.start().await {
            self.undo_start().await;
            return Err(e);
        }
        if let Err(e) = self.subscribe_all().await {
            tracing::error!(service = %self.name(), error = %e, "start failed; undoing it");
            self.undo_start().await;
            return Err(e);
        }
        // One line that says what this process is and which plugins it runs on.
        let node = i
            .server
            .registration()
            .and_then(|r| r.nodes.into_iter().next());
        tracing::info!(
            service = %self.name(),
            id = node.as_ref().map_or("", |n| n.id.as_str()),
            address = node.as_ref().map_or("", |n| n.address.as_str()),
            transport = i.server.transport_name(),
            registry = i.registry.name(),
            broker = i.broker.name(),
            codec = %i.client.options().content_type,
            "serving"
        );
        for hook in &i.after_start {
            hook().await?;
        }
        Ok(())
    }

    async fn undo_start(&self) {
        let i = &self.inner;
        let subs: Vec<_> =
            std::mem::take(&mut *i.subscriptions.lock().unwrap_or_else(|p| p.into_inner()));
        for s in subs {
            if let Err(e) = s.unsubscribe().await {
                tracing::warn!(topic = s.topic(), error = %e, "cannot unsubscribe");
            }
        }
        if let Err(e) = i.server.stop().await {
            tracing::warn!(error = %e, "cannot stop the server");
        }
        if let Err(e) = i.broker.disconnect().await {
            tracing::warn!(broker = i.broker.name(), error = %e, "cannot disconnect from the broker");
        }
    }

    async fn subscribe_all(&self) -> Result<()> {
        let i = &self.inner;
        for s in &i.subscribers {
            let svc = s.service.clone();
            let handler: micro_core::broker::Handler = Arc::new(move |d| {
                let mut svc = svc.clone();
                Box::pin(async move {
                    futures_util::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                    svc.call(d).await
                })
            });
            let sub = i
                .broker
                .subscribe(&s.topic, handler, s.options.clone())
                .await?;
            i.subscriptions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(sub);
        }
        Ok(())
    }

    /// Stops: hooks, subscribers, then the server (deregister, drain, close).
    pub async fn stop(&self) -> Result<()> {
        let i = &self.inner;
        for hook in &i.before_stop {
            if let Err(e) = hook().await {
                tracing::warn!(error = %e, "before-stop hook failed");
            }
        }
        let subs: Vec<_> =
            std::mem::take(&mut *i.subscriptions.lock().unwrap_or_else(|p| p.into_inner()));
        for s in subs {
            if let Err(e) = s.unsubscribe().await {
                tracing::warn!(topic = s.topic(), error = %e, "cannot unsubscribe");
            }
        }
        i.server.stop().await?;
        if let Err(e) = i.broker.disconnect().await {
            tracing::warn!(broker = i.broker.name(), error = %e, "cannot disconnect from the broker");
        }
        for hook in &i.after_stop {
            if let Err(e) = hook().await {
                tracing::warn!(error = %e, "after-stop hook failed");
            }
        }
        Ok(())
    }

    /// Starts, serves until SIGINT or SIGTERM, then stops gracefully. Logs to standard error
    /// (`RUST_LOG`, `info` by default) unless the program has set up `tracing` itself.
    pub async fn run(&self) -> Result<()> {
        log_to_stderr();
        self.run_until(shutdown_signal()).await
    }

    /// Starts, serves until `signal` completes, then stops gracefully.
    pub async fn run_until(&self, signal: impl std::future::Future<Output = ()>) -> Result<()> {
        self.start().await?;
        signal.await;
        tracing::info!(service = %self.name(), "stopping");
        self.stop().await
    }
}

/// Installs a `tracing` subscriber writing to standard error, filtered by `RUST_LOG` (`info`
/// when unset), unless one is installed already.
pub fn log_to_stderr() {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Another thread may have won the race: its subscriber stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
