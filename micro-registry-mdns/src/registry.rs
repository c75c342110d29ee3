//! [`MdnsRegistry`]: the responder for this process's nodes, lookups, and watches.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use micro_core::registry::{Event, EventKind, RegisterOptions, Watcher};
use micro_core::{Error, Registry, Result, Service};
use tokio::sync::{broadcast, mpsc, watch, Mutex};
use tokio::time::Instant;

use crate::net::{Net, Via};
use crate::options::{MdnsOptions, MAX_NODES_ENV, MAX_SERVICES_ENV};
use crate::records::{self, Answers, Data, Message, Record, Zone, MAX_PACKET, RECORD_TTL};
use crate::txt::{self, TxtRecord};
use crate::ERROR_ID;

/// How often expired registrations are looked for (and said goodbye to).
const REAP_EVERY: Duration = Duration::from_millis(200);

/// When announcements of a new or changed node are repeated (RFC 6762 8.3: at least two, one
/// second apart, then doubling).
const ANNOUNCE_AFTER: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Questions per query packet.
const QUESTIONS_PER_PACKET: usize = 32;

/// How often a watch warns, at most, about services or nodes it leaves out for its bounds.
const BOUND_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The mDNS registry: Go Micro's wire format, on loopback unless told otherwise.
///
/// Cloning is cheap and shares the sockets. When the last clone is dropped, the registry says
/// goodbye for the nodes it still publishes (best effort) and its background tasks end.
#[derive(Clone)]
pub struct MdnsRegistry {
    inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

impl fmt::Debug for MdnsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdnsRegistry")
            .field("options", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl MdnsRegistry {
    /// Opens the sockets and starts answering for this process.
    ///
    /// Must be called inside a tokio runtime, which then carries the registry's sockets and
    /// background tasks. Fails with an error naming the interface and
    /// the reason when the port cannot be bound or the multicast group cannot be joined.
    pub fn new(opts: MdnsOptions) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::internal(
                ERROR_ID,
                "mdns: MdnsRegistry::new must be called inside a tokio runtime",
            )
        })?;
        let net = Net::open(&opts)?;
        let (answers, _) = broadcast::channel(1024);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            zone: Zone::new(&opts.domain),
            opts,
            net,
            local: Mutex::new(Local::default()),
            answers,
            generation: AtomicU64::new(1),
            stop,
        });
        runtime.spawn(receive(inner.clone(), Via::Listener));
        if inner.net.group_listener.is_some() {
            runtime.spawn(receive(inner.clone(), Via::Group));
        }
        for i in 0..inner.net.links.len() {
            runtime.spawn(receive(inner.clone(), Via::Link(i)));
        }
        runtime.spawn(reap(inner.clone()));
        tracing::debug!(
            interface = %inner.opts.interface,
            port = inner.opts.port,
            "mdns registry started"
        );
        Ok(MdnsRegistry {
            _guard: Arc::new(Guard(inner.clone())),
            inner,
        })
    }

    /// The default options, with the `MICRO_MDNS_*` variables applied (see
    /// [`MdnsOptions::from_env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(MdnsOptions::from_env()?)
    }

    /// The options this registry runs with.
    pub fn options(&self) -> &MdnsOptions {
        &self.inner.opts
    }
}

#[async_trait::async_trait]
impl Registry for MdnsRegistry {
    fn name(&self) -> &str {
        "mdns"
    }

    async fn register(&self, service: &Service, opts: RegisterOptions) -> Result<()> {
        self.inner.register(service, opts).await
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        self.inner.deregister(service).await
    }

