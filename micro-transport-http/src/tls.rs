//! TLS on rustls with the `ring` provider: [`TlsOptions`] from code or `MICRO_TLS_*`, the
//! rustls configurations built from them, the client's plain-or-TLS connection, and handshake
//! failures turned into errors a person can act on.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use micro_core::{Error, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::ID;

/// The PEM certificate chain of this process: the server's, and the client's when asked.
pub(crate) const CERT_ENV: &str = "MICRO_TLS_CERT";
/// The PEM private key of [`CERT_ENV`]'s certificate.
pub(crate) const KEY_ENV: &str = "MICRO_TLS_KEY";
/// The PEM CA bundle: the clients a server requires, the servers a client trusts.
pub(crate) const CA_ENV: &str = "MICRO_TLS_CA";

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// TLS settings of [`HttpTransport`](crate::HttpTransport), for both its sides.
///
/// - With a certificate and key ([`with_identity_files`](Self::with_identity_files)), the
///   server speaks TLS, and the client presents them when a server asks for a client
///   certificate. A server without them cannot listen.
/// - With a CA ([`with_ca_file`](Self::with_ca_file)), the server requires every client to
///   present a certificate signed by it (mutual TLS), and the client trusts only servers whose
///   certificate it signed. Without one, the server asks for no client certificate and the
///   client trusts the system's root certificates (read once per process with
///   `rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`).
///
/// Every PEM is read and checked when it is given, so a missing file, a file without the
/// expected PEM block or a key that does not belong to its certificate is a `400` right away,
/// not a failed handshake later. [`TlsOptions::from_env`] reads `MICRO_TLS_CERT`,
/// `MICRO_TLS_KEY` and `MICRO_TLS_CA`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    identity: Option<Arc<Identity>>,
    ca: Option<Arc<Authority>>,
    server_name: Option<String>,
}

/// A certificate chain and its private key.
#[derive(PartialEq, Eq)]
struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Where they came from, for error messages.
    origin: String,
}

/// The CA certificates to verify peers against.
#[derive(PartialEq, Eq)]
struct Authority {
    certs: Vec<CertificateDer<'static>>,
    origin: String,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself.
        f.debug_struct("TlsOptions")
            .field("identity", &self.identity.as_ref().map(|i| &i.origin))
            .field("ca", &self.ca.as_ref().map(|c| &c.origin))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Where a PEM came from, so that errors name the file and the variable.
#[derive(Clone, Copy)]
enum Source<'a> {
    Env(&'a str, &'a Path),
    File(&'a Path),
    Pem,
}

impl Source<'_> {
    /// "the {what} in /etc/tls/cert.pem (MICRO_TLS_CERT)".
    fn describe(self, what: &str) -> String {
        match self {
            Source::Env(var, path) => format!("the {what} in {} ({var})", path.display()),
            Source::File(path) => format!("the {what} in {}", path.display()),
            Source::Pem => format!("the {what} given as PEM"),
        }
    }

    fn read(self, what: &str, given: &[u8]) -> Result<Vec<u8>> {
        match self {
            Source::Env(_, path) | Source::File(path) => std::fs::read(path).map_err(|e| {
                Error::bad_request(ID, format!("cannot read {}: {e}", self.describe(what)))
            }),
            Source::Pem => Ok(given.to_vec()),
        }
    }
}

const CERT_WHAT: &str = "TLS certificate chain";
const KEY_WHAT: &str = "TLS private key";
const CA_WHAT: &str = "TLS CA bundle";

impl TlsOptions {
    /// No certificate, no CA: a client that trusts the system's roots; a server needs
    /// [`with_identity_files`](Self::with_identity_files) or
    /// [`with_identity_pem`](Self::with_identity_pem) too.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses the PEM certificate chain in `cert` (leaf first) and the PEM private key
    /// (PKCS#8, PKCS#1 or SEC1) in `key`.
    pub fn with_identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self> {
        self.identity(
            Source::File(cert.as_ref()),
            Source::File(key.as_ref()),
            &[],
            &[],
        )
    }

