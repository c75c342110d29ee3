//! TLS on rustls (the `ring` provider): [`TlsOptions`] from code or `MICRO_TLS_*`, the rustls
//! configurations built from them, and handshake failures explained so a person can act.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use micro_core::{Error, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::ID;

/// The PEM certificate chain this process presents.
pub(crate) const CERT_ENV: &str = "MICRO_TLS_CERT";
/// The PEM private key of [`CERT_ENV`]'s certificate.
pub(crate) const KEY_ENV: &str = "MICRO_TLS_KEY";
/// The PEM CA bundle: the clients a server accepts, the servers a client trusts.
pub(crate) const CA_ENV: &str = "MICRO_TLS_CA";

/// TLS settings of [`GrpcTransport`](crate::GrpcTransport), for both its sides. With TLS the
/// server speaks only TLS on its port and the client dials every address with TLS.
///
/// | set | server side | client side |
/// |---|---|---|
/// | certificate + key (`MICRO_TLS_CERT`, `MICRO_TLS_KEY`) | its certificate (required to listen) | presented when a server asks for a client certificate (mutual TLS) |
/// | CA (`MICRO_TLS_CA`) | every client must present a certificate it signed (mutual TLS) | trusts only servers whose certificate it signed |
/// | no CA | asks for no client certificate | trusts the system's root certificates |
///
/// The client checks the server's certificate against the host it dials (a DNS name or IP
/// address, so certificates for `127.0.0.1` need an IP SAN), or against
/// [`with_server_name`](Self::with_server_name). Every PEM is read and checked when it is
/// given, so a missing file or a key that does not fit its certificate fails at start-up,
/// not at the first handshake.
#[derive(Clone, Default)]
pub struct TlsOptions {
    identity: Option<Arc<Identity>>,
    ca: Option<Arc<Authority>>,
    server_name: Option<String>,
}

struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    origin: String,
}

