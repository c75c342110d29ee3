//! The Kubernetes registry through the real `kube` client.
//!
//! By default every test starts its own [`KubeDouble`], an HTTP double of the pods API (no API
//! server can be installed here), and creates the pods it needs in namespace `micro-test`.
//!
//! When `KUBECONFIG` is set, the tests that can run against a real cluster do so instead and
//! create nothing: every registry acts as the pod named by `MICRO_KUBERNETES_POD_NAME` (else
//! `HOSTNAME`) in `MICRO_KUBERNETES_NAMESPACE` (else the kubeconfig context's namespace), which
//! must exist and be Running, and the account needs get/list/watch/patch on pods there. Run them
//! from a pod, or name a scratch pod: they add and remove `micro.mu/*` labels and annotations
//! on it. The tests that need to stop the server or change pod phases (outage, Pending pods,
//! deleted pods) run against the double only.

mod kube_double;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::Api;
use kube_double::KubeDouble;
use micro_conformance::registry::{eventually, sample, unique, Outage, PATIENCE};
use micro_core::registry::{EventKind, RegisterOptions, Watcher};
use micro_core::{Registry, Service};
use micro_registry_kubernetes::format::{annotation_key, selector_label, EXPIRES_KEY};
use micro_registry_kubernetes::{KubernetesOptions, KubernetesRegistry};

/// The namespace of the double's pods.
const NS: &str = "micro-test";

fn real_cluster() -> bool {
    std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
}

fn ttl(secs: u64) -> RegisterOptions {
    RegisterOptions {
        ttl: Duration::from_secs(secs),
    }
}

/// A registry acting as pod `pod` of `double`.
fn on_double(double: &KubeDouble, pod: &str) -> KubernetesRegistry {
    let opts = KubernetesOptions::default()
        .with_namespace(NS)
        .with_pod_name(pod)
        .with_timeout(Duration::from_secs(3))
        .with_watch_timeout(Duration::from_secs(5));
    KubernetesRegistry::from_client(double.client(), &double.url(), opts)
}

/// Where a test runs: a fresh double, or the real cluster of `KUBECONFIG`.
struct Backend {
    double: Option<KubeDouble>,
    pods: Api<Pod>,
}

impl Backend {
    /// A fresh double with the Running pods `pods`, or the real cluster.
    async fn new(pods: &[&str]) -> Backend {
        if real_cluster() {
            let opts = KubernetesOptions::from_env().expect("options from the environment");
            let client = kube::Client::try_default()
                .await
                .expect("a client from KUBECONFIG");
            let ns = opts
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            return Backend {
                double: None,
                pods: Api::namespaced(client, &ns),
            };
        }
        let double = KubeDouble::start().await;
        for pod in pods {
            double.add_pod(NS, pod, "Running");
        }
        Backend {
            pods: Api::namespaced(double.client(), NS),
            double: Some(double),
        }
    }

    /// A registry acting as `pod` (on a real cluster: as the pod of the environment).
    fn registry(&self, pod: &str) -> KubernetesRegistry {
        match &self.double {
            Some(double) => on_double(double, pod),
            None => KubernetesRegistry::new(
                KubernetesOptions::from_env().expect("options from the environment"),
            ),
        }
    }

    /// The name of the pod a registry made by [`Backend::registry`] patches.
    fn pod_name(&self, pod: &str) -> String {
        match &self.double {
            Some(_) => pod.to_string(),
            None => KubernetesOptions::from_env()
                .ok()
                .and_then(|o| o.pod_name)
                .expect("MICRO_KUBERNETES_POD_NAME or HOSTNAME names the test pod"),
        }
    }

    /// The pod as the API returns it.
    async fn read(&self, pod: &str) -> Pod {
        self.pods
            .get(&self.pod_name(pod))
            .await
            .expect("read the pod")
    }

