//! Where the Consul agent is and how to talk to it: [`ConsulOptions`] and [`TlsOptions`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Micro's own address setting; wins over [`ADDRESS_ENV`] when both are set.
pub const MICRO_ADDRESS_ENV: &str = "MICRO_REGISTRY_ADDRESS";
/// Consul's own address variable, `127.0.0.1:8500` or `https://consul.example:8501`.
pub const ADDRESS_ENV: &str = "CONSUL_HTTP_ADDR";
/// Consul's ACL token variable, sent as `X-Consul-Token`.
pub const TOKEN_ENV: &str = "CONSUL_HTTP_TOKEN";
/// A file holding the ACL token (read when [`TOKEN_ENV`] is unset).
pub const TOKEN_FILE_ENV: &str = "CONSUL_HTTP_TOKEN_FILE";
/// `true` to speak HTTPS to an address given without a scheme.
pub const SSL_ENV: &str = "CONSUL_HTTP_SSL";
/// The PEM file of the CA that signed the agent's certificate.
pub const CA_CERT_ENV: &str = "CONSUL_CACERT";
/// The PEM client certificate for mutual TLS.
pub const CLIENT_CERT_ENV: &str = "CONSUL_CLIENT_CERT";
/// The PEM private key of the client certificate.
pub const CLIENT_KEY_ENV: &str = "CONSUL_CLIENT_KEY";
/// The name to expect on the agent's certificate when it differs from the address's host.
pub const TLS_SERVER_NAME_ENV: &str = "CONSUL_TLS_SERVER_NAME";

/// The address of a local development agent (`consul agent -dev`).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8500";

/// Options of a [`ConsulRegistry`](crate::ConsulRegistry). `Debug` leaves the token out.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulOptions {
    /// The agent's HTTP API: `host:port`, or with an `http://` or `https://` scheme.
    /// Default [`DEFAULT_ADDRESS`].
    pub address: String,
    /// An ACL token, sent as `X-Consul-Token` on every request.
    pub token: Option<String>,
    /// The datacenter to look services up in (the `dc` query parameter); the agent's own when
    /// `None`. Registration always goes to the local agent.
    pub datacenter: Option<String>,
    /// TLS settings; `Some` switches an address without a scheme to HTTPS. An `https://`
    /// address with `None` here trusts the system's root certificates.
    pub tls: Option<TlsOptions>,
    /// The bound on every request except the hold of a blocking query, 10 s by default.
    pub request_timeout: Duration,
    /// How long a watch's blocking query waits for a change before asking again, 5 minutes by
    /// default (Consul caps it at 10). Tests use a few seconds.
    pub watch_wait: Duration,
}

/// TLS to the agent: the CA to trust and, for mutual TLS, a client certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// The PEM file of the CA(s) to trust; the system's roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// The PEM client certificate (chain) presented to the agent.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name the agent's certificate must carry, when not the address's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for ConsulOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulOptions")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("datacenter", &self.datacenter)
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .field("watch_wait", &self.watch_wait)
            .finish()
    }
}

impl Default for ConsulOptions {
    fn default() -> Self {
        ConsulOptions {
            address: DEFAULT_ADDRESS.to_string(),
            token: None,
            datacenter: None,
            tls: None,
            request_timeout: Duration::from_secs(10),
            watch_wait: Duration::from_secs(300),
        }
    }
}

