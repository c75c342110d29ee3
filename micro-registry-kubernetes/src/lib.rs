//! The Kubernetes registry of Micro for Rust: services announce themselves on their own pod,
//! in Go Micro's layout, so Rust and Go Micro services in one namespace find each other.
//!
//! There is no registry server to run: the Kubernetes API server is the registry. Each process
//! patches the pod it runs in; lookups list the pods of the namespace by label and read the
//! Running ones.
//!
//! # Layout on the pod (Go Micro's)
//!
//! Registering service `greeter` merge-patches this process's pod with
//!
//! - label `micro.mu/type: service`,
//! - label `micro.mu/selector-greeter: service`,
//! - annotation `micro.mu/service-greeter: <Service JSON>` (the same JSON as every registry).
//!
//! In keys, characters of the name outside `[-A-Za-z0-9_.]` become `_` (byte by byte, as Go
//! Micro does); the JSON keeps the real name, which is what lookups compare. Deregistering
//! removes the selector label and the annotation (`null` in the merge patch).
//! [`get_service`](micro_core::Registry::get_service) lists the pods with
//! `micro.mu/selector-<name>=service`, keeps those in phase Running that are not being deleted,
//! and merges their nodes per version; [`list_services`](micro_core::Registry::list_services)
//! reads every `micro.mu/service-*` annotation of the pods labelled `micro.mu/type=service`.
//! An annotation that does not hold valid JSON is skipped with a warning.
//!
//! Beyond Go Micro, which writes one service with one node per pod:
//!
//! - **Several nodes.** The annotation's node list is the union of the nodes this registry
//!   value registered for that service (a process may serve one service on several
//!   addresses); Go Micro readers read such a list as they read their own.
//! - **Several versions.** A second version of the same service from the same pod goes to
//!   `micro.mu/service-<name>..<version>`. Go Micro's `ListServices` reads it; its
//!   `GetService` sees only the first version. Two services whose names map to the same key
//!   cannot both be registered from one pod (a 409 error says so).
//! - **TTL.** Kubernetes has no TTL; Go Micro relies on the pod's lifecycle alone. Here each
//!   node registered with a TTL carries its expiry, in unix seconds, in its node metadata
//!   under [`format::EXPIRES_KEY`] (`micro.mu/expires`); readers drop nodes whose expiry has
//!   passed and never return the key. Registering again renews it. A zero TTL means no expiry.
//!   Pods' clocks are assumed to agree to within a few seconds (NTP).
//!
//! Two registry values in one pod that register the same service name overwrite each other's
//! annotation, as in Go Micro: let one registry value per process do the registering.
//!
//! # Watching
//!
//! [`watch`](micro_core::Registry::watch) lists the matching pods, then follows the API
//! server's watch of them and turns each pod change into create, update and delete events of
//! the nodes in its annotations. A pod that leaves Running or is deleted gives a delete for each
//! of its nodes, as does a node whose TTL runs out. Failures arrive as `Err` items; the watch
//! then lists again and goes on.
//!
//! # Permissions (RBAC)
//!
//! The pod's service account needs `get`, `list`, `watch` and `patch` on `pods` in its
//! namespace:
//!
//! ```yaml
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: Role
//! metadata: { name: micro-registry }
//! rules:
//!   - apiGroups: [""]
//!     resources: ["pods"]
//!     verbs: ["get", "list", "watch", "patch"]
//! ---
//! apiVersion: rbac.authorization.k8s.io/v1
//! kind: RoleBinding
//! metadata: { name: micro-registry }
//! subjects: [{ kind: ServiceAccount, name: default }]
//! roleRef: { kind: Role, name: micro-registry, apiGroup: rbac.authorization.k8s.io }
//! ```
//!
//! # Options and environment
//!
//! [`KubernetesOptions::from_env`] reads:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `MICRO_KUBERNETES_NAMESPACE` | the namespace of the services | the in-cluster namespace file, else the kubeconfig context's namespace, else `default` |
//! | `MICRO_KUBERNETES_POD_NAME` | this process's pod, which `register` patches | `HOSTNAME` (a pod's hostname is its name) |
//! | `MICRO_KUBERNETES_TIMEOUT` | the limit of every API call (`10s`, `500ms`, `5`) | 10 s |
//!
//! The cluster is found as kubectl finds it: `KUBECONFIG` or `~/.kube/config`, else the
//! in-cluster service account. `MICRO_REGISTRY_ADDRESS` (through the `micro` crate, or
//! [`KubernetesOptions::address`]) names the API server instead, e.g. `http://127.0.0.1:8001`
//! behind `kubectl proxy`. Pass the pod name from the downward API when the hostname differs:
//!
//! ```yaml
//! env:
//!   - name: MICRO_KUBERNETES_POD_NAME
//!     valueFrom: { fieldRef: { fieldPath: metadata.name } }
//! ```
//!
//! Every call is bounded by the timeout; errors about the API server start with
//! `kubernetes at <server URL>`, and one that cannot be reached is a retryable 503.
//!
//! # Cargo features
//!
//! - `k8s-v1_33` (default): builds `k8s-openapi` for Kubernetes 1.33 and newer; the pods API
//!   used here is the same in all of them. `k8s-openapi` allows one version feature per build:
//!   a program that enables another one itself turns this crate's default features off.
//!
//! # Example
//!
//! ```no_run
//! use micro_core::registry::RegisterOptions;
//! use micro_core::{Node, Registry, Service};
//! use micro_registry_kubernetes::{KubernetesOptions, KubernetesRegistry};
//!
//! # async fn run() -> micro_core::Result<()> {
//! let registry = KubernetesRegistry::new(KubernetesOptions::from_env()?);
//! let mut service = Service::new("greeter", "latest");
//! service.nodes.push(Node {
//!     id: "greeter-1".into(),
//!     address: "10.1.2.3:9090".into(),
//!     metadata: [("protocol".to_string(), "mucp".to_string())].into(),
//! });
//! registry.register(&service, RegisterOptions::default()).await?;
//! let found = registry.get_service("greeter").await?;
//! assert_eq!(found[0].nodes[0].address, "10.1.2.3:9090");
//! registry.deregister(&service).await?;
//! # Ok(())
//! # }
//! ```

mod conn;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
mod options;
mod registry;
mod watch;

pub use options::{
    KubernetesOptions, IN_CLUSTER_NAMESPACE_FILE, NAMESPACE_ENV, POD_NAME_ENV, TIMEOUT_ENV,
};
pub use registry::KubernetesRegistry;

/// The id of this crate's errors.
pub(crate) const ID: &str = "micro.registry.kubernetes";
