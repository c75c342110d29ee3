//! The registry conformance suite.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_core::registry::{EventKind, RegisterOptions, Value, Watcher};
use micro_core::{Endpoint, Node, Registry, Result, Service};

/// How long any one condition may take to become true.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A unique service name for one check.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A service with one node per id, rich endpoints and metadata.
pub fn sample(name: &str, version: &str, ids: &[&str]) -> Service {
    let mut metadata = BTreeMap::new();
    metadata.insert("team".to_string(), "payments".to_string());
    let endpoint = Endpoint {
        name: "Greeter.Hello".into(),
        request: Some(Value {
            name: "HelloRequest".into(),
            kind: "HelloRequest".into(),
            values: vec![
                Value {
                    name: "name".into(),
                    kind: "string".into(),
                    values: vec![],
                },
                Value {
                    name: "tags".into(),
                    kind: "[]string".into(),
                    values: vec![],
                },
            ],
        }),
        response: Some(Value {
            name: "HelloReply".into(),
            kind: "HelloReply".into(),
            values: vec![Value {
                name: "message".into(),
                kind: "string".into(),
                values: vec![],
            }],
        }),
        metadata: [("stream".to_string(), "false".to_string())]
            .into_iter()
            .collect(),
    };
    Service {
        name: name.into(),
        version: version.into(),
        metadata,
        endpoints: vec![endpoint],
        nodes: ids
            .iter()
            .enumerate()
            .map(|(i, id)| Node {
                id: format!("{name}-{id}"),
                address: format!("127.0.0.1:{}", 40000 + i),
                metadata: [
                    ("protocol", "mucp"),
                    ("transport", "http"),
                    ("server", "mucp"),
                    ("zone", "z1"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            })
            .collect(),
    }
}

fn ttl(secs: u64) -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(secs),
    }
}

/// Polls `check` until it returns `Some`, failing after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node_ids(services: &[Service]) -> Vec<String> {
    let mut ids: Vec<String> = services
        .iter()
        .flat_map(|s| s.nodes.iter().map(|n| n.id.clone()))
        .collect();
    ids.sort();
    ids
}

async fn ids_of(r: &dyn Registry, name: &str) -> Vec<String> {
    r.get_service(name)
        .await
        .map(|s| node_ids(&s))
        .unwrap_or_default()
}

/// Register, get, list and deregister one service.
pub async fn register_get_list_deregister(r: Arc<dyn Registry>) -> Result<()> {
    let name = unique("conf-basic");
    let svc = sample(&name, "1.0.0", &["a"]);
    r.register(&svc, ttl(60)).await?;
    let found = eventually("the registered service is found", || async {
        r.get_service(&name).await.ok().filter(|s| !s.is_empty())
    })
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, name);
    assert_eq!(found[0].version, "1.0.0");
    assert_eq!(node_ids(&found), [format!("{name}-a")]);
    eventually("the service is listed", || async {
        r.list_services()
            .await
            .ok()
            .filter(|l| l.iter().any(|s| s.name == name))
    })
    .await;
    r.deregister(&svc).await?;
    eventually("the deregistered service is gone", || async {
        match r.get_service(&name).await {
            Err(e) if e.code == 404 => Some(()),
            Ok(s) if s.iter().all(|s| s.nodes.is_empty()) => Some(()),
            _ => None,
        }
    })
    .await;
    Ok(())
}

/// Several nodes and versions of one service are kept apart by version and merged by node.
pub async fn nodes_and_versions(r: Arc<dyn Registry>) -> Result<()> {
    let name = unique("conf-versions");
    let v1 = sample(&name, "v1", &["a", "b"]);
    let v2 = sample(&name, "v2", &["c"]);
    r.register(&v1, ttl(60)).await?;
    r.register(&v2, ttl(60)).await?;
    let found = eventually("both versions with all nodes", || async {
        let s = r.get_service(&name).await.ok()?;
        (node_ids(&s).len() == 3 && s.len() == 2).then_some(s)
    })
    .await;
    for s in &found {
        let want = if s.version == "v1" { 2 } else { 1 };
        assert_eq!(s.nodes.len(), want, "nodes of {}", s.version);
    }
    r.deregister(&v1).await?;
    r.deregister(&v2).await?;
    Ok(())
}

