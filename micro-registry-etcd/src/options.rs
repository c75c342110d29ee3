//! Where etcd is and how to talk to it: [`EtcdOptions`] and [`EtcdTls`], from code or from the
//! environment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

/// The comma-separated etcd endpoints, `127.0.0.1:2379,10.0.0.2:2379` (Go Micro's name).
pub const ADDRESS_ENV: &str = "MICRO_REGISTRY_ADDRESS";
/// The etcd user name, when etcd has authentication enabled.
pub const USERNAME_ENV: &str = "MICRO_ETCD_USERNAME";
/// The password of [`USERNAME_ENV`].
pub const PASSWORD_ENV: &str = "MICRO_ETCD_PASSWORD";
/// A PEM file with the CA certificate(s) that signed etcd's certificate; setting any of the
/// `MICRO_ETCD_TLS_*` variables turns TLS on.
pub const TLS_CA_ENV: &str = "MICRO_ETCD_TLS_CA";
/// A PEM file with this client's certificate, for etcd's `--client-cert-auth`.
pub const TLS_CERT_ENV: &str = "MICRO_ETCD_TLS_CERT";
/// The PEM file with the private key of [`TLS_CERT_ENV`].
pub const TLS_KEY_ENV: &str = "MICRO_ETCD_TLS_KEY";
/// The name to verify etcd's certificate against, when it differs from the endpoint's host.
pub const TLS_DOMAIN_ENV: &str = "MICRO_ETCD_TLS_DOMAIN";

/// The user name variable Go Micro's etcd plugin reads; used when [`USERNAME_ENV`] is unset.
const GO_USERNAME_ENV: &str = "ETCD_USERNAME";
/// The password variable Go Micro's etcd plugin reads; used when [`PASSWORD_ENV`] is unset.
const GO_PASSWORD_ENV: &str = "ETCD_PASSWORD";

/// The endpoint used when none is given: a local etcd on its standard client port.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";
/// The key prefix Go Micro keeps its registry under.
pub const DEFAULT_PREFIX: &str = "/micro/registry/";
/// The standard etcd client port, added to an address given without one.
const DEFAULT_PORT: u16 = 2379;

/// Keys per range request: at Go Micro's usual 1-2 KiB per node a page is far below the
/// client's 4 MiB, and a service of a few hundred nodes still reads in a few round trips.
pub const DEFAULT_READ_PAGE: u32 = 100;

/// Bytes one lookup or listing reads at most: tens of thousands of typical nodes.
pub const DEFAULT_MAX_READ_BYTES: usize = 64 << 20;

/// HTTP/2 pings on open streams, so that a watch on an etcd that vanished without closing the
/// connection (a dead host, a cut cable) fails instead of waiting forever. etcd answers pings
/// more often than every 5 s, or pings on idle connections, with `too_many_pings`, hence these.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How an [`EtcdRegistry`](crate::EtcdRegistry) reaches etcd.
///
/// `Default` is a local etcd on `127.0.0.1:2379`, no authentication, no TLS, Go Micro's key
/// prefix and 5 s timeouts; [`from_env`](Self::from_env) reads the `MICRO_*` variables.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// The etcd members to talk to: `host:port`, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// The key prefix of the registry, `/micro/registry/` (Go Micro's) unless services should
    /// live apart from Go Micro's.
    pub prefix: String,
    /// The etcd user, when etcd has authentication enabled.
    pub user: Option<String>,
    /// The password of `user`.
    pub password: Option<String>,
    /// TLS to etcd; `None` is plain HTTP/2 unless an endpoint says `https://`.
    pub tls: Option<EtcdTls>,
    /// How long connecting (and authenticating) may take.
    pub dial_timeout: Duration,
    /// How long one request may take, connecting included; nothing waits longer.
    pub request_timeout: Duration,
    /// How many keys one range request of a lookup or listing asks for, 100 by default. A
    /// read goes on page after page (all at one revision), and halves the page when etcd's
    /// answer is larger than the client accepts (4 MiB), so a service with many nodes or large
    /// entries reads whole.
    pub read_page: u32,
    /// The most bytes of keys and values one lookup or listing reads, 64 MiB by default; the
    /// entries past it are left out, with a warning.
    pub max_read_bytes: usize,
}

/// TLS settings for the connection to etcd. Every file is PEM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdTls {
    /// The CA certificate(s) that signed etcd's certificate; `None` trusts the system's roots.
    pub ca_file: Option<PathBuf>,
    /// This client's certificate, for etcd started with `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name etcd's certificate must carry, when not the endpoint's host.
    pub domain: Option<String>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            prefix: DEFAULT_PREFIX.to_string(),
            user: None,
            password: None,
            tls: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            read_page: DEFAULT_READ_PAGE,
            max_read_bytes: DEFAULT_MAX_READ_BYTES,
        }
    }
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("read_page", &self.read_page)
            .field("max_read_bytes", &self.max_read_bytes)
            .finish()
    }
}

