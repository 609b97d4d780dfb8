//! TLS for PostgreSQL connections, chosen by the URL as libpq chooses it:
//! `sslmode` = `disable`, `prefer` (the default: TLS when the server offers
//! it, unverified), `require` (TLS, unverified) or `verify-full` (TLS, the
//! server's certificate checked against `sslrootcert` and its host name).
//! tokio-postgres knows neither `verify-full` nor `sslrootcert`, so both are
//! taken out of the URL here and the rest is left to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection uses TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Never.
    Disable,
    /// When the server offers it, without checking its certificate.
    Prefer,
    /// Always, without checking the server's certificate.
    Require,
    /// Always, checking the certificate against this CA file and the host name.
    VerifyFull(PathBuf),
}

/// A TLS setting of a connection string that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// An `sslmode` this code does not implement, or a missing `sslrootcert`.
    #[error("{0}")]
    Unsupported(String),
    /// The CA file could not be read.
    #[error("cannot read sslrootcert {path}: {problem}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// `url` without `sslmode` and `sslrootcert` (with `sslmode` put back in a
/// form tokio-postgres knows), and the TLS mode they asked for. Works on
/// URLs and on `key=value` strings.
pub fn split(url: &str) -> Result<(String, TlsMode), TlsError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (base, params): (&str, Vec<&str>) = if is_url {
        match url.split_once('?') {
            Some((base, query)) => (base, query.split('&').filter(|p| !p.is_empty()).collect()),
            None => (url, Vec::new()),
        }
    } else {
        ("", url.split_whitespace().collect())
    };
    let mut mode = None;
    let mut root = None;
    let mut kept = Vec::new();
    for param in params {
        match param.split_once('=') {
            Some(("sslmode", value)) => mode = Some(decode(value)),
            Some(("sslrootcert", value)) => root = Some(PathBuf::from(decode(value))),
            _ => kept.push(param),
        }
    }
    let mode = match mode.as_deref() {
        None | Some("prefer") | Some("allow") => TlsMode::Prefer,
        Some("disable") => TlsMode::Disable,
        Some("require") => TlsMode::Require,
        Some("verify-full") => TlsMode::VerifyFull(root.ok_or_else(|| {
            TlsError::Unsupported(
                "sslmode=verify-full needs sslrootcert=<CA file> in the URL".to_owned(),
            )
        })?),
        Some(other) => {
            return Err(TlsError::Unsupported(format!(
                "sslmode={other} is not supported; use disable, prefer, require or verify-full"
            )));
        }
    };
    let for_driver = match mode {
        TlsMode::Disable => "sslmode=disable",
        TlsMode::Prefer => "sslmode=prefer",
        TlsMode::Require | TlsMode::VerifyFull(_) => "sslmode=require",
    };
    kept.push(for_driver);
    let rebuilt = if is_url {
        format!("{base}?{}", kept.join("&"))
    } else {
        kept.join(" ")
    };
    Ok((rebuilt, mode))
}

/// Undoes `%XX` escapes (paths in URLs).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connector for `mode` (for `Disable` it is never used).
pub fn connector(mode: &TlsMode) -> Result<MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let config = match mode {
        TlsMode::VerifyFull(root) => builder
            .with_root_certificates(roots(root)?)
            .with_no_client_auth(),
        TlsMode::Disable | TlsMode::Prefer | TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let problem = |problem: String| TlsError::RootCert {
        path: path.to_owned(),
        problem,
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| problem(e.to_string()))? {
        store
            .add(cert.map_err(|e| problem(e.to_string()))?)
            .map_err(|e| problem(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(problem("no certificate in it".to_owned()));
    }
    Ok(store)
}

/// `require` and `prefer`: encryption without checking who answers, as
/// libpq does. Signatures are still checked, so the session key is sound.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_come_out_of_urls_and_key_value_strings() {
        let (url, mode) = split(
            "postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .expect("valid");
        assert_eq!(mode, TlsMode::VerifyFull(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            url,
            "postgres://u:p@db:5432/app?application_name=x&sslmode=require"
        );
        let (url, mode) = split("host=db user=u sslmode=require").expect("valid");
        assert_eq!(mode, TlsMode::Require);
        assert_eq!(url, "host=db user=u sslmode=require");
        let (url, mode) = split("postgres://u@db/app").expect("valid");
        assert_eq!(mode, TlsMode::Prefer);
        assert_eq!(url, "postgres://u@db/app?sslmode=prefer");
        assert_eq!(
            split("postgres://u@db/app?sslmode=disable")
                .expect("valid")
                .1,
            TlsMode::Disable
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        assert!(split("postgres://u@db/app?sslmode=verify-full").is_err());
        assert!(split("postgres://u@db/app?sslmode=verify-ca&sslrootcert=/x").is_err());
    }
}