/// Metadata and endpoints round-trip exactly.
pub async fn metadata_and_endpoints_round_trip(r: Arc<dyn Registry>) -> Result<()> {
    let name = unique("conf-roundtrip");
    let svc = sample(&name, "latest", &["a"]);
    r.register(&svc, ttl(60)).await?;
    let found = eventually("the service is found", || async {
        r.get_service(&name).await.ok().filter(|s| !s.is_empty())
    })
    .await;
    let got = &found[0];
    assert_eq!(got.endpoints, svc.endpoints, "endpoints round-trip");
    assert_eq!(
        got.nodes[0].metadata, svc.nodes[0].metadata,
        "node metadata"
    );
    assert_eq!(got.nodes[0].address, svc.nodes[0].address, "node address");
    r.deregister(&svc).await?;
    Ok(())
}

/// A node that stops renewing its registration disappears after its TTL.
pub async fn expires_after_ttl(r: Arc<dyn Registry>) -> Result<()> {
    let name = unique("conf-ttl");
    let svc = sample(&name, "latest", &["a"]);
    r.register(&svc, ttl(2)).await?;
    eventually("the service is found", || async {
        (!ids_of(&*r, &name).await.is_empty()).then_some(())
    })
    .await;
    eventually("the node expires after its 2 s TTL", || async {
        ids_of(&*r, &name).await.is_empty().then_some(())
    })
    .await;
    Ok(())
}

async fn next_kind(w: &mut Watcher, name: &str) -> EventKind {
    loop {
        let event = tokio::time::timeout(PATIENCE, w.next())
            .await
            .unwrap_or_else(|_| panic!("no watch event for {name} within {PATIENCE:?}"))
            .expect("the watch ended early");
        match event {
            Ok(e) if e.service.name == name => return e.kind,
            Ok(_) => continue,
            Err(e) => panic!("the watch failed: {e}"),
        }
    }
}

/// A watch reports create, update and delete.
pub async fn watch_reports_changes(r: Arc<dyn Registry>) -> Result<()> {
    let name = unique("conf-watch");
    let mut w = r.watch(Some(&name)).await?;
    let mut svc = sample(&name, "latest", &["a"]);
    r.register(&svc, ttl(60)).await?;
    assert_eq!(next_kind(&mut w, &name).await, EventKind::Create);
    svc.nodes[0].metadata.insert("zone".into(), "z2".into());
    r.register(&svc, ttl(60)).await?;
    // Some backends report a changed entry as another create; both say "it is there now".
    let k = next_kind(&mut w, &name).await;
    assert!(matches!(k, EventKind::Update | EventKind::Create), "{k}");
    r.deregister(&svc).await?;
    loop {
        if next_kind(&mut w, &name).await == EventKind::Delete {
            break;
        }
    }
    Ok(())
}

/// Registering the same node again changes nothing.
pub async fn reregistering_is_idempotent(r: Arc<dyn Registry>) -> Result<()> {
    let name = unique("conf-idem");
    let svc = sample(&name, "latest", &["a"]);
    for _ in 0..3 {
        r.register(&svc, ttl(60)).await?;
    }
    let found = eventually("the service is found", || async {
        r.get_service(&name).await.ok().filter(|s| !s.is_empty())
    })
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].nodes.len(),
        1,
        "one node, however often registered"
    );
    r.deregister(&svc).await?;
    Ok(())
}

/// Many nodes registered at once are all found.
pub async fn concurrent_registrations(r: Arc<dyn Registry>) -> Result<()> {
    let name = unique("conf-concurrent");
    let ids: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let tasks = ids.iter().map(|id| {
        let r = r.clone();
        let svc = sample(&name, "latest", &[id.as_str()]);
        async move { r.register(&svc, ttl(60)).await }
    });
    for result in futures_util::future::join_all(tasks).await {
        result?;
    }
    eventually("all 8 nodes are found", || async {
        (ids_of(&*r, &name).await.len() == 8).then_some(())
    })
    .await;
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    r.deregister(&sample(&name, "latest", &all)).await?;
    Ok(())
}