    /// Like [`with_identity_files`](Self::with_identity_files), with the PEM text itself.
    pub fn with_identity_pem(self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Result<Self> {
        self.identity(Source::Pem, Source::Pem, cert.as_ref(), key.as_ref())
    }

    /// Uses the PEM CA certificates in `ca`: a server requires client certificates signed by
    /// them, a client trusts only server certificates signed by them.
    pub fn with_ca_file(self, ca: impl AsRef<Path>) -> Result<Self> {
        self.authority(Source::File(ca.as_ref()), &[])
    }

    /// Like [`with_ca_file`](Self::with_ca_file), with the PEM text itself.
    pub fn with_ca_pem(self, ca: impl AsRef<[u8]>) -> Result<Self> {
        self.authority(Source::Pem, ca.as_ref())
    }

    /// The name the client checks servers' certificates against, instead of the host of the
    /// address it dials: for nodes registered by IP whose certificates name a DNS name.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if ServerName::try_from(name.as_str()).is_err() {
            return Err(Error::bad_request(
                ID,
                format!("{name:?} is not a DNS name or IP address to check certificates against"),
            ));
        }
        self.server_name = Some(name);
        Ok(self)
    }

    /// `None` when none of `MICRO_TLS_CERT`, `MICRO_TLS_KEY` and `MICRO_TLS_CA` is set (an
    /// empty value counts as unset); otherwise the options they name, each a path to a PEM
    /// file. The certificate and key go together: one without the other is an error.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let (cert, key, ca) = (var(CERT_ENV), var(KEY_ENV), var(CA_ENV));
        if cert.is_none() && key.is_none() && ca.is_none() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        match (&cert, &key) {
            (Some(cert), Some(key)) => {
                let cert = Source::Env(CERT_ENV, Path::new(cert));
                let key = Source::Env(KEY_ENV, Path::new(key));
                tls = tls.identity(cert, key, &[], &[])?;
            }
            (Some(_), None) | (None, Some(_)) => {
                let (set, unset) = if cert.is_some() {
                    (CERT_ENV, KEY_ENV)
                } else {
                    (KEY_ENV, CERT_ENV)
                };
                return Err(Error::bad_request(
                    ID,
                    format!(
                        "{set} is set but {unset} is not: TLS needs both the certificate chain \
                         ({CERT_ENV}) and its private key ({KEY_ENV})"
                    ),
                ));
            }
            (None, None) => {}
        }
        if let Some(ca) = &ca {
            tls = tls.authority(Source::Env(CA_ENV, Path::new(ca)), &[])?;
        }
        Ok(Some(tls))
    }

    /// Whether a certificate and key are set: needed to serve TLS.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether a CA is set: the server then requires client certificates, and the client
    /// trusts it instead of the system's roots.
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// The name set with [`with_server_name`](Self::with_server_name).
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    fn identity(
        mut self,
        cert_source: Source<'_>,
        key_source: Source<'_>,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self> {
        let certs = read_certs(cert_source, CERT_WHAT, cert_pem)?;
        let pem = key_source.read(KEY_WHAT, key_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            pem_error(
                key_source,
                KEY_WHAT,
                "PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
                e,
            )
        })?;
        // rustls checks that the key is usable and belongs to the leaf certificate.
        rustls::sign::CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider()).map_err(
            |e| {
                let (key, cert) = (
                    key_source.describe(KEY_WHAT),
                    cert_source.describe(CERT_WHAT),
                );
                let detail = match e {
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                        format!("{key} does not belong to {cert}: their public keys differ")
                    }
                    e => format!("{key} cannot be used with {cert}: {e}"),
                };
                Error::bad_request(ID, detail)
            },
        )?;
        let origin = match cert_source {
            Source::Pem => "the certificate given as PEM".to_string(),
            _ => cert_source.describe("certificate"),
        };
        self.identity = Some(Arc::new(Identity { certs, key, origin }));
        Ok(self)
    }

    fn authority(mut self, source: Source<'_>, given: &[u8]) -> Result<Self> {
        let certs = read_certs(source, CA_WHAT, given)?;
        roots(&certs, &source.describe(CA_WHAT))?;
        self.ca = Some(Arc::new(Authority {
            certs,
            origin: source.describe("CA"),
        }));
        Ok(self)
    }

    /// The configuration of a TLS server listening on `addr`: ALPN `h2` and `http/1.1`,
    /// client certificates required when a CA is set.
    pub(crate) fn server_config(&self, addr: &str) -> Result<Arc<ServerConfig>> {
        let Some(identity) = &self.identity else {
            return Err(Error::bad_request(
                ID,
                format!(
                    "cannot serve TLS on {addr} without a certificate: set {CERT_ENV} and \
                     {KEY_ENV}, or call TlsOptions::with_identity_files"
                ),
            ));
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error(addr, &e))?;
        let builder = match &self.ca {
            Some(ca) => {
                let roots = roots(&ca.certs, &ca.origin)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| setup_error(addr, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(identity.certs.clone(), identity.key.clone_key())
            .map_err(|e| setup_error(addr, &e))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side: what it trusts, what it presents, and a configuration per ALPN.
    pub(crate) fn client(&self) -> Result<ClientTls> {
        let (roots, trust) = match &self.ca {
            Some(ca) => (roots(&ca.certs, &ca.origin)?, ca.origin.clone()),
            None => (
                native_roots(),
                "the system's root certificates (MICRO_TLS_CA is not set)".to_string(),
            ),
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error("the client", &e))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some(identity) => builder
                .with_client_auth_cert(identity.certs.clone(), identity.key.clone_key())
                .map_err(|e| setup_error("the client", &e))?,
            None => builder.with_no_client_auth(),
        };
        // Unary exchanges stay on HTTP/1.1 as in plaintext; streams need HTTP/2.
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        let mut h2 = config.clone();
        h2.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(ClientTls {
            http1: TlsConnector::from(Arc::new(config)),
            h2: TlsConnector::from(Arc::new(h2)),
            server_name: self.server_name.clone(),
            trust,
            identity: self.identity.as_ref().map(|i| i.origin.clone()),
        })
    }
}

/// The `ring` provider, chosen explicitly so that a process where another crate enables
/// `aws-lc-rs` (or installs a default provider) still builds these configurations.
fn provider() -> Arc<CryptoProvider> {
    static RING: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    RING.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's root certificates, read once per process.
fn native_roots() -> Arc<RootCertStore> {
    static NATIVE: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    NATIVE
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's root certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    ignored,
                    "no system root certificates found: TLS clients will trust no server \
                     until {CA_ENV} is set"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

fn read_certs(
    source: Source<'_>,
    what: &str,
    given: &[u8],
) -> Result<Vec<CertificateDer<'static>>> {
    let pem = source.read(what, given)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_error(source, what, "PEM certificate", e))?;
    if certs.is_empty() {
        return Err(pem_error(
            source,
            what,
            "PEM certificate",
            pem::Error::NoItemsFound,
        ));
    }
    Ok(certs)
}

fn roots(certs: &[CertificateDer<'static>], origin: &str) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).map_err(|e| {
            Error::bad_request(
                ID,
                format!("{origin} holds an unusable CA certificate: {e}"),
            )
        })?;
    }
    Ok(Arc::new(roots))
}