    /// Merge-patches the pod as someone else would.
    async fn patch(&self, pod: &str, patch: serde_json::Value) {
        self.pods
            .patch(
                &self.pod_name(pod),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("patch the pod");
    }
}

async fn make() -> micro_core::Result<Arc<dyn Registry>> {
    let backend = Backend::new(&["conformance-pod"]).await;
    Ok(Arc::new(backend.registry("conformance-pod")))
}

micro_conformance::registry_suite!(make());

fn skip_on_real_cluster(test: &str) -> bool {
    if real_cluster() {
        eprintln!("{test}: runs against the double only (KUBECONFIG is set)");
    }
    real_cluster()
}

struct DoubleOutage(KubeDouble);

#[async_trait::async_trait]
impl Outage for DoubleOutage {
    async fn stop(&self) {
        self.0.stop().await;
    }
    async fn start(&self) {
        self.0.restart().await;
    }
    fn names(&self) -> String {
        format!("kubernetes at {}", self.0.url())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_outage() {
    if skip_on_real_cluster("recovers_after_outage") {
        return;
    }
    let double = KubeDouble::start().await;
    double.add_pod(NS, "outage-pod", "Running");
    let registry = Arc::new(on_double(&double, "outage-pod"));
    micro_conformance::registry::recovers_after_outage(registry, &DoubleOutage(double))
        .await
        .expect("recovers after the outage");
}

fn ids(services: &[Service]) -> Vec<String> {
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
        .map(|s| ids(&s))
        .unwrap_or_default()
}

/// The next event of service `name`, failing on errors and silence.
async fn next_event(w: &mut Watcher, name: &str) -> (EventKind, Service) {
    loop {
        let item = tokio::time::timeout(PATIENCE, w.next())
            .await
            .unwrap_or_else(|_| panic!("no event for {name} within {PATIENCE:?}"))
            .expect("the watch ended");
        match item {
            Ok(e) if e.service.name == name => return (e.kind, e.service),
            Ok(_) => {}
            Err(e) => panic!("the watch failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_running_pods_serve() {
    if skip_on_real_cluster("only_running_pods_serve") {
        return;
    }
    let double = KubeDouble::start().await;
    double.add_pod(NS, "running", "Running");
    double.add_pod(NS, "pending", "Pending");
    let a = on_double(&double, "running");
    let b = on_double(&double, "pending");
    let name = unique("k8s-phase");
    let mut w = a.watch(Some(&name)).await.expect("watch");
    a.register(&sample(&name, "latest", &["a"]), ttl(60))
        .await
        .expect("register a");
    b.register(&sample(&name, "latest", &["b"]), ttl(60))
        .await
        .expect("register b");
    assert_eq!(next_event(&mut w, &name).await.0, EventKind::Create);
    assert_eq!(
        ids_of(&a, &name).await,
        [format!("{name}-a")],
        "not the Pending pod"
    );

    double.set_phase(NS, "pending", "Running");
    let (kind, svc) = next_event(&mut w, &name).await;
    assert_eq!(
        (kind, svc.nodes[0].id.clone()),
        (EventKind::Create, format!("{name}-b"))
    );
    assert_eq!(
        ids_of(&a, &name).await,
        [format!("{name}-a"), format!("{name}-b")]
    );

    double.set_phase(NS, "running", "Succeeded");
    let (kind, svc) = next_event(&mut w, &name).await;
    assert_eq!(
        (kind, svc.nodes[0].id.clone()),
        (EventKind::Delete, format!("{name}-a"))
    );
    assert_eq!(ids_of(&b, &name).await, [format!("{name}-b")]);
    let listed = b.list_services().await.expect("list");
    assert_eq!(
        ids(&listed
            .into_iter()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>()),
        [format!("{name}-b")]
    );

    double.delete_pod(NS, "pending");
    let (kind, svc) = next_event(&mut w, &name).await;
    assert_eq!(
        (kind, svc.nodes[0].id.clone()),
        (EventKind::Delete, format!("{name}-b"))
    );
    let err = a
        .get_service(&name)
        .await
        .expect_err("no Running pod serves it");
    assert_eq!(err.code, 404, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_micro_labels_and_annotation() {
    let backend = Backend::new(&["layout"]).await;
    let r = backend.registry("layout");
    let name = unique("k8s-layout");
    let svc = sample(&name, "1.0.0", &["a"]);
    r.register(&svc, ttl(60)).await.expect("register");

    let pod = backend.read("layout").await;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("micro.mu/type").map(String::as_str),
        Some("service")
    );
    assert_eq!(
        labels
            .get(&format!("micro.mu/selector-{name}"))
            .map(String::as_str),
        Some("service")
    );
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let json = annotations
        .get(&format!("micro.mu/service-{name}"))
        .expect("the service annotation");
    // Go Micro's Service JSON, exactly its keys, plus the expiry in the node metadata.
    let value: serde_json::Value = serde_json::from_str(json).expect("JSON");
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["endpoints", "metadata", "name", "nodes", "version"]);
    let mut stored: Service = serde_json::from_value(value).expect("a Service");
    let expires: f64 = stored.nodes[0]
        .metadata
        .remove(EXPIRES_KEY)
        .expect("the expiry")
        .parse()
        .expect("unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        expires > now + 55.0 && expires < now + 65.0,
        "{expires} vs {now}"
    );
    assert_eq!(stored, svc, "the annotation is the registered service");

    // A second version from the same pod gets its own annotation.
    let v2 = sample(&name, "2.0.0", &["b"]);
    r.register(&v2, ttl(60)).await.expect("register v2");
    let annotations = backend
        .read("layout")
        .await
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(annotations.contains_key(&format!("micro.mu/service-{name}")));
    assert!(annotations.contains_key(&format!("micro.mu/service-{name}..2.0.0")));

    r.deregister(&svc).await.expect("deregister v1");
    r.deregister(&v2).await.expect("deregister v2");
    let pod = backend.read("layout").await;
    let labels = pod.metadata.labels.unwrap_or_default();
    let annotations = pod.metadata.annotations.unwrap_or_default();
    assert_eq!(
        labels.get("micro.mu/type").map(String::as_str),
        Some("service")
    );
    assert!(
        !labels.contains_key(&format!("micro.mu/selector-{name}")),
        "{labels:?}"
    );
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with(&format!("micro.mu/service-{name}"))),
        "{annotations:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sanitises_names_in_keys() {
    let backend = Backend::new(&["left", "right"]).await;
    let id = unique("x");
    let odd = format!("go.micro/srv greeter:{id}");
    let plain = format!("go.micro_srv_greeter_{id}");
    assert_eq!(selector_label(&odd), format!("micro.mu/selector-{plain}"));
    assert_eq!(annotation_key(&odd), format!("micro.mu/service-{plain}"));

    let left = backend.registry("left");
    left.register(&sample(&odd, "latest", &["a"]), ttl(60))
        .await
        .expect("register");
    let labels = backend
        .read("left")
        .await
        .metadata
        .labels
        .unwrap_or_default();
    assert!(
        labels.contains_key(&format!("micro.mu/selector-{plain}")),
        "{labels:?}"
    );
    assert_eq!(ids_of(&left, &odd).await, [format!("{odd}-a")]);

    if backend.double.is_some() {
        // Another pod serves the name that sanitises to the same keys: each finds its own.
        let right = backend.registry("right");
        right
            .register(&sample(&plain, "latest", &["b"]), ttl(60))
            .await
            .expect("register");
        assert_eq!(ids_of(&left, &odd).await, [format!("{odd}-a")]);
        assert_eq!(ids_of(&left, &plain).await, [format!("{plain}-b")]);
    }
    // From one pod, the second name is refused rather than overwriting the first.
    let err = left
        .register(&sample(&plain, "latest", &["c"]), ttl(60))
        .await
        .expect_err("same keys from one pod");
    assert_eq!(err.code, 409, "{err}");
    assert_eq!(ids_of(&left, &odd).await, [format!("{odd}-a")]);
    left.deregister(&sample(&odd, "latest", &["a"]))
        .await
        .expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_annotations_are_skipped() {
    let backend = Backend::new(&["valid", "corrupt"]).await;
    let r = backend.registry("valid");
    let name = unique("k8s-corrupt");
    let mut w = r.watch(None).await.expect("watch");
    let svc = sample(&name, "latest", &["a"]);
    r.register(&svc, ttl(60)).await.expect("register");
    let broken = serde_json::json!({"metadata": {
        "labels": {"micro.mu/type": "service", selector_label(&name): "service"},
        "annotations": {
            format!("{}..broken", annotation_key(&name)): "{not json",
            "micro.mu/service-zz-garbage": "[1, 2",
        },
    }});
    if backend.double.is_some() {
        // Someone else's pod with a corrupt entry under the very same key.
        let other = serde_json::json!({"metadata": {
            "labels": {"micro.mu/type": "service", selector_label(&name): "service"},
            "annotations": {annotation_key(&name): "{\"name\": 42"},
        }});
        backend.patch("corrupt", other).await;
    }
    // On the registry's own pod, under a key it reads but did not write.
    backend.patch("valid", broken).await;
    assert_eq!(ids_of(&r, &name).await, [format!("{name}-a")]);
    let listed = r
        .list_services()
        .await
        .expect("list despite corrupt entries");
    assert!(listed.iter().any(|s| s.name == name));
    assert_eq!(next_event(&mut w, &name).await.0, EventKind::Create);
    r.deregister(&svc).await.expect("deregister");
    assert_eq!(next_event(&mut w, &name).await.0, EventKind::Delete);
    backend
        .patch(
            "valid",
            serde_json::json!({"metadata": {"annotations": {
                format!("{}..broken", annotation_key(&name)): null,
                "micro.mu/service-zz-garbage": null,
            }}}),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_keeps_a_node_and_expiry_is_a_delete_event() {
    let backend = Backend::new(&["ttl"]).await;
    let r = backend.registry("ttl");
    let name = unique("k8s-renew");
    let svc = sample(&name, "latest", &["a"]);
    let mut w = r.watch(Some(&name)).await.expect("watch");
    let started = tokio::time::Instant::now();
    r.register(&svc, ttl(2)).await.expect("register");
    assert_eq!(next_event(&mut w, &name).await.0, EventKind::Create);
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        r.register(&svc, ttl(2)).await.expect("renew");
        assert_eq!(
            ids_of(&r, &name).await,
            [format!("{name}-a")],
            "renewed in time"
        );
    }
    // Renewals do not change the node: no events for them. The next one is its expiry.
    let (kind, _) = next_event(&mut w, &name).await;
    assert_eq!(kind, EventKind::Delete);
    assert!(ids_of(&r, &name).await.is_empty());
    // The Go Micro annotation still holds it until the next write; readers ignore it.
    r.register(&svc, ttl(60)).await.expect("register again");
    assert_eq!(next_event(&mut w, &name).await.0, EventKind::Create);
    r.deregister(&svc).await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_errors_during_an_outage_and_goes_on() {
    if skip_on_real_cluster("watch_reports_errors_during_an_outage_and_goes_on") {
        return;
    }
    let double = KubeDouble::start().await;
    double.add_pod(NS, "w", "Running");
    let r = on_double(&double, "w");
    let name = unique("k8s-watch-outage");
    let mut w = r.watch(None).await.expect("watch");
    double.stop().await;
    let err = loop {
        let item = tokio::time::timeout(PATIENCE, w.next())
            .await
            .expect("the watch must report the outage, not hang")
            .expect("the watch goes on");
        if let Err(e) = item {
            break e;
        }
    };
    eprintln!("the watch reported: {err}");
    assert!(
        err.to_string()
            .contains(&format!("kubernetes at {}", double.url())),
        "{err}"
    );
    double.restart().await;
    eventually("registering works again", || async {
        r.register(&sample(&name, "latest", &["a"]), ttl(60))
            .await
            .ok()
    })
    .await;
    loop {
        let item = tokio::time::timeout(PATIENCE, w.next())
            .await
            .expect("an event after the outage")
            .expect("the watch goes on");
        if let Ok(e) = item {
            if e.service.name == name {
                assert_eq!(e.kind, EventKind::Create);
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_server_fails_fast_and_is_named() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let config = kube::Config::new(url.parse().expect("a URL"));
    let r =
        KubernetesRegistry::from_config(config, KubernetesOptions::default().with_pod_name("p"));
    let started = std::time::Instant::now();
    let err = r.get_service("greeter").await.expect_err("nothing listens");
    eprintln!("lookup: {err}");
    assert!(
        err.detail.contains(&format!("kubernetes at {url}")),
        "{err}"
    );
    assert_eq!(err.code, 503, "{err}");
    let err = r
        .register(&sample("greeter", "latest", &["a"]), ttl(60))
        .await
        .expect_err("nothing listens");
    assert!(
        err.detail.contains(&format!("kubernetes at {url}")),
        "{err}"
    );
    assert!(r.watch(None).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));

    let read_only = KubernetesRegistry::from_config(
        kube::Config::new(url.parse().expect("a URL")),
        KubernetesOptions::default(),
    );
    let err = read_only
        .register(&sample("greeter", "latest", &["a"]), ttl(60))
        .await
        .expect_err("no pod name");
    assert!(err.detail.contains("MICRO_KUBERNETES_POD_NAME"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pod_is_a_clear_error() {
    if skip_on_real_cluster("a_missing_pod_is_a_clear_error") {
        return;
    }
    let double = KubeDouble::start().await;
    let r = on_double(&double, "no-such-pod");
    let err = r
        .register(&sample("greeter", "latest", &["a"]), ttl(60))
        .await
        .expect_err("the pod does not exist");
    assert_ne!(err.code, 404, "{err}");
    assert!(err.detail.contains("pod no-such-pod not found"), "{err}");
}
