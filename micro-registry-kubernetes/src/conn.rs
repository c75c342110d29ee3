//! The connection to the API server: the pods API of one namespace, every call bounded by the
//! timeout, and errors that name the server.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use micro_core::{Error, Result};

use crate::ID;

/// The pods of one namespace at one API server.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) pods: Api<Pod>,
    /// The API server URL, for messages.
    pub(crate) server: String,
    pub(crate) namespace: String,
    pub(crate) timeout: Duration,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Runs one API call, bounded by the timeout, with `doing` ("listing pods ...") in its
    /// error.
    pub(crate) async fn call<T>(
        &self,
        doing: &str,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(doing, &e)),
            Err(_) => Err(Error::timeout(
                ID,
                format!(
                    "{}: {doing}: no answer within {:?}",
                    self.at(),
                    self.timeout
                ),
            )),
        }
    }

    /// `kubernetes at <server>`, the start of every error about the API server.
    pub(crate) fn at(&self) -> String {
        format!("kubernetes at {}", self.server)
    }

    /// A Micro error for a failed call. The API server's refusals keep their meaning (403
    /// stays 403); a server that cannot be reached is a 503, so callers retry.
    pub(crate) fn error(&self, doing: &str, e: &kube::Error) -> Error {
        let at = self.at();
        match e {
            kube::Error::Api(status) => {
                let code = match status.code {
                    401 => 401,
                    403 => 403,
                    400 | 422 => 400,
                    409 => 409,
                    429 | 500..=599 => 503,
                    // A 404 here is a missing pod or namespace, never a missing service.
                    _ => 500,
                };
                let hint = match status.code {
                    401 | 403 => format!(
                        " (the pod's service account needs get, list, watch and patch on pods \
                         in namespace {})",
                        self.namespace
                    ),
                    _ => String::new(),
                };
                Error::new(
                    ID,
                    code,
                    format!(
                        "{at}: {doing}: {} {}: {}{hint}",
                        status.code, status.reason, status.message
                    ),
                )
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) => Error::new(
                ID,
                503,
                format!("{at}: {doing}: cannot reach the API server: {}", chain(e)),
            ),
            other => Error::internal(ID, format!("{at}: {doing}: {}", chain(other))),
        }
    }
}

/// An error and its sources, each message once.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}