fn pem_error(source: Source<'_>, what: &str, expected: &str, e: pem::Error) -> Error {
    let detail = match e {
        pem::Error::NoItemsFound => {
            format!("{} holds no {expected}", source.describe(what))
        }
        e => format!("{} is not valid PEM: {e}", source.describe(what)),
    };
    Error::bad_request(ID, detail)
}

fn setup_error(whose: &str, e: &dyn std::error::Error) -> Error {
    Error::internal(ID, format!("setting up TLS for {whose}: {e}"))
}

/// What the client side of a transport with TLS uses to dial.
pub(crate) struct ClientTls {
    http1: TlsConnector,
    h2: TlsConnector,
    server_name: Option<String>,
    /// What the client trusts, for "not trusted" errors.
    trust: String,
    /// Where the client certificate came from, if there is one.
    identity: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("trust", &self.trust)
            .field("identity", &self.identity)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Runs the TLS handshake on `tcp`, connected to `addr` whose host is `host`, offering
    /// ALPN `h2` for streams and `http/1.1` otherwise. The caller bounds it in time.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        addr: &str,
        host: &str,
        h2: bool,
    ) -> Result<TlsStream<TcpStream>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        // `Uri::host` keeps the brackets of an IPv6 literal.
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(name.to_string()).map_err(|_| {
            Error::bad_request(
                ID,
                format!("cannot check the certificate of {addr}: {name:?} is not a DNS name or IP address"),
            )
        })?;
        let connector = if h2 { &self.h2 } else { &self.http1 };
        connector.connect(name, tcp).await.map_err(|e| {
            Error::internal(
                ID,
                format!("connect to {addr}: {}", self.explain_io(addr, &e)),
            )
        })
    }

    /// The error for a handshake with `addr` that did not finish within `limit`.
    pub(crate) fn handshake_timeout(&self, addr: &str, limit: std::time::Duration) -> Error {
        Error::internal(
            ID,
            format!(
                "connect to {addr}: the TLS handshake did not finish within {limit:?}: is {addr} \
                 serving TLS?"
            ),
        )
    }

    /// Why an I/O error during or after the handshake happened, in words.
    fn explain_io(&self, addr: &str, e: &io::Error) -> String {
        if let Some(tls) = rustls_error_of(e) {
            return self.explain(addr, tls);
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(
                "TLS handshake failed: {addr} closed the connection ({e}); is it a plaintext \
                 port, or did it refuse our certificate?"
            ),
            _ => format!("TLS handshake failed: {e}"),
        }
    }

    /// Why rustls gave up, in words.
    pub(crate) fn explain(&self, addr: &str, e: &rustls::Error) -> String {
        use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
        match e {
            Tls::InvalidCertificate(Cert::UnknownIssuer) => format!(
                "TLS handshake failed: the certificate of {addr} is not trusted (unknown issuer): \
                 it is not signed by {}; set {CA_ENV} to the CA that signed it",
                self.trust
            ),
            Tls::InvalidCertificate(
                Cert::NotValidForName | Cert::NotValidForNameContext { .. },
            ) => {
                format!(
                    "TLS handshake failed: the certificate of {addr} is not valid for the name \
                     dialled ({e}); dial a name it holds, or set TlsOptions::with_server_name"
                )
            }
            Tls::InvalidCertificate(_) => {
                format!("TLS handshake failed: the certificate of {addr} was rejected: {e}")
            }
            Tls::AlertReceived(Alert::CertificateRequired) => format!(
                "{addr} requires a client certificate (mutual TLS): set {CERT_ENV} and {KEY_ENV} \
                 to a certificate signed by its CA"
            ),
            Tls::AlertReceived(
                Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateUnknown
                | Alert::UnsupportedCertificate
                | Alert::CertificateExpired
                | Alert::AccessDenied
                | Alert::HandshakeFailure,
            ) => match &self.identity {
                Some(ours) => format!(
                    "{addr} refused our client certificate ({ours}): {e}; it must be signed by the \
                     CA the server requires"
                ),
                None => format!(
                    "{addr} refused the TLS handshake ({e}): it may require a client certificate \
                     ({CERT_ENV}, {KEY_ENV})"
                ),
            },
            Tls::InvalidMessage(_)
            | Tls::InappropriateMessage { .. }
            | Tls::InappropriateHandshakeMessage { .. } => format!(
                "TLS handshake failed: {addr} does not speak TLS ({e}); is it a plaintext port?"
            ),
            _ => format!("TLS with {addr} failed: {e}"),
        }
    }
}

