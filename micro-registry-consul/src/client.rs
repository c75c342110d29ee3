//! A thin client of the Consul HTTP API: the five calls the registry makes, each bounded in
//! time and in the size of what it reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use micro_core::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::options::{ConsulOptions, TlsOptions};

/// The `id` of every error this crate returns.
pub(crate) const ERROR_ID: &str = "micro.registry.consul";

/// The most an answer's body may hold; a health list of thousands of nodes fits.
const MAX_BODY: usize = 32 << 20;

/// How much of an error body is quoted back.
const MAX_QUOTED: usize = 300;

/// `PUT /v1/agent/service/register`, in the agent's field names.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Registration {
    #[serde(rename = "ID")]
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tags: Vec<String>,
    pub(crate) address: String,
    pub(crate) port: u16,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) meta: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) check: Option<TtlCheck>,
}

/// The TTL check embedded in a [`Registration`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TtlCheck {
    #[serde(rename = "CheckID")]
    pub(crate) check_id: String,
    pub(crate) name: String,
    #[serde(rename = "TTL")]
    pub(crate) ttl: String,
    pub(crate) deregister_critical_service_after: String,
    /// `passing`, so that the node is served from the first moment.
    pub(crate) status: String,
}

/// One element of `GET /v1/health/service/<name>`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HealthEntry {
    #[serde(default)]
    pub(crate) node: Option<CatalogNode>,
    pub(crate) service: EntryService,
    #[serde(default)]
    pub(crate) checks: Option<Vec<EntryCheck>>,
}

/// The machine an entry runs on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CatalogNode {
    #[serde(default)]
    pub(crate) address: Option<String>,
}

/// The service instance of an entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EntryService {
    #[serde(rename = "ID")]
    pub(crate) id: String,
    pub(crate) service: String,
    #[serde(default)]
    pub(crate) tags: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) address: Option<String>,
    #[serde(default)]
    pub(crate) port: Option<u16>,
    #[serde(default)]
    pub(crate) meta: Option<BTreeMap<String, String>>,
}

/// A check of an entry: the node's own (serfHealth) and the service's.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EntryCheck {
    #[serde(rename = "CheckID", default)]
    pub(crate) check_id: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
}

/// What a check pass found.
#[derive(Debug)]
pub(crate) enum Pass {
    /// The check is passing again.
    Passed,
    /// The agent does not know the check (it restarted, or reaped the service).
    Unknown(Error),
}

/// A blocking query: the index last seen and how long to hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) index: u64,
    pub(crate) wait: Duration,
}

struct Reply {
    status: StatusCode,
    index: Option<u64>,
    body: Bytes,
}