    async fn get_service(&self, name: &str) -> Result<Vec<Service>> {
        let inner = &self.inner;
        let owner = inner.zone.service(name);
        let answers = inner
            .query(
                std::slice::from_ref(&owner),
                inner.opts.max_nodes_per_service,
                |r| {
                    // The service's PTR and its instances' records, and addresses outside the
                    // domain (Go Micro's SRV records point at the host's name).
                    is_at_or_under(&r.name, &owner)
                        || (matches!(r.data, Data::Addr(_))
                            && !is_at_or_under(&r.name, inner.zone.domain()))
                },
            )
            .await?;
        warn_dropped(&answers, || format!("looking up {name}"), MAX_NODES_ENV);
        let found: Vec<Service> = answers
            .instances()
            .iter()
            .filter_map(|i| inner.zone.node(i, Some(name)))
            .collect();
        if found.is_empty() {
            return Err(Error::not_found(
                ERROR_ID,
                format!(
                    "service {name} not found (mdns on {})",
                    inner.opts.interface
                ),
            ));
        }
        Ok(Service::merge(found))
    }

    async fn list_services(&self) -> Result<Vec<Service>> {
        let inner = &self.inner;
        let owner = inner.zone.list();
        let answers = inner
            .query(std::slice::from_ref(&owner), inner.opts.max_services, |r| {
                r.name.eq_ignore_ascii_case(&owner)
            })
            .await?;
        warn_dropped(&answers, || "listing services".into(), MAX_SERVICES_ENV);
        let names: BTreeSet<String> = inner
            .zone
            .listed(&answers)
            .into_iter()
            .filter(|(_, alive)| *alive)
            .map(|(n, _)| n)
            .collect();
        Ok(names
            .into_iter()
            .map(|name| Service {
                name,
                ..Default::default()
            })
            .collect())
    }

    async fn watch(&self, service: Option<&str>) -> Result<Watcher> {
        let inner = self.inner.clone();
        let mut rx = inner.answers.subscribe();
        let mut state = WatchState {
            filter: service.map(str::to_string),
            nodes: HashMap::new(),
            per_service: HashMap::new(),
            services: BTreeSet::new(),
            left_out: LeftOut::default(),
            inner,
        };
        state.baseline(&mut rx).await?;
        let (tx, events) = mpsc::channel(64);
        tokio::spawn(state.run(rx, tx));
        let stream = futures_util::stream::unfold(events, |mut events| async move {
            events.recv().await.map(|e| (e, events))
        });
        Ok(Box::pin(stream))
    }
}

/// Ends the background tasks when the last [`MdnsRegistry`] clone goes.
struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(local) = self.0.local.try_lock() {
            for node in local.nodes.values() {
                self.0.net.try_multicast(&node.published.goodbye);
            }
            for list in local.lists.values() {
                self.0.net.try_multicast(&list.published.goodbye);
            }
        }
        self.0.stop.send_replace(true);
    }
}

struct Inner {
    opts: MdnsOptions,
    zone: Zone,
    net: Net,
    /// What this process publishes. Held while sending, so that an answer or announcement
    /// never overtakes the goodbye of the same node.
    local: Mutex<Local>,
    /// Records of every answer received, for lookups and watches.
    answers: broadcast::Sender<Arc<[Record]>>,
    generation: AtomicU64,
    stop: watch::Sender<bool>,
}

#[derive(Default)]
struct Local {
    /// By lower-case instance name.
    nodes: HashMap<String, LocalNode>,
    /// Listing entries by lower-case `<service>._services.<domain>`.
    lists: HashMap<String, ListEntry>,
}

struct LocalNode {
    /// Lower-case `<service>.<domain>`.
    service_key: String,
    published: Published,
    /// `None`: registered without a TTL.
    expires: Option<Instant>,
}

impl LocalNode {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

struct ListEntry {
    name: String,
    service_key: String,
    published: Published,
}

/// The packets of one published entry, built once.
struct Published {
    packet: Vec<u8>,
    goodbye: Vec<u8>,
    generation: u64,
}

#[derive(Clone)]
enum Announce {
    Node(String, u64),
    List(String, u64),
}

impl Local {
    fn has_live(&self, service_key: &str, now: Instant) -> bool {
        self.nodes
            .values()
            .any(|n| n.service_key == service_key && n.live(now))
    }