/// The rustls error `e` carries, as tokio-rustls wraps them in `io::Error`s.
pub(crate) fn rustls_error_of(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A client connection: plain TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsConn>),
}

/// A client TLS connection that keeps the first rustls error it met.
///
/// hyper's HTTP/2 client turns I/O errors into text, so a stream could not otherwise tell a
/// refused client certificate from any other failure.
#[derive(Debug)]
pub(crate) struct TlsConn {
    stream: TlsStream<TcpStream>,
    failure: Arc<OnceLock<rustls::Error>>,
}

impl TlsConn {
    /// Wraps `stream`; the second half reports its first rustls error once there is one.
    pub(crate) fn new(stream: TlsStream<TcpStream>) -> (Self, Arc<OnceLock<rustls::Error>>) {
        let failure = Arc::new(OnceLock::new());
        let conn = TlsConn {
            stream,
            failure: failure.clone(),
        };
        (conn, failure)
    }

    fn note<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &polled {
            if let Some(tls) = rustls_error_of(e) {
                let _ = self.failure.set(tls.clone());
            }
        }
        polled
    }
}

impl Connection for ClientStream {
    fn connected(&self) -> Connected {
        match self {
            ClientStream::Plain(tcp) => tcp.connected(),
            ClientStream::Tls(tls) => {
                let (tcp, session) = tls.stream.get_ref();
                if session.alpn_protocol() == Some(ALPN_H2) {
                    tcp.connected().negotiated_h2()
                } else {
                    tcp.connected()
                }
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => {
                let polled = Pin::new(&mut s.stream).poll_read(cx, buf);
                s.note(polled)
            }
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => {
                let polled = Pin::new(&mut s.stream).poll_write(cx, buf);
                s.note(polled)
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientStream::Tls(s) => {
                let polled = Pin::new(&mut s.stream).poll_write_vectored(cx, bufs);
                s.note(polled)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => {
                let polled = Pin::new(&mut s.stream).poll_flush(cx);
                s.note(polled)
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            set.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn unset_or_empty_variables_mean_plaintext() {
        let none = TlsOptions::from_vars(vars(&[])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(none, None);
        let empty = [(CERT_ENV, ""), (KEY_ENV, " "), (CA_ENV, "")];
        let empty = TlsOptions::from_vars(vars(&empty)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(empty, None);
    }

    #[test]
    fn a_key_without_its_certificate_is_an_error() {
        let e = TlsOptions::from_vars(vars(&[(KEY_ENV, "/etc/tls/key.pem")]))
            .err()
            .unwrap_or_default();
        assert_eq!(e.code, 400);
        assert!(
            e.detail
                .starts_with("MICRO_TLS_KEY is set but MICRO_TLS_CERT is not"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_file_names_the_variable_and_the_path() {
        let e = TlsOptions::from_vars(vars(&[(CA_ENV, "/nonexistent/ca.pem")]))
            .err()
            .unwrap_or_default();
        assert_eq!(e.code, 400);
        assert!(
            e.detail.starts_with(
                "cannot read the TLS CA bundle in /nonexistent/ca.pem (MICRO_TLS_CA): "
            ),
            "{e}"
        );
    }
}