impl EtcdOptions {
    /// The defaults with the endpoints of `address`, as `MICRO_REGISTRY_ADDRESS` and
    /// `--registry_address` give them: comma-separated, each `host[:port]` (port 2379 when left
    /// out) or a `http://` / `https://` URL. An empty address keeps `127.0.0.1:2379`.
    pub fn from_address(address: &str) -> Self {
        EtcdOptions::default().with_address(address)
    }

    /// The options the environment describes, over the defaults:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `MICRO_REGISTRY_ADDRESS` | comma-separated endpoints, `127.0.0.1:2379` by default |
    /// | `MICRO_ETCD_USERNAME`, `MICRO_ETCD_PASSWORD` | etcd user and password (Go Micro's `ETCD_USERNAME`, `ETCD_PASSWORD` are read when these are unset) |
    /// | `MICRO_ETCD_TLS_CA` | CA certificate file; any `MICRO_ETCD_TLS_*` turns TLS on |
    /// | `MICRO_ETCD_TLS_CERT`, `MICRO_ETCD_TLS_KEY` | client certificate and key files |
    /// | `MICRO_ETCD_TLS_DOMAIN` | the name etcd's certificate must carry |
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables (tests use a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut opts = EtcdOptions::default();
        if let Some(address) = get(ADDRESS_ENV) {
            opts = opts.with_address(&address);
        }
        opts.user = get(USERNAME_ENV).or_else(|| get(GO_USERNAME_ENV));
        opts.password = get(PASSWORD_ENV).or_else(|| get(GO_PASSWORD_ENV));
        let tls = EtcdTls {
            ca_file: get(TLS_CA_ENV).map(PathBuf::from),
            cert_file: get(TLS_CERT_ENV).map(PathBuf::from),
            key_file: get(TLS_KEY_ENV).map(PathBuf::from),
            domain: get(TLS_DOMAIN_ENV),
        };
        if tls != EtcdTls::default() {
            opts.tls = Some(tls);
        }
        opts
    }

    /// These options with the endpoints of `address` (see [`from_address`](Self::from_address));
    /// an empty address changes nothing.
    pub fn with_address(mut self, address: &str) -> Self {
        let endpoints: Vec<String> = address
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(with_default_port)
            .collect();
        if !endpoints.is_empty() {
            self.endpoints = endpoints;
        }
        self
    }

    /// These options with another key prefix (a `/` is added at its end when missing).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// These options with an etcd user and password.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// These options with TLS to etcd.
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// These options with another connect timeout.
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// These options with another per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// These options with another number of keys per range request (at least 1).
    pub fn with_read_page(mut self, keys: u32) -> Self {
        self.read_page = keys.max(1);
        self
    }

    /// These options with another bound on the bytes one lookup or listing reads.
    pub fn with_max_read_bytes(mut self, bytes: usize) -> Self {
        self.max_read_bytes = bytes;
        self
    }

    /// The endpoints as errors name them: `127.0.0.1:2379,10.0.0.2:2379`.
    pub(crate) fn endpoints_label(&self) -> String {
        self.endpoints.join(",")
    }

    /// The prefix with exactly one `/` at its end.
    pub(crate) fn normalized_prefix(&self) -> String {
        format!("{}/", self.prefix.trim_end_matches('/'))
    }

    /// The etcd client's options: timeouts, keep-alive, credentials and TLS (whose files are
    /// read here, so that a wrong path is reported when the registry is made).
    pub(crate) fn connect_options(&self) -> Result<ConnectOptions, String> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(false)
            // Every request says it needs a leader: a member cut off from the others refuses
            // at once instead of timing out, and ends the watches it serves (a watch on it
            // would otherwise stay open and silent while the others change the registry),
            // so that they are opened again elsewhere or once it rejoins.
            .with_require_leader(true);
        match (&self.user, &self.password) {
            (Some(user), password) => {
                // Tokens are lost when etcd restarts or they time out; get a new one then.
                opts = opts
                    .with_user(user, password.clone().unwrap_or_default())
                    .with_auto_token_refresh(true);
            }
            (None, Some(_)) => {
                return Err(format!(
                    "an etcd password is set but no user ({USERNAME_ENV})"
                ))
            }
            (None, None) => {}
        }
        let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        let tls = match &self.tls {
            Some(tls) => Some(tls.clone()),
            None if https => Some(EtcdTls::default()),
            None => None,
        };
        if let Some(tls) = tls {
            if let Some(plain) = self.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(format!(
                    "TLS is configured but endpoint {plain} says http://; use https:// or host:port"
                ));
            }
            opts = opts.with_tls(tls.client_config()?);
        }
        Ok(opts)
    }
}

