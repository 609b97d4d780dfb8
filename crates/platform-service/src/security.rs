//! Turning the TLS and authentication settings into a server TLS
//! configuration and an authentication [`Policy`]; everything is read and
//! checked at start-up, so a bad file or a missing audience stops the
//! service with a message naming the variable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::ExposeSecret;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::auth::{Policy, TokenCheck};
use crate::config::ServiceArgs;

/// A TLS or authentication setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SecurityError {
    /// The variable at fault.
    pub variable: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn read(variable: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|error| SecurityError {
        variable,
        problem: format!("cannot read {}: {error}", path.display()),
    })
}

/// The server's TLS configuration, when `GRPC_TLS_CERT` and `GRPC_TLS_KEY`
/// are set; with `GRPC_TLS_CLIENT_CA`, client certificates signed by it are
/// verified (and optional: a caller may use a token instead).
pub fn tls(args: &ServiceArgs) -> Result<Option<ServerTlsConfig>, SecurityError> {
    let (Some(cert), Some(key)) = (&args.grpc_tls_cert, &args.grpc_tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(read("GRPC_TLS_CERT", cert)?, read("GRPC_TLS_KEY", key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &args.grpc_tls_client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read("GRPC_TLS_CLIENT_CA", ca)?))
            .client_auth_optional(true);
    }
    Ok(Some(config))
}

/// The authentication policy, or `None` when no credential is configured
/// (plaintext local use). `rights` maps each method path to its right.
pub fn policy(
    args: &ServiceArgs,
    rights: &[(&str, &str)],
) -> Result<Option<Policy>, SecurityError> {
    let key = match (&args.auth_jwt_secret, &args.auth_jwt_public_key) {
        (Some(_), Some(_)) => {
            return Err(SecurityError {
                variable: "AUTH_JWT_PUBLIC_KEY",
                problem: "set it or AUTH_JWT_HS256_SECRET, not both".to_owned(),
            });
        }
        (Some(secret), None) => Some((
            DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            Algorithm::HS256,
        )),
        (None, Some(path)) => {
            let pem = read("AUTH_JWT_PUBLIC_KEY", path)?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .map(|key| (key, Algorithm::RS256))
                .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|key| (key, Algorithm::ES256)))
                .map_err(|error| SecurityError {
                    variable: "AUTH_JWT_PUBLIC_KEY",
                    problem: format!("not an RSA or EC public key in PEM: {error}"),
                })?;
            Some(key)
        }
        (None, None) => None,
    };
    let tokens = match key {
        Some((key, algorithm)) => {
            let audience = args.auth_jwt_audience.as_deref().ok_or(SecurityError {
                variable: "AUTH_JWT_AUDIENCE",
                problem: "required when tokens are accepted".to_owned(),
            })?;
            Some(TokenCheck::new(key, algorithm, audience))
        }
        None => None,
    };
    let certificate_rights = args.grpc_tls_client_ca.as_ref().map(|_| {
        args.auth_client_cert_rights
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()
    });
    if tokens.is_none() && certificate_rights.is_none() {
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
        certificate_rights,
        rights: Arc::new(rights),
    }))
}
