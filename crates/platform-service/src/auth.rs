//! Authentication and per-method rights, as a tower layer in front of every
//! gRPC service.
//!
//! A caller proves who it is with a client certificate the TLS handshake
//! verified against `GRPC_TLS_CLIENT_CA` (mTLS), or with a bearer token: a
//! JWT checked against the configured key and audience, whose `scope` claim
//! (space-separated, as in OAuth 2.0) lists its rights. Each method of a
//! service needs one right, declared by the application; a method it did not
//! declare is refused. Health (and reflection, when served) stays open.
//! Missing or bad credentials get `UNAUTHENTICATED`, a missing right
//! `PERMISSION_DENIED`, each with a message that says what to send.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use jsonwebtoken::{DecodingKey, Validation};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// Paths that never need credentials.
const OPEN_PREFIXES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What a caller may do, and how it proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who: the token's `sub` or the certificate holder.
    pub subject: String,
    /// The rights granted.
    pub rights: Vec<String>,
}

impl Caller {
    fn may(&self, right: &str) -> bool {
        self.rights.iter().any(|r| r == right || r == "*")
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No or bad credentials.
    Unauthenticated(String),
    /// Credentials without the right.
    PermissionDenied(String),
}

impl From<Refusal> for tonic::Status {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated(message) => Self::unauthenticated(message),
            Refusal::PermissionDenied(message) => Self::permission_denied(message),
        }
    }
}

/// The claims read from a token.
#[derive(Debug, serde::Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    scope: String,
}

/// How bearer tokens are checked.
#[derive(Clone)]
pub struct TokenCheck {
    key: DecodingKey,
    validation: Validation,
}

impl TokenCheck {
    /// Tokens signed with `key` by `algorithm`, for `audience`; `exp` is
    /// required.
    pub fn new(key: DecodingKey, algorithm: jsonwebtoken::Algorithm, audience: &str) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        Self { key, validation }
    }

    fn caller(&self, token: &str) -> Result<Caller, Refusal> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| {
                Refusal::Unauthenticated(format!(
                    "the bearer token is not valid: {}",
                    explain(&error)
                ))
            },
        )?;
        Ok(Caller {
            subject: data.claims.sub,
            rights: data
                .claims
                .scope
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// What is wrong with a token, in words a caller can act on.
fn explain(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "it has expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidAudience => "its audience (aud) is not this service's".to_owned(),
        ErrorKind::InvalidSignature => "its signature does not match the configured key".to_owned(),
        ErrorKind::InvalidAlgorithm => "it is signed with another algorithm".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        _ => format!("it cannot be read as a JWT ({error})"),
    }
}

/// Everything the layer needs: how to check tokens, what a certificate
/// holder may do, and the right each method needs.
#[derive(Clone)]
pub struct Policy {
    /// Bearer tokens, if accepted.
    pub tokens: Option<TokenCheck>,
    /// Rights of a caller with a verified client certificate, if accepted.
    pub certificate_rights: Option<Vec<String>>,
    /// The right each method needs, by path (`/package.Service/Method`).
    pub rights: Arc<HashMap<String, String>>,
}

impl Policy {
    /// Decides one call: `authorization` is the header's value, `has_cert`
    /// whether the TLS handshake verified a client certificate.
    pub fn decide(
        &self,
        path: &str,
        authorization: Option<&str>,
        has_cert: bool,
    ) -> Result<Option<Caller>, Refusal> {
        if OPEN_PREFIXES.iter().any(|open| path.starts_with(open)) {
            return Ok(None);
        }
        let caller = match (authorization, &self.tokens, &self.certificate_rights) {
            (Some(value), Some(tokens), _) => {
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        Refusal::Unauthenticated(
                            "the authorization header must be `Bearer <JWT>`".to_owned(),
                        )
                    })?;
                tokens.caller(token.trim())?
            }
            (_, _, Some(rights)) if has_cert => Caller {
                subject: "client certificate".to_owned(),
                rights: rights.clone(),
            },
            _ => {
                return Err(Refusal::Unauthenticated(self.what_to_send()));
            }
        };
        let Some(right) = self.rights.get(path) else {
            return Err(Refusal::PermissionDenied(format!(
                "{path} is not open to any caller"
            )));
        };
        if caller.may(right) {
            Ok(Some(caller))
        } else {
            Err(Refusal::PermissionDenied(format!(
                "{path} needs the right {right:?}; the credentials grant {:?}",
                caller.rights
            )))
        }
    }

    fn what_to_send(&self) -> String {
        match (&self.tokens, &self.certificate_rights) {
            (Some(_), Some(_)) => {
                "this call needs credentials: `authorization: Bearer <JWT>` or a client certificate"
            }
            (Some(_), None) => "this call needs credentials: `authorization: Bearer <JWT>`",
            _ => "this call needs credentials: a client certificate",
        }
        .to_owned()
    }
}

