//! Turning the TLS and authentication settings into a server TLS
//! configuration and an authentication [`Policy`]; everything is read and
//! checked at start-up, so a bad file or a missing audience stops the
//! service with a message naming the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::ExposeSecret;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::boot::config::ServiceArgs;
use crate::grpc::auth::keys::{self, KeySet, Keys};
use crate::grpc::auth::{CertificateRights, Policy, TokenCheck};

/// A TLS or authentication setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SecurityError {
    /// The variable at fault.
    pub variable: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// How long a TLS handshake may take: a client that opens connections and
/// never finishes the handshake holds nothing past it.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn read(variable: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|error| SecurityError {
        variable,
        problem: format!("cannot read {}: {error}", path.display()),
    })
}

/// The server's TLS configuration, when `GRPC_TLS_CERT` and `GRPC_TLS_KEY`
/// are set; with `GRPC_TLS_CLIENT_CA`, client certificates signed by it are
/// verified (and optional: a caller may use a token instead). The TLS
/// handshake must finish within 5 s.
pub fn tls(args: &ServiceArgs) -> Result<Option<ServerTlsConfig>, SecurityError> {
    let (Some(cert), Some(key)) = (&args.grpc_tls_cert, &args.grpc_tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(read("GRPC_TLS_CERT", cert)?, read("GRPC_TLS_KEY", key)?);
    let mut config = ServerTlsConfig::new()
        .identity(identity)
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    if let Some(ca) = &args.grpc_tls_client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read("GRPC_TLS_CLIENT_CA", ca)?))
            .client_auth_optional(true);
    }
    Ok(Some(config))
}

/// The authentication policy, or `None` when no credential is configured
/// (open use, which [`check_open`] allows only on loopback or when
/// `GRPC_ALLOW_UNAUTHENTICATED` says so). `rights` maps each method path to
/// its right.
pub fn policy(
    args: &ServiceArgs,
    rights: &[(&str, &str)],
) -> Result<Option<Policy>, SecurityError> {
    let keys = token_keys(args)?;
    let tokens = match keys {
        Some(keys) => {
            let required = |value: &Option<String>, variable: &'static str| {
                value.clone().ok_or(SecurityError {
                    variable,
                    problem: "required when tokens are accepted".to_owned(),
                })
            };
            let audience = required(&args.auth_jwt_audience, "AUTH_JWT_AUDIENCE")?;
            let issuer = required(&args.auth_jwt_issuer, "AUTH_JWT_ISSUER")?;
            Some(TokenCheck::new(
                keys,
                &issuer,
                &audience,
                args.auth_jwt_max_lifetime,
                args.auth_jwt_customer_claim.clone(),
            ))
        }
        None => None,
    };
    let certificates = match &args.grpc_tls_client_ca {
        Some(_) => Some(
            CertificateRights::parse(&args.auth_client_cert_rights).map_err(|problem| {
                SecurityError {
                    variable: "AUTH_CLIENT_CERT_RIGHTS",
                    problem,
                }
            })?,
        ),
        None => None,
    };
    if tokens.is_none() && certificates.is_none() {
        return Ok(None);
    }
    if tokens.is_some() && args.grpc_tls_cert.is_none() {
        tracing::warn!(
            "Bearer tokens are accepted over plaintext gRPC; set GRPC_TLS_CERT and GRPC_TLS_KEY."
        );
    }
    let rights: HashMap<String, String> = rights
        .iter()
        .map(|(path, right)| ((*path).to_owned(), (*right).to_owned()))
        .collect();
    Ok(Some(Policy {
        tokens,
        certificates,
        rights: Arc::new(rights),
        wildcard: args.auth_allow_wildcard_scope,
    }))
}

/// The keys bearer tokens are checked with: at most one of the secret, the
/// public key and the key set file.
fn token_keys(args: &ServiceArgs) -> Result<Option<Keys>, SecurityError> {
    let given = [
        args.auth_jwt_secret.is_some(),
        args.auth_jwt_public_key.is_some(),
        args.auth_jwt_keys_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(SecurityError {
            variable: "AUTH_JWT_KEYS_FILE",
            problem: "set one of AUTH_JWT_HS256_SECRET, AUTH_JWT_PUBLIC_KEY and AUTH_JWT_KEYS_FILE"
                .to_owned(),
        });
    }
    if let Some(secret) = &args.auth_jwt_secret {
        let key =
            keys::secret(secret.expose_secret().as_bytes()).map_err(|problem| SecurityError {
                variable: "AUTH_JWT_HS256_SECRET",
                problem,
            })?;
        return Ok(Some(Keys::Single(key)));
    }
    if let Some(path) = &args.auth_jwt_public_key {
        let pem = read("AUTH_JWT_PUBLIC_KEY", path)?;
        let key = DecodingKey::from_rsa_pem(&pem)
            .map(|key| (key, Algorithm::RS256))
            .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|key| (key, Algorithm::ES256)))
            .map_err(|error| SecurityError {
                variable: "AUTH_JWT_PUBLIC_KEY",
                problem: format!("not an RSA or EC public key in PEM: {error}"),
            })?;
        return Ok(Some(Keys::Single(keys::Key {
            key: key.0,
            algorithm: key.1,
        })));
    }
    if let Some(path) = &args.auth_jwt_keys_file {
        let set = KeySet::load(path).map_err(|problem| SecurityError {
            variable: "AUTH_JWT_KEYS_FILE",
            problem,
        })?;
        return Ok(Some(Keys::Set(Arc::new(set))));
    }
    Ok(None)
}

/// Whether a server may run with `policy` on `addr`: authentication is
/// required on every address but loopback, unless
/// `GRPC_ALLOW_UNAUTHENTICATED` says otherwise.
pub fn check_open(
    policy: Option<&Policy>,
    addr: SocketAddr,
    allow_unauthenticated: bool,
) -> Result<(), SecurityError> {
    if policy.is_some() {
        return Ok(());
    }
    if addr.ip().is_loopback() || allow_unauthenticated {
        tracing::warn!(
            %addr,
            "Serving without authentication: every caller may call every method \
             (configure AUTH_JWT_* or GRPC_TLS_CLIENT_CA to require credentials)."
        );
        return Ok(());
    }
    Err(SecurityError {
        variable: "GRPC_ALLOW_UNAUTHENTICATED",
        problem: format!(
            "the server would listen on {addr}, which is not a loopback address, with no \
             credential configured: set AUTH_JWT_HS256_SECRET, AUTH_JWT_PUBLIC_KEY, \
             AUTH_JWT_KEYS_FILE or GRPC_TLS_CLIENT_CA, or GRPC_ALLOW_UNAUTHENTICATED=true to \
             serve every caller"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_an_explicit_setting_serves_without_credentials() {
        let local: SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let everywhere: SocketAddr = "0.0.0.0:8081".parse().expect("addr");
        assert!(check_open(None, local, false).is_ok());
        let refused = check_open(None, everywhere, false).expect_err("refused");
        assert_eq!(refused.variable, "GRPC_ALLOW_UNAUTHENTICATED");
        assert!(check_open(None, everywhere, true).is_ok());
        assert!(check_open(None, "[::1]:8081".parse().expect("addr"), false).is_ok());
    }
}