/// The HTTP API of one Consul agent.
#[derive(Clone)]
pub(crate) struct ConsulHttp {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    label: String,
    token: Option<HeaderValue>,
    datacenter: Option<String>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for ConsulHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulHttp")
            .field("base", &self.inner.base)
            .field("token", &self.inner.token.as_ref().map(|_| "<redacted>"))
            .field("datacenter", &self.inner.datacenter)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl ConsulHttp {
    /// A client of the agent `opts` names; opens no connection yet.
    pub(crate) fn new(opts: &ConsulOptions) -> Result<Self> {
        let given = opts.address.trim().trim_end_matches('/');
        let label = format!("consul at {given}");
        let (scheme, rest) = match given.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None if opts.tls.is_some() => ("https".to_string(), given),
            None => ("http".to_string(), given),
        };
        if scheme != "http" && scheme != "https" {
            return Err(Error::bad_request(
                ERROR_ID,
                format!(
                    "{label}: only http:// and https:// addresses are supported, not {scheme}://"
                ),
            ));
        }
        if rest.is_empty() || rest.contains('/') {
            return Err(Error::bad_request(
                ERROR_ID,
                format!(
                    "{label}: the address must be host:port, with an optional http:// or https://"
                ),
            ));
        }
        let base = format!("{scheme}://{rest}");
        base.parse::<http::Uri>().map_err(|e| {
            Error::bad_request(ERROR_ID, format!("{label}: not a valid address: {e}"))
        })?;
        let token = match &opts.token {
            Some(t) => Some(HeaderValue::from_str(t.trim()).map_err(|_| {
                Error::bad_request(
                    ERROR_ID,
                    format!("{label}: the ACL token holds characters a header cannot carry"),
                )
            })?),
            None => None,
        };

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.request_timeout));
        let tls = tls_config(opts.tls.as_ref(), scheme == "https", &label)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let builder = match opts.tls.as_ref().and_then(|t| t.server_name.clone()) {
            Some(name) => {
                let name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                    Error::bad_request(
                        ERROR_ID,
                        format!("{label}: the TLS server name {name:?} is not valid: {e}"),
                    )
                })?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = builder.enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(ConsulHttp {
            inner: Arc::new(Inner {
                base,
                label,
                token,
                datacenter: opts.datacenter.clone(),
                timeout: opts.request_timeout,
                client,
            }),
        })
    }

    /// `consul at <address>`, the prefix of every error.
    pub(crate) fn label(&self) -> &str {
        &self.inner.label
    }

    /// Registers one service instance with the local agent.
    pub(crate) async fn register(&self, registration: &Registration) -> Result<()> {
        let body = serde_json::to_vec(registration).map_err(|e| {
            Error::internal(
                ERROR_ID,
                format!("{}: cannot encode the registration: {e}", self.label()),
            )
        })?;
        let what = format!("the registration of {}", registration.id);
        let reply = self
            .call(
                Method::PUT,
                "/v1/agent/service/register".to_string(),
                Some(body),
                None,
                &what,
            )
            .await?;
        self.expect_ok(&reply, &what)
    }

    /// Removes one service instance from the local agent; an unknown one is not an error.
    pub(crate) async fn deregister(&self, id: &str) -> Result<()> {
        let what = format!("the deregistration of {id}");
        let path = format!("/v1/agent/service/deregister/{}", escape(id));
        let reply = self.call(Method::PUT, path, None, None, &what).await?;
        if reply.status == StatusCode::NOT_FOUND || unknown(&reply, "service") {
            return Ok(());
        }
        self.expect_ok(&reply, &what)
    }

    /// Marks a TTL check as passing.
    pub(crate) async fn pass(&self, check_id: &str) -> Result<Pass> {
        let what = format!("the check pass of {check_id}");
        let path = format!("/v1/agent/check/pass/{}", escape(check_id));
        let reply = self.call(Method::PUT, path, None, None, &what).await?;
        if reply.status.is_success() {
            return Ok(Pass::Passed);
        }
        let err = self.status_error(&reply, &what);
        if reply.status == StatusCode::FORBIDDEN {
            return Err(err);
        }
        // 404 "Unknown check ID" in current agents, a 500 naming the check in older ones.
        Ok(Pass::Unknown(err))
    }

    /// The passing instances of `name` (unparsable entries skipped), and the index to block on.
    pub(crate) async fn health(
        &self,
        name: &str,
        block: Option<Block>,
    ) -> Result<(Vec<HealthEntry>, u64)> {
        let what = format!("the health of service {name}");
        let path = format!(
            "/v1/health/service/{}{}",
            escape(name),
            self.query(vec!["passing=1".to_string()], block)
        );
        let reply = self.call(Method::GET, path, None, block, &what).await?;
        self.expect_ok(&reply, &what)?;
        let items: Vec<serde_json::Value> = self.parse(&reply, &what)?;
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            match serde_json::from_value::<HealthEntry>(item) {
                Ok(entry) => entries.push(entry),
                Err(e) => tracing::warn!(
                    "{}: skipping a malformed entry of service {name}: {e}",
                    self.label()
                ),
            }
        }
        Ok((entries, reply.index.unwrap_or(0)))
    }

    /// Every service name in the catalog with the union of its tags, and the index.
    pub(crate) async fn catalog(
        &self,
        block: Option<Block>,
    ) -> Result<(BTreeMap<String, Vec<String>>, u64)> {
        let what = "the catalog's service list";
        let path = format!("/v1/catalog/services{}", self.query(Vec::new(), block));
        let reply = self.call(Method::GET, path, None, block, what).await?;
        self.expect_ok(&reply, what)?;
        let raw: BTreeMap<String, Option<Vec<String>>> = self.parse(&reply, what)?;
        let services = raw
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect();
        Ok((services, reply.index.unwrap_or(0)))
    }

    /// The query string: `params`, the datacenter and the blocking parameters.
    fn query(&self, mut params: Vec<String>, block: Option<Block>) -> String {
        if let Some(dc) = &self.inner.datacenter {
            params.push(format!("dc={}", escape(dc)));
        }
        if let Some(b) = block {
            params.push(format!("index={}", b.index));
            params.push(format!("wait={}ms", b.wait.as_millis()));
        }
        if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, reply: &Reply, what: &str) -> Result<T> {
        serde_json::from_slice(&reply.body).map_err(|e| {
            Error::internal(
                ERROR_ID,
                format!("{}: unreadable answer to {what}: {e}", self.label()),
            )
        })
    }

    fn expect_ok(&self, reply: &Reply, what: &str) -> Result<()> {
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(self.status_error(reply, what))
        }
    }

    fn status_error(&self, reply: &Reply, what: &str) -> Error {
        let body = quote(&reply.body);
        let label = self.label();
        match reply.status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Error::forbidden(
                ERROR_ID,
                format!("{label} refused {what}: {body} (check the ACL token: CONSUL_HTTP_TOKEN)"),
            ),
            status => Error::internal(
                ERROR_ID,
                format!("{label} answered {status} to {what}: {body}"),
            ),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<Vec<u8>>,
        block: Option<Block>,
        what: &str,
    ) -> Result<Reply> {
        let inner = &self.inner;
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", inner.base));
        if let Some(token) = &inner.token {
            request = request.header("X-Consul-Token", token.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| {
                Error::bad_request(
                    ERROR_ID,
                    format!("{}: cannot build the request for {what}: {e}", inner.label),
                )
            })?;
        // A blocking query may be held for `wait` plus Consul's jitter of up to wait/16.
        let limit = match block {
            Some(b) => inner.timeout + b.wait + b.wait / 16,
            None => inner.timeout,
        };
        let exchange = async {
            let response = inner.client.request(request).await.map_err(|e| {
                Error::new(
                    ERROR_ID,
                    503,
                    format!(
                        "{}: cannot reach the agent for {what}: {}; is it running? (`consul agent -dev` for development)",
                        inner.label,
                        chain(&e)
                    ),
                )
            })?;
            let status = response.status();
            let index = response
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    Error::new(
                        ERROR_ID,
                        502,
                        format!(
                            "{}: the answer to {what} broke off or passed {MAX_BODY} bytes: {e}",
                            inner.label
                        ),
                    )
                })?
                .to_bytes();
            Ok(Reply {
                status,
                index,
                body,
            })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(
                ERROR_ID,
                format!("{}: no answer to {what} within {limit:?}", inner.label),
            )),
        }
    }
}