/// The layer.
#[derive(Clone)]
pub struct Authenticate {
    policy: Arc<Policy>,
}

impl Authenticate {
    /// Enforces `policy` on every call.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for Authenticate {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// A service behind [`Authenticate`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Authenticated<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let has_cert = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .is_some_and(|certs| !certs.is_empty());
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self
            .policy
            .decide(request.uri().path(), authorization, has_cert)
        {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                let status = tonic::Status::from(refusal);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;

    const SECRET: &[u8] = b"a shared secret of enough length";

    fn policy(certs: bool) -> Policy {
        Policy {
            tokens: Some(TokenCheck::new(
                DecodingKey::from_secret(SECRET),
                Algorithm::HS256,
                "shop",
            )),
            certificate_rights: certs.then(|| vec!["read".to_owned()]),
            rights: Arc::new(HashMap::from([
                ("/shop.v1.Orders/Get".to_owned(), "read".to_owned()),
                (
                    "/shop.v1.Orders/Cancel".to_owned(),
                    "orders:cancel".to_owned(),
                ),
            ])),
        }
    }

    fn token(audience: &str, scope: &str, expires_in: i64) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
            + expires_in;
        let claims =
            serde_json::json!({"sub": "tester", "aud": audience, "scope": scope, "exp": exp});
        let header = Header::new(Algorithm::HS256);
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET))
                .expect("encode")
        )
    }

    #[test]
    fn health_is_open_and_the_rest_needs_credentials() {
        let p = policy(false);
        assert_eq!(
            p.decide("/grpc.health.v1.Health/Check", None, false),
            Ok(None)
        );
        assert!(matches!(
            p.decide("/shop.v1.Orders/Get", None, false),
            Err(Refusal::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_token_grants_its_scope_and_nothing_more() {
        let p = policy(false);
        let reader = token("shop", "read", 60);
        assert!(
            p.decide("/shop.v1.Orders/Get", Some(&reader), false)
                .is_ok()
        );
        assert!(matches!(
            p.decide("/shop.v1.Orders/Cancel", Some(&reader), false),
            Err(Refusal::PermissionDenied(m)) if m.contains("orders:cancel")
        ));
        assert!(matches!(
            p.decide("/shop.v1.Orders/Unlisted", Some(&reader), false),
            Err(Refusal::PermissionDenied(_))
        ));
    }

    #[test]
    fn bad_tokens_are_unauthenticated() {
        let p = policy(false);
        for bad in [
            token("elsewhere", "read", 60),
            token("shop", "read", -120),
            "Bearer not-a-jwt".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
        ] {
            assert!(
                matches!(
                    p.decide("/shop.v1.Orders/Get", Some(&bad), false),
                    Err(Refusal::Unauthenticated(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_verified_certificate_grants_the_configured_rights() {
        let p = policy(true);
        assert!(p.decide("/shop.v1.Orders/Get", None, true).is_ok());
        assert!(matches!(
            p.decide("/shop.v1.Orders/Cancel", None, true),
            Err(Refusal::PermissionDenied(_))
        ));
        // Without a verified certificate, the certificate path grants nothing.
        assert!(matches!(
            p.decide("/shop.v1.Orders/Get", None, false),
            Err(Refusal::Unauthenticated(_))
        ));
    }
}