struct Authority {
    certs: Vec<CertificateDer<'static>>,
    origin: String,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Where the PEMs came from, never the key.
        f.debug_struct("TlsOptions")
            .field("identity", &self.identity.as_ref().map(|i| &i.origin))
            .field("ca", &self.ca.as_ref().map(|c| &c.origin))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl PartialEq for TlsOptions {
    fn eq(&self, other: &Self) -> bool {
        let identity = match (&self.identity, &other.identity) {
            (Some(a), Some(b)) => a.certs == b.certs && a.key.secret_der() == b.key.secret_der(),
            (None, None) => true,
            _ => false,
        };
        let ca = match (&self.ca, &other.ca) {
            (Some(a), Some(b)) => a.certs == b.certs,
            (None, None) => true,
            _ => false,
        };
        identity && ca && self.server_name == other.server_name
    }
}

impl Eq for TlsOptions {}

impl TlsOptions {
    /// TLS with neither certificate nor CA yet: a client that trusts the system roots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `MICRO_TLS_CERT`, `MICRO_TLS_KEY` and `MICRO_TLS_CA` (paths of PEM files):
    /// `None` when none is set. The certificate and key go together.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let (cert, key, ca) = (var(CERT_ENV), var(KEY_ENV), var(CA_ENV));
        if cert.is_none() && key.is_none() && ca.is_none() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read(Path::new(&cert), &format!("{CERT_ENV}={cert}"))?;
                let key_pem = read(Path::new(&key), &format!("{KEY_ENV}={key}"))?;
                tls = tls.identity(
                    &cert_pem,
                    &key_pem,
                    format!("{CERT_ENV}={cert} and {KEY_ENV}={key}"),
                )?;
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::bad_request(
                    ID,
                    format!("{CERT_ENV} and {KEY_ENV} go together: set both or neither"),
                ))
            }
        }
        if let Some(ca) = ca {
            let pem = read(Path::new(&ca), &format!("{CA_ENV}={ca}"))?;
            tls = tls.authority(&pem, format!("{CA_ENV}={ca}"))?;
        }
        Ok(Some(tls))
    }

    /// Uses this certificate chain and private key (PEM): the server's certificate, and the
    /// client's when a server asks for one.
    pub fn with_identity_pem(self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Self> {
        self.identity(
            cert.as_ref(),
            key.as_ref(),
            "the certificate given as PEM".into(),
        )
    }

    /// Like [`with_identity_pem`](Self::with_identity_pem), reading PEM files.
    pub fn with_identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = read(cert, &cert.display().to_string())?;
        let key_pem = read(key, &key.display().to_string())?;
        let origin = format!("{} and {}", cert.display(), key.display());
        self.identity(&cert_pem, &key_pem, origin)
    }

    /// Uses these CA certificates (PEM): a server then requires client certificates they
    /// signed, a client trusts only servers they signed.
    pub fn with_ca_pem(self, ca: impl AsRef<[u8]>) -> Result<Self> {
        self.authority(ca.as_ref(), "the CA given as PEM".into())
    }

    /// Like [`with_ca_pem`](Self::with_ca_pem), reading a PEM file.
    pub fn with_ca_file(self, ca: impl AsRef<Path>) -> Result<Self> {
        let ca = ca.as_ref();
        let pem = read(ca, &ca.display().to_string())?;
        self.authority(&pem, ca.display().to_string())
    }

    /// Checks every server's certificate against `name` instead of the host dialled (for
    /// nodes registered by IP address whose certificates name a DNS name).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        ServerName::try_from(name.clone()).map_err(|_| {
            Error::bad_request(
                ID,
                format!("{name:?} is not a DNS name or IP address to check certificates against"),
            )
        })?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Whether a certificate and key are set.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether a CA is set.
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    fn identity(mut self, cert: &[u8], key: &[u8], origin: String) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(cert)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&origin, "certificate", &e))?;
        if certs.is_empty() {
            return Err(Error::bad_request(
                ID,
                format!("{origin}: no CERTIFICATE block in the certificate PEM"),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| pem_error(&origin, "private key", &e))?;
        // Building a server configuration checks that the key belongs to the certificate.
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error("the server", &e))?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| {
                Error::bad_request(ID, format!("{origin}: unusable certificate and key: {e}"))
            })?;
        self.identity = Some(Arc::new(Identity { certs, key, origin }));
        Ok(self)
    }

    fn authority(mut self, pem: &[u8], origin: String) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&origin, "CA", &e))?;
        if certs.is_empty() {
            return Err(Error::bad_request(
                ID,
                format!("{origin}: no CERTIFICATE block in the CA PEM"),
            ));
        }
        roots(&certs, &origin)?;
        self.ca = Some(Arc::new(Authority { certs, origin }));
        Ok(self)
    }

    /// The server side: this certificate, and client certificates required when a CA is set.
    pub(crate) fn server_config(&self, addr: &str) -> Result<Arc<ServerConfig>> {
        let identity = self.identity.as_ref().ok_or_else(|| {
            Error::bad_request(
                ID,
                format!(
                    "cannot serve gRPC with TLS on {addr} without a certificate: set {CERT_ENV} \
                     and {KEY_ENV} (or TlsOptions::with_identity_*)"
                ),
            )
        })?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error("the server", &e))?;
        let builder = match &self.ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    roots(&ca.certs, &ca.origin)?,
                    provider(),
                )
                .build()
                .map_err(|e| Error::bad_request(ID, format!("{}: unusable CA: {e}", ca.origin)))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(identity.certs.clone(), identity.key.clone_key())
            .map_err(|e| setup_error("the server", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side: trusts the CA (or the system roots), presents the certificate if any.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let roots = match &self.ca {
            Some(ca) => roots(&ca.certs, &ca.origin)?,
            None => native_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error("the client", &e))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
                .map_err(|e| setup_error("the client", &e))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The name to check `addr`'s certificate against.
    pub(crate) fn server_name_for(&self, addr: &str) -> Result<ServerName<'static>> {
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => host_of(addr),
        };
        ServerName::try_from(host.to_string()).map_err(|_| {
            Error::bad_request(
                ID,
                format!(
                    "cannot check the certificate of {addr}: {host:?} is not a DNS name or IP \
                     address (set a server name with TlsOptions::with_server_name)"
                ),
            )
        })
    }

    /// What the client trusts, for messages.
    fn trust(&self) -> String {
        match &self.ca {
            Some(ca) => format!("the CA in {}", ca.origin),
            None => format!("the system roots, as {CA_ENV} is not set"),
        }
    }

    fn certificate_required(&self, addr: &str) -> String {
        format!(
            "{addr} requires a client certificate signed by its CA and this client has none: \
             set {CERT_ENV} and {KEY_ENV}"
        )
    }

    fn certificate_refused(&self, addr: &str, alert: &str) -> String {
        match &self.identity {
            Some(id) => format!(
                "{addr} rejected this client's certificate ({}): {alert}; it must be signed by \
                 the CA the server trusts",
                id.origin
            ),
            None => format!(
                "{addr} requires a client certificate signed by its CA ({alert}): set {CERT_ENV} \
                 and {KEY_ENV}"
            ),
        }
    }

    /// A client-side TLS failure talking to `addr`, explained; `None` when `err`'s chain holds
    /// no TLS error.
    pub(crate) fn explain(
        &self,
        addr: &str,
        err: &(dyn std::error::Error + 'static),
    ) -> Option<String> {
        use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
        if let Some(e) =
            find_io_kind(err, io::ErrorKind::UnexpectedEof).filter(|_| rustls_error(err).is_none())
        {
            return Some(format!(
                "TLS handshake with {addr} failed: the connection closed ({e}); is {addr} a \
                 plaintext port, or does it refuse this client?"
            ));
        }
        let Some(e) = rustls_error(err) else {
            // h2 keeps the I/O error of a broken connection to itself and shows only its
            // text, so alerts that arrive after the handshake (TLS 1.3 reports a refused
            // client certificate on the first read) are known by name.
            let text = chain_text(err);
            if text.contains("fatal alert: CertificateRequired") {
                return Some(self.certificate_required(addr));
            }
            let refused = [
                "BadCertificate",
                "UnknownCA",
                "CertificateUnknown",
                "DecryptError",
            ];
            if let Some(alert) = refused
                .iter()
                .find(|a| text.contains(&format!("fatal alert: {a}")))
            {
                return Some(
                    self.certificate_refused(addr, &format!("received fatal alert: {alert}")),
                );
            }
            return None;
        };
        Some(match e {
            Tls::InvalidCertificate(Cert::UnknownIssuer) => format!(
                "TLS handshake with {addr} failed: its certificate is not signed by a CA this \
                 client trusts ({}); set {CA_ENV} to the CA that signed it",
                self.trust()
            ),
            Tls::InvalidCertificate(Cert::NotValidForName)
            | Tls::InvalidCertificate(Cert::NotValidForNameContext { .. }) => format!(
                "TLS handshake with {addr} failed: its certificate does not name {:?} ({e}); \
                 dial the name it was issued for or set a server name",
                self.server_name.as_deref().unwrap_or(host_of(addr))
            ),
            Tls::InvalidCertificate(_) => {
                format!("TLS handshake with {addr} failed: its certificate was rejected: {e}")
            }
            Tls::AlertReceived(Alert::CertificateRequired) => self.certificate_required(addr),
            Tls::AlertReceived(
                Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateUnknown
                | Alert::DecryptError,
            ) => self.certificate_refused(addr, &e.to_string()),
            Tls::InvalidMessage(_)
            | Tls::InappropriateMessage { .. }
            | Tls::InappropriateHandshakeMessage { .. } => format!(
                "TLS handshake with {addr} failed: {addr} does not speak TLS ({e}); is it a \
                 plaintext port? Without MICRO_TLS_* set the client dials in plaintext"
            ),
            _ => format!("TLS with {addr} failed: {e}"),
        })
    }
}