impl EtcdTls {
    /// TLS that trusts the CA in `ca_file` and presents no client certificate.
    pub fn with_ca(ca_file: impl Into<PathBuf>) -> Self {
        EtcdTls {
            ca_file: Some(ca_file.into()),
            ..EtcdTls::default()
        }
    }

    /// These settings with a client certificate and its key.
    pub fn with_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    /// These settings with the name etcd's certificate must carry.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    fn client_config(&self) -> Result<TlsOptions, String> {
        let mut config = TlsOptions::new();
        config = match &self.ca_file {
            Some(path) => config.ca_certificate(Certificate::from_pem(read_pem(path, "CA")?)),
            None => config.with_native_roots(),
        };
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let identity = Identity::from_pem(
                    read_pem(cert, "client certificate")?,
                    read_pem(key, "client key")?,
                );
                config = config.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(format!(
                    "a client certificate needs both its certificate and its key file \
                     ({TLS_CERT_ENV} and {TLS_KEY_ENV})"
                ))
            }
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain);
        }
        Ok(config)
    }
}

/// Reads a PEM file, checking that it is one, so that a wrong path or file is reported with
/// its name rather than as a failed handshake later.
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the TLS {what} file {}: {e}", path.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!(
            "the TLS {what} file {} is not PEM (no -----BEGIN line)",
            path.display()
        ));
    }
    Ok(bytes)
}

/// `host` -> `host:2379`; anything with a port, or a URL, is kept.
fn with_default_port(address: &str) -> String {
    let authority = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address)
        .trim_end_matches('/');
    let has_port = match authority.rsplit_once(':') {
        // `[::1]:2379` has one, `[::1]` and `::1` do not.
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        return address.trim_end_matches('/').to_string();
    }
    let host = if authority.contains(':') && !authority.starts_with('[') {
        format!("[{authority}]")
    } else {
        authority.to_string()
    };
    format!("{}{host}:{DEFAULT_PORT}", scheme_of(address))
}

