//! TLS with rustls: the acceptor for clients and the connector to PostgreSQL, built from
//! PgBouncer's client_tls_* / server_tls_* settings, swapped atomically on RELOAD.

use crate::config::General;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, RwLock};

/// `*_tls_sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    pub fn parse(v: &str) -> Mode {
        match v {
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            _ => Mode::Disable,
        }
    }

    /// TLS is mandatory (require and stricter).
    pub fn required(self) -> bool {
        matches!(self, Mode::Require | Mode::VerifyCa | Mode::VerifyFull)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting}: cannot read {path}: {source}")]
    File {
        setting: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{setting}: {msg}")]
    Bad { setting: &'static str, msg: String },
}

/// Pooler side facing clients.
pub struct ClientSide {
    pub mode: Mode,
    /// None when TLS is off for clients (disable, or no certificate configured).
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
}

/// Pooler side facing PostgreSQL.
pub struct ServerSide {
    pub mode: Mode,
    pub config: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ServerSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerSide({:?})", self.mode)
    }
}

/// The TLS configuration in force; RELOAD replaces it as a whole.
pub struct TlsState {
    client: RwLock<Arc<ClientSide>>,
    server: RwLock<Arc<ServerSide>>,
}

impl TlsState {
    pub fn new(g: &General) -> Result<TlsState, TlsError> {
        Ok(TlsState {
            client: RwLock::new(Arc::new(client_side(g)?)),
            server: RwLock::new(Arc::new(server_side(g)?)),
        })
    }

    pub fn client(&self) -> Arc<ClientSide> {
        self.client.read().unwrap().clone()
    }

    pub fn server(&self) -> Arc<ServerSide> {
        self.server.read().unwrap().clone()
    }

    /// RELOAD: build both sides from `g`; on any error keep the old ones and say why.
    pub fn reload(&self, g: &General) -> Result<(), TlsError> {
        let c = client_side(g)?;
        let s = server_side(g)?;
        *self.client.write().unwrap() = Arc::new(c);
        *self.server.write().unwrap() = Arc::new(s);
        Ok(())
    }
}

fn setting<'a>(g: &'a General, name: &'static str) -> Option<&'a str> {
    g.tls
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn certs(
    g: &General,
    name: &'static str,
) -> Result<Option<Vec<CertificateDer<'static>>>, TlsError> {
    let Some(path) = setting(g, name) else {
        return Ok(None);
    };
    let data = std::fs::read(path).map_err(|e| TlsError::File {
        setting: name,
        path: path.into(),
        source: e,
    })?;
    let list: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Bad {
            setting: name,
            msg: format!("{path}: {e}"),
        })?;
    if list.is_empty() {
        return Err(TlsError::Bad {
            setting: name,
            msg: format!("{path}: no certificate found"),
        });
    }
    Ok(Some(list))
}