/// Every message of an error's chain, for matching what only shows as text.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let mut next = Some(err);
    while let Some(e) = next {
        text.push_str(&e.to_string());
        text.push('\n');
        next = e.source();
    }
    text
}

/// The `host` of `host:port` (without IPv6 brackets).
fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

fn find_io_kind<'a>(
    err: &'a (dyn std::error::Error + 'static),
    kind: io::ErrorKind,
) -> Option<&'a io::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>().filter(|io| io.kind() == kind) {
            return Some(io);
        }
        next = e.source();
    }
    None
}

/// The server-side reason a TLS handshake failed, for logs.
pub(crate) fn explain_server_handshake(peer: &str, e: &io::Error) -> String {
    match rustls_error(e) {
        Some(rustls::Error::NoCertificatesPresented) => format!(
            "TLS client {peer} presented no certificate, and {CA_ENV} makes this server require one"
        ),
        Some(rustls::Error::InvalidCertificate(c)) => format!(
            "TLS client {peer} presented a certificate the CA in {CA_ENV} did not sign or that is not valid: {c:?}"
        ),
        Some(other) => format!("TLS handshake with {peer} failed: {other}"),
        None => format!("TLS handshake with {peer} failed: {e}"),
    }
}

fn read(path: &Path, label: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::bad_request(ID, format!("cannot read {label}: {e}")))
}