fn scheme_of(address: &str) -> &str {
    if address.starts_with("https://") {
        "https://"
    } else if address.starts_with("http://") {
        "http://"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> EtcdOptions {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EtcdOptions::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_a_local_etcd() {
        let o = EtcdOptions::default();
        assert_eq!(o.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(o.prefix, "/micro/registry/");
        assert_eq!(o.user, None);
        assert_eq!(o.tls, None);
        assert_eq!(env(&[]), o);
    }

    #[test]
    fn addresses_are_split_and_get_the_default_port() {
        let o = EtcdOptions::from_address(" 10.0.0.1:2379, etcd-2 ,,https://etcd-3/ ,[::1],::1");
        assert_eq!(
            o.endpoints,
            [
                "10.0.0.1:2379",
                "etcd-2:2379",
                "https://etcd-3:2379",
                "[::1]:2379",
                "[::1]:2379"
            ]
        );
        assert_eq!(
            EtcdOptions::from_address("http://127.0.0.1:23790").endpoints,
            ["http://127.0.0.1:23790"]
        );
        assert_eq!(
            EtcdOptions::from_address(" , ").endpoints,
            EtcdOptions::default().endpoints
        );
        assert_eq!(
            EtcdOptions::from_address("[::1]:2380").endpoints_label(),
            "[::1]:2380"
        );
    }

    #[test]
    fn environment_is_read() {
        let o = env(&[
            (ADDRESS_ENV, "a:1,b:2"),
            (USERNAME_ENV, "micro"),
            (PASSWORD_ENV, "secret"),
            (TLS_CA_ENV, "/etc/etcd/ca.pem"),
            (TLS_DOMAIN_ENV, "etcd.internal"),
        ]);
        assert_eq!(o.endpoints, ["a:1", "b:2"]);
        assert_eq!(o.user.as_deref(), Some("micro"));
        assert_eq!(o.password.as_deref(), Some("secret"));
        let tls = o.tls.expect("any MICRO_ETCD_TLS_* turns TLS on");
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/etcd/ca.pem")));
        assert_eq!(tls.domain.as_deref(), Some("etcd.internal"));
        assert_eq!(tls.cert_file, None);
    }

    #[test]
    fn go_micro_credential_variables_are_a_fallback() {
        let o = env(&[(GO_USERNAME_ENV, "go"), (GO_PASSWORD_ENV, "pw")]);
        assert_eq!(o.user.as_deref(), Some("go"));
        assert_eq!(o.password.as_deref(), Some("pw"));
        let o = env(&[
            (GO_USERNAME_ENV, "go"),
            (USERNAME_ENV, "rust"),
            (PASSWORD_ENV, "x"),
        ]);
        assert_eq!(o.user.as_deref(), Some("rust"));
    }

    #[test]
    fn debug_hides_the_password() {
        let text = format!("{:?}", EtcdOptions::default().with_user("u", "hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn prefix_gets_one_trailing_slash() {
        let o = EtcdOptions::default().with_prefix("/other//");
        assert_eq!(o.normalized_prefix(), "/other/");
        assert_eq!(EtcdOptions::default().normalized_prefix(), DEFAULT_PREFIX);
    }

    /// `ConnectOptions` keeps its fields private; its `Debug` output is what can be checked.
    fn connect_debug(o: &EtcdOptions) -> String {
        format!("{:?}", o.connect_options().expect("valid options"))
    }

    #[test]
    fn credentials_reach_the_client() {
        let plain = connect_debug(&EtcdOptions::default());
        assert!(plain.contains("user: None"), "{plain}");
        assert!(plain.contains("tls: None"), "{plain}");
        assert!(plain.contains("connect_timeout: Some(5s)"), "{plain}");
        assert!(plain.contains("require_leader: true"), "{plain}");
        let with_user = connect_debug(&EtcdOptions::default().with_user("root", "pw"));
        assert!(
            with_user.contains(r#"user: Some(("root", "pw"))"#),
            "{with_user}"
        );
        assert!(
            with_user.contains("refresh_expired_token: true"),
            "{with_user}"
        );
        let err = EtcdOptions {
            password: Some("pw".into()),
            ..EtcdOptions::default()
        }
        .connect_options()
        .expect_err("a password without a user");
        assert!(err.contains(USERNAME_ENV), "{err}");
    }

    fn pem_dir() -> (tempfile_dir::Dir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile_dir::Dir::new();
        let ca = dir.file(
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let cert = dir.file(
            "client.pem",
            "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n",
        );
        let key = dir.file(
            "client.key",
            "-----BEGIN PRIVATE KEY-----\nMIID\n-----END PRIVATE KEY-----\n",
        );
        (dir, ca, cert, key)
    }

    /// A directory under the system temp dir, removed on drop (no dependency for three files).
    mod tempfile_dir {
        use std::path::PathBuf;

        pub(super) struct Dir(PathBuf);

        impl Dir {
            pub(super) fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "micro-etcd-options-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&path).expect("create a temp dir");
                Dir(path)
            }

            pub(super) fn file(&self, name: &str, text: &str) -> PathBuf {
                let path = self.0.join(name);
                std::fs::write(&path, text).expect("write a temp file");
                path
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn tls_files_reach_the_client() {
        let (_dir, ca, cert, key) = pem_dir();
        let tls = EtcdTls::with_ca(&ca)
            .with_client_cert(&cert, &key)
            .with_domain("etcd.internal");
        let text = connect_debug(&EtcdOptions::default().with_tls(tls));
        assert!(text.contains("tls: Some("), "{text}");
        assert!(text.contains("etcd.internal"), "{text}");
        assert!(text.contains("identity: Some("), "{text}");
        // The CA's PEM text is carried as is.
        assert!(
            text.contains("MIIB") || text.contains("77, 73, 73, 66"),
            "{text}"
        );
    }

    #[test]
    fn tls_mistakes_are_named() {
        let (_dir, ca, cert, _key) = pem_dir();
        let missing = EtcdOptions::default()
            .with_tls(EtcdTls::with_ca("/nonexistent/ca.pem"))
            .connect_options()
            .expect_err("a missing CA file");
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
        let half = EtcdOptions::default()
            .with_tls(EtcdTls {
                cert_file: Some(cert.clone()),
                ..EtcdTls::with_ca(&ca)
            })
            .connect_options()
            .expect_err("a certificate without its key");
        assert!(half.contains(TLS_KEY_ENV), "{half}");
        let not_pem = EtcdOptions::default()
            .with_tls(EtcdTls::with_ca("/etc/hostname"))
            .connect_options();
        if std::path::Path::new("/etc/hostname").exists() {
            assert!(not_pem.expect_err("not PEM").contains("not PEM"));
        }
        let plain = EtcdOptions::from_address("http://127.0.0.1:2379")
            .with_tls(EtcdTls::with_ca(&ca))
            .connect_options()
            .expect_err("TLS to an http:// endpoint");
        assert!(plain.contains("http://127.0.0.1:2379"), "{plain}");
    }

    #[test]
    fn https_endpoints_turn_tls_on() {
        let text = connect_debug(&EtcdOptions::from_address("https://etcd:2379"));
        assert!(text.contains("tls: Some("), "{text}");
    }
}
