//! TLS through rustls (feature `rustls`), with libpq's `sslmode` meanings: `prefer` and
//! `require` encrypt without checking the certificate (unless `require` is given a root
//! certificate, as in libpq), `verify-ca` checks who signed it, `verify-full` also the
//! host name. A certificate that fails says why in words an operator can act on.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::SslMode;

/// The connector for `mode`, trusting the CAs in `roots` (a PEM file, or `system`).
/// The error is what is wrong with `sslrootcert`.
pub(crate) fn rustls_connector(
    mode: SslMode,
    roots: Option<&Path>,
) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let checks = match (mode, roots) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => None,
        (SslMode::VerifyFull, Some(roots)) => Some((roots, true)),
        (_, Some(roots)) => Some((roots, false)),
        (_, None) => return Err("is required by sslmode=verify-ca/verify-full".to_owned()),
    };
    let inner = match checks {
        None => None,
        Some((path, check_name)) => {
            let store = Arc::new(load_roots(path)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(store, Arc::clone(&provider))
                .build()
                .map_err(|e| format!("({}) cannot be used: {e}", path.display()))?;
            Some(Checks {
                webpki,
                check_name,
                roots: path.display().to_string(),
            })
        }
    };
    let verifier = Arc::new(Verifier {
        inner,
        algorithms: provider.signature_verification_algorithms,
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot be used: rustls has no protocol version ({e})"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = if path == Path::new("system") {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err(format!(
                "is `system`, but no root certificates were found on this machine ({}); install the \
                 CA certificates package or give a PEM file",
                found
                    .errors
                    .first()
                    .map_or_else(|| "none installed".to_owned(), ToString::to_string)
            ));
        }
        found.certs
    } else {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| {
                format!(
                    "({}) could not be read as PEM certificates: {e}; give the path of the CA's \
                     certificate in PEM form",
                    path.display()
                )
            })?
    };
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "({}) holds no usable certificate; give the path of the CA's certificate in PEM form \
             (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(store)
}

/// What the verifying modes check.
#[derive(Debug)]
struct Checks {
    webpki: Arc<WebPkiServerVerifier>,
    /// `verify-full`: the certificate must be issued for the host connected to.
    check_name: bool,
    /// Where the roots came from, for the error.
    roots: String,
}

/// Checks what the mode asks for; the handshake's signatures are always verified.
#[derive(Debug)]
struct Verifier {
    inner: Option<Checks>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(checks) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is checked before the name, so a name error means the chain is good.
        match checks.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !checks.check_name => Ok(ServerCertVerified::assertion()),
            Err(rustls::Error::InvalidCertificate(problem)) => {
                Err(explain(problem, server_name, &checks.roots))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A refused certificate, said so that the operator knows which check failed and what to
/// change.
#[derive(Debug)]
pub(crate) struct CertificateRefused(String);

impl fmt::Display for CertificateRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertificateRefused {}

fn explain(problem: CertificateError, host: &ServerName<'_>, roots: &str) -> rustls::Error {
    let host = host.to_str();
    let text = match &problem {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "wrong host name: the server's certificate is not valid for {host:?} ({problem}); \
                 sslmode=verify-full checks the name: connect with a name the certificate lists, or \
                 use sslmode=verify-ca to check only who signed it"
            )
        }
        CertificateError::UnknownIssuer => format!(
            "unknown CA: the server's certificate for {host:?} is not signed by a certificate \
             authority in sslrootcert ({roots}); point sslrootcert at the CA that issued it"
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "expired: the server's certificate for {host:?} has expired ({problem}); renew it on the \
             server"
        ),
        _ => format!("the server's certificate for {host:?} was refused: {problem}"),
    };
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        CertificateRefused(text),
    ))))
}