fn pem_error(origin: &str, what: &str, e: &rustls::pki_types::pem::Error) -> Error {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            Error::bad_request(ID, format!("{origin}: no {what} found in the PEM"))
        }
        e => Error::bad_request(ID, format!("{origin}: the {what} PEM is not valid: {e}")),
    }
}

fn setup_error(side: &str, e: &rustls::Error) -> Error {
    Error::internal(ID, format!("setting up TLS for {side}: {e}"))
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn roots(certs: &[CertificateDer<'static>], origin: &str) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert.clone()).map_err(|e| {
            Error::bad_request(ID, format!("{origin}: unusable CA certificate: {e}"))
        })?;
    }
    Ok(Arc::new(store))
}

/// The system's root certificates, read once per process.
fn native_roots() -> Result<Arc<RootCertStore>> {
    static ROOTS: OnceLock<std::result::Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(format!(
                    "no system root certificates found{why}; set {CA_ENV} to the CA that signed \
                     the servers' certificates"
                ));
            }
            Ok(Arc::new(store))
        })
        .clone()
        .map_err(|detail| Error::internal(ID, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_addresses() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of("svc.local:1"), "svc.local");
        assert_eq!(host_of("svc.local"), "svc.local");
    }

    #[test]
    fn certificate_and_key_go_together() {
        let e = TlsOptions::from_vars(|n| (n == CERT_ENV).then(|| "/tmp/c.pem".to_string()))
            .err()
            .unwrap_or_default();
        assert!(e.detail.contains("go together"), "{e}");
        assert_eq!(TlsOptions::from_vars(|_| None).ok(), Some(None));
    }

    #[test]
    fn bad_pem_is_refused_early() {
        let e = TlsOptions::new()
            .with_ca_pem("not a pem")
            .err()
            .unwrap_or_default();
        assert_eq!(e.code, 400, "{e}");
        let e = TlsOptions::new()
            .with_identity_pem(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "",
            )
            .err()
            .unwrap_or_default();
        assert_eq!(e.code, 400, "{e}");
        assert!(TlsOptions::new().with_server_name("not a name!").is_err());
        let tls = TlsOptions::new()
            .with_server_name("svc.example")
            .unwrap_or_default();
        assert_eq!(
            tls.server_name_for("10.0.0.1:1").ok(),
            ServerName::try_from("svc.example").ok()
        );
        assert!(TlsOptions::new()
            .server_config("x")
            .is_err_and(|e| e.detail.contains(CERT_ENV)));
    }
}