fn key(g: &General, name: &'static str) -> Result<Option<PrivateKeyDer<'static>>, TlsError> {
    let Some(path) = setting(g, name) else {
        return Ok(None);
    };
    let data = std::fs::read(path).map_err(|e| TlsError::File {
        setting: name,
        path: path.into(),
        source: e,
    })?;
    PrivateKeyDer::from_pem_slice(&data)
        .map(Some)
        .map_err(|e| TlsError::Bad {
            setting: name,
            msg: format!("{path}: {e}"),
        })
}

fn roots(
    certs: Vec<CertificateDer<'static>>,
    name: &'static str,
) -> Result<rustls::RootCertStore, TlsError> {
    let mut r = rustls::RootCertStore::empty();
    for c in certs {
        r.add(c).map_err(|e| TlsError::Bad {
            setting: name,
            msg: e.to_string(),
        })?;
    }
    Ok(r)
}

/// rustls speaks TLS 1.2 and 1.3 only; PgBouncer's `*_tls_protocols` list maps onto those.
fn versions(g: &General, name: &'static str) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let v = setting(g, name).unwrap_or("secure").to_ascii_lowercase();
    let mut out = Vec::new();
    for p in v.split(',').map(str::trim) {
        match p {
            "all" | "secure" | "legacy" => {
                out.push(&rustls::version::TLS12);
                out.push(&rustls::version::TLS13);
            }
            "tlsv1.2" => out.push(&rustls::version::TLS12),
            "tlsv1.3" => out.push(&rustls::version::TLS13),
            "tlsv1.0" | "tlsv1.1" => {
                tracing::warn!("{name}: {p} is not supported (rustls speaks TLS 1.2 and 1.3)")
            }
            other => tracing::warn!("{name}: unknown protocol {other:?} ignored"),
        }
    }
    out.dedup_by(|a, b| a.version == b.version);
    if out.is_empty() {
        tracing::warn!("{name}: no usable protocol, using TLS 1.2 and 1.3");
        out = vec![&rustls::version::TLS12, &rustls::version::TLS13];
    }
    out
}

/// OpenSSL cipher strings cannot be honoured: rustls has its own fixed, secure suites.
fn check_ciphers(g: &General) {
    for name in [
        "client_tls_ciphers",
        "server_tls_ciphers",
        "client_tls13_ciphers",
        "server_tls13_ciphers",
    ] {
        if let Some(v) = setting(g, name)
            && !matches!(
                v.to_ascii_lowercase().as_str(),
                "default" | "secure" | "fast" | "normal" | "all"
            )
        {
            tracing::warn!(
                "{name} = {v}: OpenSSL cipher lists are not supported; rustls's default suites are used"
            );
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_side(g: &General) -> Result<ClientSide, TlsError> {
    let mode = Mode::parse(&g.client_tls_sslmode);
    if mode == Mode::Disable {
        return Ok(ClientSide {
            mode,
            acceptor: None,
        });
    }
    check_ciphers(g);
    let (Some(chain), Some(key)) = (
        certs(g, "client_tls_cert_file")?,
        key(g, "client_tls_key_file")?,
    ) else {
        return Err(TlsError::Bad {
            setting: "client_tls_sslmode",
            msg: format!(
                "{} needs client_tls_cert_file and client_tls_key_file",
                g.client_tls_sslmode
            ),
        });
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(g, "client_tls_protocols"))
        .map_err(|e| TlsError::Bad {
            setting: "client_tls_protocols",
            msg: e.to_string(),
        })?;
    let builder = match certs(g, "client_tls_ca_file")? {
        Some(ca) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, "client_tls_ca_file")?),
                provider(),
            );
            // client certificates are asked for; required with verify-ca / verify-full
            let v = if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| TlsError::Bad {
                setting: "client_tls_ca_file",
                msg: e.to_string(),
            })?)
        }
        None if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) => {
            return Err(TlsError::Bad {
                setting: "client_tls_ca_file",
                msg: "verify-ca / verify-full need client_tls_ca_file".into(),
            });
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Bad {
            setting: "client_tls_key_file",
            msg: e.to_string(),
        })?;
    // PostgreSQL 17's direct TLS negotiates ALPN "postgresql"
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(ClientSide {
        mode,
        acceptor: Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
    })
}

fn server_side(g: &General) -> Result<ServerSide, TlsError> {
    let mode = Mode::parse(&g.server_tls_sslmode);
    // allow = plain TCP (pgmux does not retry a refused plain login with TLS)
    if matches!(mode, Mode::Disable | Mode::Allow) {
        return Ok(ServerSide { mode, config: None });
    }
    check_ciphers(g);
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions(g, "server_tls_protocols"))
        .map_err(|e| TlsError::Bad {
            setting: "server_tls_protocols",
            msg: e.to_string(),
        })?;
    let ca = certs(g, "server_tls_ca_file")?;
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, ca) {
        (Mode::VerifyCa | Mode::VerifyFull, None) => {
            return Err(TlsError::Bad {
                setting: "server_tls_ca_file",
                msg: format!(
                    "server_tls_sslmode = {} needs server_tls_ca_file",
                    g.server_tls_sslmode
                ),
            });
        }
        (Mode::VerifyCa | Mode::VerifyFull, Some(ca)) => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(ca, "server_tls_ca_file")?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Bad {
                setting: "server_tls_ca_file",
                msg: e.to_string(),
            })?;
            Arc::new(Verifier {
                inner,
                check_name: mode == Mode::VerifyFull,
            })
        }
        _ => Arc::new(AcceptAny(provider())),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cfg = match (
        certs(g, "server_tls_cert_file")?,
        key(g, "server_tls_key_file")?,
    ) {
        (Some(chain), Some(key)) => {
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Bad {
                    setting: "server_tls_key_file",
                    msg: e.to_string(),
                })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Bad {
                setting: "server_tls_cert_file",
                msg: "server_tls_cert_file and server_tls_key_file go together".into(),
            });
        }
    };
    Ok(ServerSide {
        mode,
        config: Some(Arc::new(cfg)),
    })
}

/// verify-ca checks the chain only; verify-full also the host name.
#[derive(Debug)]
struct Verifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// prefer / require: encrypt, but trust any certificate (libpq's meaning of these modes).
/// Handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The user name a client certificate carries (its subject CN), for the `cert` auth method.
pub fn cert_common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}