    /// Removes listing entries of services without nodes, returning their goodbyes.
    fn prune_lists(&mut self) -> Vec<Vec<u8>> {
        let unused: Vec<String> = self
            .lists
            .iter()
            .filter(|(_, l)| !self.nodes.values().any(|n| n.service_key == l.service_key))
            .map(|(k, _)| k.clone())
            .collect();
        unused
            .into_iter()
            .filter_map(|k| self.lists.remove(&k))
            .map(|l| l.published.goodbye)
            .collect()
    }

    fn current(&self, item: &Announce) -> Option<&[u8]> {
        let p = match item {
            Announce::Node(k, _) => &self.nodes.get(k)?.published,
            Announce::List(k, _) => &self.lists.get(k)?.published,
        };
        let generation = match item {
            Announce::Node(_, g) | Announce::List(_, g) => *g,
        };
        (p.generation == generation).then_some(p.packet.as_slice())
    }
}

impl Inner {
    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }

    async fn register(self: &Arc<Self>, service: &Service, opts: RegisterOptions) -> Result<()> {
        if service.name.is_empty() {
            return Err(Error::bad_request(ERROR_ID, "mdns: service has no name"));
        }
        // Build every packet first, so that a bad node leaves nothing half registered.
        let mut built = Vec::new();
        for node in &service.nodes {
            let fail = |why: String| {
                Error::bad_request(
                    ERROR_ID,
                    format!(
                        "mdns: cannot register node {} of {}: {why}",
                        node.id, service.name
                    ),
                )
            };
            if node.id.is_empty() {
                return Err(fail("the node has no id".into()));
            }
            let addr = resolve(&node.address).await.map_err(fail)?;
            let strings = txt::encode(&TxtRecord {
                service: service.name.clone(),
                version: service.version.clone(),
                endpoints: service.endpoints.clone(),
                metadata: node.metadata.clone(),
            })
            .map_err(fail)?;
            let packet = |ttl| {
                self.zone
                    .node_packet(&service.name, &node.id, addr, &strings, ttl)
                    .map_err(fail)
            };
            let (packet, goodbye) = (packet(RECORD_TTL)?, packet(0)?);
            let key = self
                .zone
                .instance(&service.name, &node.id)
                .to_ascii_lowercase();
            built.push((key, packet, goodbye));
        }
        if built.is_empty() {
            return Ok(());
        }
        let list_packets = |ttl| {
            self.zone.list_packet(&service.name, ttl).map_err(|e| {
                Error::bad_request(ERROR_ID, format!("mdns: cannot list {}: {e}", service.name))
            })
        };
        let (list_packet, list_goodbye) = (list_packets(RECORD_TTL)?, list_packets(0)?);

        let now = Instant::now();
        let expires = (!opts.ttl.is_zero()).then(|| now + opts.ttl);
        let service_key = self.zone.service(&service.name).to_ascii_lowercase();
        let mut announce = Vec::new();
        let mut local = self.local.lock().await;
        for (key, packet, goodbye) in built {
            if let Some(old) = local.nodes.get_mut(&key) {
                if old.published.packet == packet && old.live(now) {
                    // Unchanged: a heartbeat renews it quietly.
                    old.expires = expires;
                    continue;
                }
            }
            let generation = self.next_generation();
            announce.push(Announce::Node(key.clone(), generation));
            let node = LocalNode {
                service_key: service_key.clone(),
                published: Published {
                    packet,
                    goodbye,
                    generation,
                },
                expires,
            };
            local.nodes.insert(key, node);
        }
        let list_key = self.zone.list_instance(&service.name).to_ascii_lowercase();
        if let std::collections::hash_map::Entry::Vacant(slot) = local.lists.entry(list_key) {
            let generation = self.next_generation();
            announce.push(Announce::List(slot.key().clone(), generation));
            slot.insert(ListEntry {
                name: service.name.clone(),
                service_key,
                published: Published {
                    packet: list_packet,
                    goodbye: list_goodbye,
                    generation,
                },
            });
        }
        drop(local);
        if !announce.is_empty() {
            tokio::spawn(announce_repeatedly(self.clone(), announce));
        }
        Ok(())
    }

