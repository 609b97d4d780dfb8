//! Authentication and per-method rights, as a tower layer in front of every
//! gRPC service.
//!
//! A caller proves who it is with a client certificate the TLS handshake
//! verified against `GRPC_TLS_CLIENT_CA` (mTLS), mapped to rights by its
//! identity ([`certs`]), or with a bearer token: a JWT checked against the
//! configured key or key set, issuer, audience and lifetime ([`token`]),
//! whose `scope` claim (space-separated, as in OAuth 2.0) lists its rights.
//! Each method of a service needs one right, declared by the application
//! and namespaced by what it serves (`orders:read`, `stock:write`); a method
//! it did not declare is refused ([`policy`]). Health stays open; reflection
//! needs a caller who proved who it is, and no right. Missing or bad
//! credentials get `UNAUTHENTICATED`, a missing right `PERMISSION_DENIED`,
//! each with a message that says what to send.

pub mod certs;
pub mod keys;
pub mod policy;
pub mod token;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

pub use certs::CertificateRights;
pub use keys::{KeySet, Keys};
pub use policy::Policy;
pub use token::TokenCheck;

/// Who a caller proved to be, and what it may do; handlers find it in the
/// request's extensions (none when authentication is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who: the token's `sub`, or `cert:<identity>` for a certificate.
    pub subject: String,
    /// The rights granted.
    pub rights: Vec<String>,
    /// The customer a token is bound to (`AUTH_JWT_CUSTOMER_CLAIM`): the
    /// order methods then act only on that customer's orders.
    pub customer: Option<i64>,
}

impl Caller {
    /// The caller of `request`, if authentication named one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Self> {
        request.extensions().get::<Self>()
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
        let peer = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        let leaf = peer.as_ref().and_then(|certs| certs.first());
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let decided = self.policy.decide(
            request.uri().path(),
            authorization,
            leaf.map(|cert| cert.as_ref()),
        );
        match decided {
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