/// Deregistering a node that was never registered does no harm.
pub async fn deregistering_unknown_is_harmless(r: Arc<dyn Registry>) -> Result<()> {
    let name = unique("conf-unknown");
    let kept = sample(&name, "latest", &["kept"]);
    r.register(&kept, ttl(60)).await?;
    r.deregister(&sample(&name, "latest", &["never"])).await?;
    r.deregister(&sample(&unique("conf-nobody"), "latest", &["x"]))
        .await?;
    eventually("the registered node is still there", || async {
        (ids_of(&*r, &name).await == [format!("{name}-kept")]).then_some(())
    })
    .await;
    r.deregister(&kept).await?;
    Ok(())
}

/// An unknown service is a 404.
pub async fn unknown_service_is_not_found(r: Arc<dyn Registry>) -> Result<()> {
    let err = r
        .get_service(&unique("conf-missing"))
        .await
        .expect_err("an unknown service is an error");
    assert_eq!(err.code, 404, "{err}");
    Ok(())
}

/// Declares one `#[tokio::test]` per check for a registry made by `$make` (an async block
/// returning `micro_core::Result<Arc<dyn Registry>>`).
#[macro_export]
macro_rules! registry_suite {
    ($make:expr) => {
        $crate::registry_suite!(@tests $make;
            register_get_list_deregister, nodes_and_versions, metadata_and_endpoints_round_trip,
            expires_after_ttl, watch_reports_changes, reregistering_is_idempotent,
            concurrent_registrations, deregistering_unknown_is_harmless, unknown_service_is_not_found);
    };
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let registry = $make.await.expect("create the registry");
                $crate::registry::$check(registry).await.expect(stringify!($check));
            }
        )*
    };
}

/// A way for the suite to take a registry's backend away and bring it back.
#[async_trait::async_trait]
pub trait Outage: Send + Sync {
    /// Makes the backend unreachable (stop the server, close the port).
    async fn stop(&self);
    /// Brings the backend back at the same address.
    async fn start(&self);
    /// Text every error during the outage must contain (the backend's address, say).
    fn names(&self) -> String;
}

/// While the backend is down, calls fail quickly with an error naming it; once it is back, the
/// same registry value works again without a restart.
pub async fn recovers_after_outage(r: Arc<dyn Registry>, outage: &dyn Outage) -> Result<()> {
    let name = unique("conf-outage");
    let svc = sample(&name, "latest", &["a"]);
    r.register(&svc, ttl(60)).await?;
    eventually("the service is found", || async {
        (!ids_of(&*r, &name).await.is_empty()).then_some(())
    })
    .await;

    outage.stop().await;
    let err = tokio::time::timeout(PATIENCE, r.get_service(&name))
        .await
        .expect("a lookup while the backend is down must fail, not hang")
        .expect_err("a lookup while the backend is down must fail");
    assert_ne!(err.code, 404, "an outage is not 'not found': {err}");
    assert!(
        err.to_string().contains(&outage.names()),
        "the error should name {}: {err}",
        outage.names()
    );
    let err = tokio::time::timeout(PATIENCE, r.register(&svc, ttl(60)))
        .await
        .expect("registering while the backend is down must fail, not hang")
        .expect_err("registering while the backend is down must fail");
    assert!(err.to_string().contains(&outage.names()), "{err}");

    outage.start().await;
    eventually("registering works again after the outage", || async {
        r.register(&svc, ttl(60)).await.ok()
    })
    .await;
    eventually("the service is found again", || async {
        (ids_of(&*r, &name).await == [format!("{name}-a")]).then_some(())
    })
    .await;
    r.deregister(&svc).await?;
    Ok(())
}