fn tls_config(tls: Option<&TlsOptions>, https: bool, label: &str) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(ERROR_ID, format!("{label}: TLS setup: {e}")))?;
    let bad = |what: &str, path: &std::path::Path, e: &dyn fmt::Display| {
        Error::bad_request(
            ERROR_ID,
            format!("{label}: cannot use the {what} {}: {e}", path.display()),
        )
    };
    let default_tls = TlsOptions::default();
    let tls = tls.unwrap_or(&default_tls);
    let builder = match &tls.ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad("CA file", path, &e))? {
                let cert = cert.map_err(|e| bad("CA file", path, &e))?;
                roots.add(cert).map_err(|e| bad("CA file", path, &e))?;
            }
            if roots.is_empty() {
                return Err(bad("CA file", path, &"it holds no certificate"));
            }
            builder.with_root_certificates(roots)
        }
        // Plain HTTP never looks at roots; skip reading the system's store for it.
        None if !https => builder.with_root_certificates(rustls::RootCertStore::empty()),
        None => builder.with_native_roots().map_err(|e| {
            Error::internal(
                ERROR_ID,
                format!(
                    "{label}: cannot load the system's root certificates: {e}; set CONSUL_CACERT"
                ),
            )
        })?,
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert_path), Some(key_path)) => {
            let certs = CertificateDer::pem_file_iter(cert_path)
                .map_err(|e| bad("client certificate", cert_path, &e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad("client certificate", cert_path, &e))?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| bad("client key", key_path, &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("client certificate", cert_path, &e))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(Error::bad_request(
            ERROR_ID,
            format!("{label}: mutual TLS needs both a client certificate and its key (CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)"),
        )),
    }
}

/// Percent-encodes one path segment or query value.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether an error answer says the service or check is unknown (older agents use 500).
fn unknown(reply: &Reply, what: &str) -> bool {
    let text = String::from_utf8_lossy(&reply.body).to_ascii_lowercase();
    text.contains(&format!("unknown {what}"))
}

fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no body)".to_string();
    }
    match text.char_indices().nth(MAX_QUOTED) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_path_segments() {
        assert_eq!(escape("greeter-1.a_b~"), "greeter-1.a_b~");
        assert_eq!(escape("a/b c?d"), "a%2Fb%20c%3Fd");
        assert_eq!(escape("é"), "%C3%A9");
    }

    #[test]
    fn addresses_and_schemes() {
        let http = ConsulHttp::new(&ConsulOptions::default()).expect("default");
        assert_eq!(http.inner.base, "http://127.0.0.1:8500");
        assert_eq!(http.label(), "consul at 127.0.0.1:8500");
        let opts = ConsulOptions::default().with_address("HTTPS://consul.example:8501/");
        let https = ConsulHttp::new(&opts).expect("https");
        assert_eq!(https.inner.base, "https://consul.example:8501");
        let opts = ConsulOptions::default().with_tls(TlsOptions::default());
        assert!(ConsulHttp::new(&opts)
            .expect("tls")
            .inner
            .base
            .starts_with("https://"));
        for bad in ["unix:///var/run/consul.sock", "", "host:8500/v1"] {
            let err = ConsulHttp::new(&ConsulOptions::default().with_address(bad)).expect_err(bad);
            assert_eq!(err.code, 400, "{err}");
        }
    }

    #[test]
    fn tls_files_must_exist_and_pair_up() {
        let missing = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err =
            ConsulHttp::new(&ConsulOptions::default().with_tls(missing)).expect_err("missing CA");
        assert!(err.detail.contains("/nonexistent/ca.pem"), "{err}");
        let half = TlsOptions {
            cert_file: Some("/nonexistent/cert.pem".into()),
            ..Default::default()
        };
        let err = ConsulHttp::new(&ConsulOptions::default().with_tls(half)).expect_err("no key");
        assert!(err.detail.contains("CONSUL_CLIENT_KEY"), "{err}");
    }

    #[test]
    fn the_token_is_not_printed() {
        let http = ConsulHttp::new(&ConsulOptions::default().with_token("s3cr3t")).expect("client");
        assert!(!format!("{http:?}").contains("s3cr3t"));
    }
}
