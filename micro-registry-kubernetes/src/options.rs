//! Which pod and namespace the registry uses, and how long it waits: [`KubernetesOptions`].

use std::time::Duration;

use micro_core::{env, Result};

use crate::ID;

/// Overrides the namespace (else the client's: the in-cluster namespace file, the kubeconfig
/// context's namespace, or `default`).
pub const NAMESPACE_ENV: &str = "MICRO_KUBERNETES_NAMESPACE";
/// The name of the pod this process runs in; `HOSTNAME` when unset (Kubernetes sets the
/// hostname of a pod's containers to the pod name).
pub const POD_NAME_ENV: &str = "MICRO_KUBERNETES_POD_NAME";
/// How long one call to the API server may take: `10s`, `500ms` or plain seconds (`5`).
pub const TIMEOUT_ENV: &str = "MICRO_KUBERNETES_TIMEOUT";
/// Where a pod finds its namespace.
pub const IN_CLUSTER_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Options of a [`KubernetesRegistry`](crate::KubernetesRegistry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesOptions {
    /// The namespace whose pods hold the services. `None`: the client's default namespace
    /// (in a pod, the in-cluster namespace file; with a kubeconfig, its context's namespace;
    /// else `default`).
    pub namespace: Option<String>,
    /// The pod this process runs in, which [`register`](micro_core::Registry::register)
    /// patches. `None` leaves the registry read-only: lookups and watches work, registering
    /// fails with an error that says what to set.
    pub pod_name: Option<String>,
    /// The API server URL (`https://10.0.0.1:6443`, or `http://127.0.0.1:8001` behind
    /// `kubectl proxy`), overriding the inferred one; without a scheme, `https://` is assumed.
    /// This is what `MICRO_REGISTRY_ADDRESS` sets.
    pub address: Option<String>,
    /// How long one call to the API server may take before it fails; 10 s by default.
    pub timeout: Duration,
    /// How long the API server keeps one watch request open before the registry renews it;
    /// 60 s by default. A watch that hears nothing for this long plus 15 s starts over.
    pub watch_timeout: Duration,
}

impl Default for KubernetesOptions {
    fn default() -> Self {
        KubernetesOptions {
            namespace: None,
            pod_name: None,
            address: None,
            timeout: Duration::from_secs(10),
            watch_timeout: Duration::from_secs(60),
        }
    }
}

impl KubernetesOptions {
    /// The defaults, then `MICRO_KUBERNETES_NAMESPACE` (else the in-cluster namespace file),
    /// `MICRO_KUBERNETES_POD_NAME` (else `HOSTNAME`) and `MICRO_KUBERNETES_TIMEOUT`.
    ///
    /// Fails when `MICRO_KUBERNETES_TIMEOUT` cannot be read as a duration.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(
            |k| std::env::var(k).ok(),
            std::fs::read_to_string(IN_CLUSTER_NAMESPACE_FILE).ok(),
        )
    }

    fn from_lookup(
        env: impl Fn(&str) -> Option<String>,
        in_cluster_namespace: Option<String>,
    ) -> Result<Self> {
        let set = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut opts = KubernetesOptions {
            namespace: set(NAMESPACE_ENV).or_else(|| {
                in_cluster_namespace
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
            }),
            pod_name: set(POD_NAME_ENV).or_else(|| set("HOSTNAME")),
            ..Default::default()
        };
        if let Some(t) = set(TIMEOUT_ENV) {
            opts.timeout = parse_duration(&t).ok_or_else(|| {
                env::invalid_from(
                    ID,
                    TIMEOUT_ENV,
                    &t,
                    "a duration: write `10s`, `500ms` or `5`",
                )
            })?;
        }
        Ok(opts)
    }

    /// These options in another namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// These options acting as another pod.
    pub fn with_pod_name(mut self, pod_name: impl Into<String>) -> Self {
        self.pod_name = Some(pod_name.into());
        self
    }

    /// These options with the API server at `address` (ignored when it is empty).
    pub fn with_address(mut self, address: Option<&str>) -> Self {
        self.address = address
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string);
        self
    }

    /// These options with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// These options with another watch renewal period.
    pub fn with_watch_timeout(mut self, watch_timeout: Duration) -> Self {
        self.watch_timeout = watch_timeout;
        self
    }
}

/// `10s`, `1500ms`, `2m` or plain seconds ([`env::parse_duration`]), but not zero: with no time
/// at all, every call to the API server would time out at once.
fn parse_duration(s: &str) -> Option<Duration> {
    env::parse_duration(s).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn reads_the_environment() {
        let opts = KubernetesOptions::from_lookup(
            lookup(&[
                (NAMESPACE_ENV, "shop"),
                ("HOSTNAME", "greeter-7d9f-abcde"),
                (TIMEOUT_ENV, "1500ms"),
            ]),
            Some("ignored\n".into()),
        )
        .expect("valid");
        assert_eq!(opts.namespace.as_deref(), Some("shop"));
        assert_eq!(opts.pod_name.as_deref(), Some("greeter-7d9f-abcde"));
        assert_eq!(opts.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn falls_back_to_the_in_cluster_namespace_and_the_defaults() {
        let opts = KubernetesOptions::from_lookup(
            lookup(&[(POD_NAME_ENV, "p1"), ("HOSTNAME", "h")]),
            Some("team-a\n".into()),
        )
        .expect("valid");
        assert_eq!(opts.namespace.as_deref(), Some("team-a"));
        assert_eq!(opts.pod_name.as_deref(), Some("p1"));
        assert_eq!(opts.timeout, Duration::from_secs(10));
        let bare = KubernetesOptions::from_lookup(lookup(&[]), None).expect("valid");
        assert_eq!(bare, KubernetesOptions::default());
    }

    #[test]
    fn a_bad_timeout_is_an_error_that_names_the_variable() {
        let err = KubernetesOptions::from_lookup(lookup(&[(TIMEOUT_ENV, "soon")]), None)
            .expect_err("invalid");
        assert!(err.detail.contains(TIMEOUT_ENV), "{err}");
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("0"), None);
    }
}