    async fn deregister(&self, service: &Service) -> Result<()> {
        let mut local = self.local.lock().await;
        let mut goodbyes = Vec::new();
        for node in &service.nodes {
            let key = self
                .zone
                .instance(&service.name, &node.id)
                .to_ascii_lowercase();
            if let Some(n) = local.nodes.remove(&key) {
                goodbyes.push(n.published.goodbye);
            }
        }
        goodbyes.extend(local.prune_lists());
        for g in &goodbyes {
            if let Err(e) = self.net.multicast(g).await {
                tracing::warn!("{e}");
            }
        }
        Ok(())
    }

    /// Sends PTR queries for `names`.
    async fn send_query(&self, names: &[String]) -> Result<()> {
        for chunk in names.chunks(QUESTIONS_PER_PACKET) {
            let packet = Zone::query_packet(chunk).map_err(|e| {
                Error::bad_request(ERROR_ID, format!("mdns: cannot query {chunk:?}: {e}"))
            })?;
            self.net.multicast(&packet).await?;
        }
        Ok(())
    }

    /// Asks for `names` and gathers the answers for the query timeout: the records `wanted`,
    /// at most `limit` names of each kind.
    async fn query(
        &self,
        names: &[String],
        limit: usize,
        wanted: impl Fn(&Record) -> bool,
    ) -> Result<Answers> {
        let mut rx = self.answers.subscribe();
        self.send_query(names).await?;
        let mut answers = Answers::bounded(limit);
        let until = Instant::now() + self.opts.query_timeout;
        loop {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Ok(records)) => {
                    if records.iter().all(&wanted) {
                        answers.add(&records);
                    } else {
                        let kept: Vec<Record> =
                            records.iter().filter(|r| wanted(r)).cloned().collect();
                        answers.add(&kept);
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    tracing::warn!("mdns: lookup missed {n} answers (too much traffic)");
                }
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
            }
        }
        Ok(answers)
    }

    async fn handle(&self, bytes: &[u8], from: SocketAddr, via: Via) {
        if !self.net.admits(&from, via) {
            // The group listener also receives every packet the shared listener handles.
            if via != Via::Group {
                tracing::debug!(%from, "mdns: ignoring a packet from outside loopback");
            }
            return;
        }
        // What the group listener admits arrived on lo, whatever its source says: the sender
        // is on this host, reachable at 127.0.0.1 on its port (see `net`).
        let from = match via {
            Via::Group => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, from.port())),
            _ => from,
        };
        let msg = match records::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%from, "mdns: skipping packet: {e}");
                return;
            }
        };
        if msg.response {
            if !msg.records.is_empty() {
                // Nobody listening is fine.
                let _ = self.answers.send(Arc::from(msg.records));
            }
        } else if via.answers_queries() {
            self.answer(&msg, from, via).await;
        }
    }

    /// Answers a query for what this process publishes: unicast to the querier when it asks
    /// so or is not an mDNS responder itself (source port other than the group's, as Go
    /// Micro's lookups are), else to the group. A querier heard on the group listener is
    /// answered at 127.0.0.1 (see `net`), except on the group's port: there, one of the several
    /// sockets sharing the port would get it, maybe not the querier's, so the group is answered.
    async fn answer(&self, msg: &Message, from: SocketAddr, via: Via) {
        let unicast = from.port() != self.opts.port
            || (via != Via::Group && msg.questions.iter().any(|q| q.unicast));
        let list_name = self.zone.list().to_ascii_lowercase();
        let enum_name = self.zone.enumeration().to_ascii_lowercase();
        let now = Instant::now();
        let local = self.local.lock().await;
        let mut seen = HashSet::new();
        let mut packets: Vec<Vec<u8>> = Vec::new();
        for q in &msg.questions {
            let qn = q.name.to_ascii_lowercase();
            for (key, node) in &local.nodes {
                if (qn == *key || qn == node.service_key) && node.live(now) && seen.insert(key) {
                    packets.push(node.published.packet.clone());
                }
            }
            for (key, list) in &local.lists {
                if (qn == list_name || qn == *key)
                    && local.has_live(&list.service_key, now)
                    && seen.insert(key)
                {
                    packets.push(list.published.packet.clone());
                }
            }
            if qn == enum_name && seen.insert(&enum_name) {
                let live = local
                    .lists
                    .values()
                    .filter(|l| local.has_live(&l.service_key, now))
                    .map(|l| l.name.as_str());
                match self.zone.enumeration_packet(live) {
                    Ok(p) => packets.push(p),
                    Err(e) => tracing::warn!("mdns: {e}"),
                }
            }
        }
        for mut p in packets {
            if unicast {
                // RFC 6762 18.1: a unicast answer carries the query's id.
                if p.len() >= 2 {
                    p[..2].copy_from_slice(&msg.id.to_be_bytes());
                }
                self.net.unicast(&p, from).await;
            } else if let Err(e) = self.net.multicast(&p).await {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Reads one socket until the registry closes.
async fn receive(inner: Arc<Inner>, via: Via) {
    let mut stop = inner.stop.subscribe();
    let mut buf = vec![0u8; MAX_PACKET];
    let socket = match via {
        Via::Listener => &inner.net.listener,
        Via::Group => match &inner.net.group_listener {
            Some(s) => s,
            None => return,
        },
        Via::Link(i) => match inner.net.links.get(i) {
            Some(l) => &l.socket,
            None => return,
        },
    };
    loop {
        let received = tokio::select! {
            _ = stop.changed() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, from)) => inner.handle(&buf[..n], from, via).await,
            Err(e) => {
                tracing::warn!("mdns: receive failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Withdraws registrations whose TTL passed without a new register call.
async fn reap(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(REAP_EVERY) => {}
        }
        let now = Instant::now();
        let mut local = inner.local.lock().await;
        let expired: Vec<String> = local
            .nodes
            .iter()
            .filter(|(_, n)| !n.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        if expired.is_empty() {
            continue;
        }
        let mut goodbyes = Vec::new();
        for key in expired {
            tracing::debug!(instance = key, "mdns: registration expired");
            if let Some(n) = local.nodes.remove(&key) {
                goodbyes.push(n.published.goodbye);
            }
        }
        goodbyes.extend(local.prune_lists());
        for g in &goodbyes {
            if let Err(e) = inner.net.multicast(g).await {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Sends unsolicited answers for new or changed entries, while they stay as announced.
async fn announce_repeatedly(inner: Arc<Inner>, items: Vec<Announce>) {
    let mut stop = inner.stop.subscribe();
    for delay in ANNOUNCE_AFTER {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let local = inner.local.lock().await;
        let mut any = false;
        for item in &items {
            if let Some(p) = local.current(item) {
                any = true;
                if let Err(e) = inner.net.multicast(p).await {
                    tracing::warn!("{e}");
                }
            }
        }
        if !any {
            return;
        }
    }
}

/// `host:port` as a socket address; host names are resolved, IPv4 preferred.
async fn resolve(address: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address {address:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("address {address:?} has no valid port"))?;
    if host.is_empty() {
        return Err(format!("address {address:?} has no host"));
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Whether `name` is `owner` or a name under it, in any case.
fn is_at_or_under(name: &str, owner: &str) -> bool {
    let (name, owner) = (name.as_bytes(), owner.as_bytes());
    if name.len() == owner.len() {
        return name.eq_ignore_ascii_case(owner);
    }
    name.len() > owner.len()
        && name[name.len() - owner.len()..].eq_ignore_ascii_case(owner)
        && name[name.len() - owner.len() - 1] == b'.'
}

/// Warns when a lookup left answers out for its bound.
fn warn_dropped(answers: &Answers, what: impl Fn() -> String, bound: &str) {
    if answers.dropped > 0 {
        tracing::warn!(
            "mdns: {}: {} records left out, past the bound ({bound})",
            what(),
            answers.dropped
        );
    }
}

/// Services and nodes a watch left out for its bounds, told at most every
/// [`BOUND_WARNING_EVERY`].
#[derive(Default)]
struct LeftOut {
    services: u64,
    nodes: u64,
    warned: Option<Instant>,
}

impl LeftOut {
    fn warn(&mut self, opts: &MdnsOptions) {
        let now = Instant::now();
        if self
            .warned
            .is_some_and(|at| now.duration_since(at) < BOUND_WARNING_EVERY)
        {
            return;
        }
        self.warned = Some(now);
        tracing::warn!(
            "mdns: a watch left out {} services past {} ({MAX_SERVICES_ENV}) and {} nodes past \
             {} per service ({MAX_NODES_ENV}); those it tracks keep working",
            self.services,
            opts.max_services,
            self.nodes,
            opts.max_nodes_per_service
        );
        self.services = 0;
        self.nodes = 0;
    }
}

/// The state behind one watch: the nodes it has reported and when each was last heard of.
struct WatchState {
    inner: Arc<Inner>,
    filter: Option<String>,
    /// By lower-case instance name: the node's service (with that node only), last heard.
    nodes: HashMap<String, (Service, Instant)>,
    /// How many of `nodes` each service has, by service name.
    per_service: HashMap<String, usize>,
    /// Service names to poll, for a watch of every service.
    services: BTreeSet<String>,
    left_out: LeftOut,
}

impl WatchState {
    /// Learns what exists now, without reporting it: a watch reports changes.
    async fn baseline(&mut self, rx: &mut broadcast::Receiver<Arc<[Record]>>) -> Result<()> {
        let mut names = self.poll_names();
        // A watch of everything learns the service names first, then asks for their nodes.
        for _ in 0..2 {
            if names.is_empty() {
                break;
            }
            self.inner.send_query(&names).await?;
            let until = Instant::now() + self.inner.opts.query_timeout;
            names.clear();
            loop {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Ok(records)) => {
                        let (_, new) = self.apply(&records);
                        names.extend(new.iter().map(|n| self.inner.zone.service(n)));
                    }
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                    Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
                }
            }
        }
        Ok(())
    }

    /// Reports changes until the watcher is dropped or the registry closes.
    async fn run(
        mut self,
        mut rx: broadcast::Receiver<Arc<[Record]>>,
        tx: mpsc::Sender<Result<Event>>,
    ) {
        let mut stop = self.inner.stop.subscribe();
        if *stop.borrow() {
            return;
        }
        let interval = self
            .inner
            .opts
            .watch_interval
            .max(Duration::from_millis(10));
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // After a poll: when to give up on silent nodes, and when the poll went out.
        let mut sweep: Option<(Instant, Instant)> = None;
        loop {
            let sweep_at = sweep.map_or_else(|| Instant::now() + interval, |s| s.0);
            let events = tokio::select! {
                _ = stop.changed() => return,
                _ = tx.closed() => return,
                r = rx.recv() => match r {
                    Ok(records) => {
                        let (events, new) = self.apply(&records);
                        if !new.is_empty() {
                            let names: Vec<String> =
                                new.iter().map(|n| self.inner.zone.service(n)).collect();
                            if let Err(e) = self.inner.send_query(&names).await {
                                tracing::warn!("{e}");
                            }
                        }
                        events
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("mdns: watch missed {n} answers; the next poll catches up");
                        Vec::new()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                // A poll still being gathered is finished before the next one goes out.
                _ = tick.tick(), if sweep.is_none() => {
                    let started = Instant::now();
                    match self.inner.send_query(&self.poll_names()).await {
                        Ok(()) => sweep = Some((started + self.inner.opts.query_timeout, started)),
                        Err(e) => {
                            tracing::warn!("{e}");
                            let _ = tx.send(Err(e)).await;
                        }
                    }
                    Vec::new()
                }
                _ = tokio::time::sleep_until(sweep_at), if sweep.is_some() => {
                    match sweep.take() {
                        Some((_, since)) => self.sweep(since),
                        None => Vec::new(),
                    }
                }
            };
            for e in events {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        }
    }

    fn poll_names(&self) -> Vec<String> {
        let zone = &self.inner.zone;
        match &self.filter {
            Some(s) => vec![zone.service(s)],
            None => std::iter::once(zone.list())
                .chain(self.services.iter().map(|s| zone.service(s)))
                .collect(),
        }
    }

    /// Applies the records of one packet: the events they cause and the service names first
    /// seen in them. Services and nodes past the bounds are left out.
    fn apply(&mut self, records: &[Record]) -> (Vec<Event>, Vec<String>) {
        let inner = self.inner.clone();
        let (zone, opts) = (&inner.zone, &inner.opts);
        let mut answers = Answers::default();
        answers.add(records);
        let now = Instant::now();
        let mut events = Vec::new();
        let mut new = Vec::new();
        let mut left_out = false;
        if self.filter.is_none() {
            for (name, alive) in zone.listed(&answers) {
                if !alive {
                    self.services.remove(&name);
                } else if !self.services.contains(&name) {
                    if self.services.len() >= opts.max_services {
                        self.left_out.services += 1;
                        left_out = true;
                    } else {
                        self.services.insert(name.clone());
                        new.push(name);
                    }
                }
            }
        }
        for inst in answers.instances() {
            if inst.gone {
                if let Some((service, _)) = self.nodes.remove(inst.key) {
                    self.forget_node_of(&service.name);
                    events.push(Event {
                        kind: EventKind::Delete,
                        service,
                    });
                }
                continue;
            }
            let Some(service) = zone.node(&inst, self.filter.as_deref()) else {
                continue;
            };
            match self.nodes.get_mut(inst.key) {
                Some((old, seen)) => {
                    *seen = now;
                    if *old != service {
                        *old = service.clone();
                        events.push(Event {
                            kind: EventKind::Update,
                            service,
                        });
                    }
                }
                None => {
                    if self.filter.is_none() && !self.services.contains(&service.name) {
                        if self.services.len() >= opts.max_services {
                            self.left_out.services += 1;
                            left_out = true;
                            continue;
                        }
                        self.services.insert(service.name.clone());
                        new.push(service.name.clone());
                    }
                    let count = self.per_service.entry(service.name.clone()).or_default();
                    if *count >= opts.max_nodes_per_service {
                        self.left_out.nodes += 1;
                        left_out = true;
                        continue;
                    }
                    *count += 1;
                    self.nodes
                        .insert(inst.key.to_string(), (service.clone(), now));
                    events.push(Event {
                        kind: EventKind::Create,
                        service,
                    });
                }
            }
        }
        if left_out {
            self.left_out.warn(opts);
        }
        (events, new)
    }

    /// Counts one node of `service` less.
    fn forget_node_of(&mut self, service: &str) {
        if let Some(count) = self.per_service.get_mut(service) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_service.remove(service);
            }
        }
    }

    /// Deletes the nodes not heard of since `since` (they did not answer the last poll).
    fn sweep(&mut self, since: Instant) -> Vec<Event> {
        let silent: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, (_, seen))| *seen < since)
            .map(|(k, _)| k.clone())
            .collect();
        let mut events = Vec::with_capacity(silent.len());
        for key in silent {
            if let Some((service, _)) = self.nodes.remove(&key) {
                self.forget_node_of(&service.name);
                events.push(Event {
                    kind: EventKind::Delete,
                    service,
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_at_or_under_an_owner() {
        assert!(is_at_or_under("greeter.micro", "greeter.micro"));
        assert!(is_at_or_under("n-1.Greeter.MICRO", "greeter.micro"));
        assert!(!is_at_or_under("n-1.xgreeter.micro", "greeter.micro"));
        assert!(!is_at_or_under("micro", "greeter.micro"));
        assert!(!is_at_or_under(".micro", "greeter.micro"));
        assert!(is_at_or_under("host.micro", "micro"));
        assert!(!is_at_or_under("host.local", "micro"));
    }
}