impl ConsulOptions {
    /// The defaults, overridden by the environment:
    ///
    /// | variable | sets |
    /// |---|---|
    /// | `MICRO_REGISTRY_ADDRESS`, else `CONSUL_HTTP_ADDR` | `address` (the first of a comma-separated list) |
    /// | `CONSUL_HTTP_TOKEN`, else the file `CONSUL_HTTP_TOKEN_FILE` | `token` |
    /// | `CONSUL_HTTP_SSL=true` | HTTPS for an address without a scheme |
    /// | `CONSUL_CACERT` | `tls.ca_file` |
    /// | `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY` | `tls.cert_file`, `tls.key_file` |
    /// | `CONSUL_TLS_SERVER_NAME` | `tls.server_name` |
    ///
    /// A token file that cannot be read is logged and ignored; the request then fails with
    /// Consul's 403, which names the problem.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// [`from_env`](Self::from_env) over any source of variables (tests use a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let mut opts = ConsulOptions::default();
        if let Some(address) = get(MICRO_ADDRESS_ENV).or_else(|| get(ADDRESS_ENV)) {
            if let Some(first) = address.split(',').map(str::trim).find(|a| !a.is_empty()) {
                opts.address = first.to_string();
            }
        }
        opts.token = get(TOKEN_ENV).or_else(|| {
            let path = get(TOKEN_FILE_ENV)?;
            match std::fs::read_to_string(&path) {
                Ok(token) => Some(token.trim().to_string()).filter(|t| !t.is_empty()),
                Err(e) => {
                    tracing::warn!(
                        "cannot read the Consul token file {path} ({TOKEN_FILE_ENV}): {e}"
                    );
                    None
                }
            }
        });
        let tls = TlsOptions {
            ca_file: get(CA_CERT_ENV).map(PathBuf::from),
            cert_file: get(CLIENT_CERT_ENV).map(PathBuf::from),
            key_file: get(CLIENT_KEY_ENV).map(PathBuf::from),
            server_name: get(TLS_SERVER_NAME_ENV),
        };
        let ssl =
            get(SSL_ENV).is_some_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true"));
        // An empty TlsOptions still means "HTTPS, trusting the system's roots".
        if ssl || tls != TlsOptions::default() {
            opts.tls = Some(tls);
        }
        opts
    }

    /// These options with another agent address.
    pub fn with_address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// These options with an ACL token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// These options looking services up in another datacenter.
    pub fn with_datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.datacenter = Some(datacenter.into());
        self
    }

    /// These options with TLS settings.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// These options with another request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// These options with another blocking-query wait for watches.
    pub fn with_watch_wait(mut self, wait: Duration) -> Self {
        self.watch_wait = wait;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_without_environment() {
        let opts = ConsulOptions::from_lookup(lookup(&[]));
        assert_eq!(opts, ConsulOptions::default());
        assert_eq!(opts.address, "127.0.0.1:8500");
        assert!(opts.tls.is_none());
    }

    #[test]
    fn micro_address_wins_over_consuls_own() {
        let opts = ConsulOptions::from_lookup(lookup(&[
            (ADDRESS_ENV, "10.0.0.1:8500"),
            (MICRO_ADDRESS_ENV, " consul-a:8500 ,consul-b:8500"),
        ]));
        assert_eq!(opts.address, "consul-a:8500");
        let opts = ConsulOptions::from_lookup(lookup(&[(ADDRESS_ENV, "https://c:8501")]));
        assert_eq!(opts.address, "https://c:8501");
    }

    #[test]
    fn token_and_tls_from_consuls_variables() {
        let opts = ConsulOptions::from_lookup(lookup(&[
            (TOKEN_ENV, "s3cr3t"),
            (CA_CERT_ENV, "/etc/consul/ca.pem"),
            (CLIENT_CERT_ENV, "/etc/consul/cli.pem"),
            (CLIENT_KEY_ENV, "/etc/consul/cli-key.pem"),
        ]));
        assert_eq!(opts.token.as_deref(), Some("s3cr3t"));
        let tls = opts.tls.expect("tls from CONSUL_CACERT");
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/consul/ca.pem")));
        assert_eq!(tls.key_file, Some(PathBuf::from("/etc/consul/cli-key.pem")));
    }

    #[test]
    fn ssl_alone_turns_tls_on() {
        let opts = ConsulOptions::from_lookup(lookup(&[(SSL_ENV, "true")]));
        assert_eq!(opts.tls, Some(TlsOptions::default()));
        let opts = ConsulOptions::from_lookup(lookup(&[(SSL_ENV, "false")]));
        assert_eq!(opts.tls, None);
    }

    #[test]
    fn token_file_is_read_when_no_token_is_set() {
        let dir = std::env::temp_dir().join(format!("consul-token-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").expect("write the token file");
        let path = dir.to_string_lossy().to_string();
        let opts = ConsulOptions::from_lookup(lookup(&[(TOKEN_FILE_ENV, &path)]));
        assert_eq!(opts.token.as_deref(), Some("from-file"));
        let _ = std::fs::remove_file(&dir);
    }
}
