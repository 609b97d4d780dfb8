//! Who may call what: the decision the layer enforces, as a pure function
//! of the path, the `authorization` header and the verified client
//! certificate.

use std::collections::HashMap;
use std::sync::Arc;

use super::certs::{CertificateRights, identities};
use super::token::TokenCheck;
use super::{Caller, Refusal};

/// Paths open to every caller: health, which orchestrators probe.
const OPEN_PREFIXES: [&str; 1] = ["/grpc.health.v1.Health/"];

/// Paths any caller who proved who it is may use, without a right:
/// reflection describes the API, which is no secret to an authenticated
/// caller but is to a stranger.
const AUTHENTICATED_PREFIXES: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The right that grants every other, honoured only when configured.
pub const WILDCARD: &str = "*";

/// Everything the layer needs: how to check tokens, what certificate
/// holders may do, and the right each method needs.
#[derive(Clone)]
pub struct Policy {
    /// Bearer tokens, if accepted.
    pub tokens: Option<TokenCheck>,
    /// Rights of verified client certificates by identity, if accepted.
    pub certificates: Option<CertificateRights>,
    /// The right each method needs, by path (`/package.Service/Method`).
    pub rights: Arc<HashMap<String, String>>,
    /// Whether the right `*` grants every right (`AUTH_ALLOW_WILDCARD_SCOPE`).
    pub wildcard: bool,
}

impl Policy {
    /// Decides one call: `authorization` is the header's value, `certificate`
    /// the DER of the client certificate the TLS handshake verified.
    pub fn decide(
        &self,
        path: &str,
        authorization: Option<&str>,
        certificate: Option<&[u8]>,
    ) -> Result<Option<Caller>, Refusal> {
        if OPEN_PREFIXES.iter().any(|open| path.starts_with(open)) {
            return Ok(None);
        }
        let caller = match (authorization, &self.tokens, &self.certificates, certificate) {
            (Some(value), Some(tokens), _, _) => {
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
            (_, _, Some(table), Some(der)) => {
                let names = identities(der);
                let (known, rights) = table.of(&names);
                let who = known.or(names.first().map(String::as_str)).unwrap_or("?");
                Caller {
                    subject: format!("cert:{who}"),
                    rights,
                    customer: None,
                }
            }
            _ => return Err(Refusal::Unauthenticated(self.what_to_send())),
        };
        if AUTHENTICATED_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Ok(Some(caller));
        }
        let Some(right) = self.rights.get(path) else {
            return Err(Refusal::PermissionDenied(format!(
                "{} is not open to any caller",
                platform_core::echo::echo(path, 100)
            )));
        };
        if self.may(&caller, right) {
            Ok(Some(caller))
        } else {
            let wildcard = if !self.wildcard && caller.rights.iter().any(|r| r == WILDCARD) {
                " (the right * grants nothing here: AUTH_ALLOW_WILDCARD_SCOPE is off)"
            } else {
                ""
            };
            Err(Refusal::PermissionDenied(format!(
                "{path} needs the right {right:?}; the credentials of {:?} grant {:?}{wildcard}",
                platform_core::echo::echo(&caller.subject, 100),
                caller.rights
            )))
        }
    }

    fn may(&self, caller: &Caller, right: &str) -> bool {
        caller
            .rights
            .iter()
            .any(|r| r == right || (self.wildcard && r == WILDCARD))
    }

    fn what_to_send(&self) -> String {
        match (&self.tokens, &self.certificates) {
            (Some(_), Some(_)) => {
                "this call needs credentials: `authorization: Bearer <JWT>` or a client certificate"
            }
            (Some(_), None) => "this call needs credentials: `authorization: Bearer <JWT>`",
            _ => "this call needs credentials: a client certificate",
        }
        .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::super::keys::{self, Keys};
    use super::*;

    const SECRET: &[u8] = b"a shared secret of enough length!";

    fn policy(certs: Option<&str>, wildcard: bool) -> Policy {
        Policy {
            tokens: Some(TokenCheck::new(
                Keys::Single(keys::secret(SECRET).expect("long enough")),
                "iss",
                "shop",
                Duration::from_secs(3_600),
                None,
            )),
            certificates: certs.map(|table| CertificateRights::parse(table).expect("table")),
            rights: Arc::new(HashMap::from([
                ("/shop.v1.Orders/Get".to_owned(), "orders:read".to_owned()),
                (
                    "/shop.v1.Orders/Cancel".to_owned(),
                    "orders:cancel".to_owned(),
                ),
            ])),
            wildcard,
        }
    }

    fn token(audience: &str, scope: &str, expires_in: i64) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
            + expires_in;
        let claims = serde_json::json!({"sub": "tester", "iss": "iss", "aud": audience,
                                        "scope": scope, "exp": exp});
        let header = Header::new(Algorithm::HS256);
        format!(
            "Bearer {}",
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET))
                .expect("encode")
        )
    }

    fn certificate(cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn health_is_open_reflection_needs_a_caller_the_rest_a_right() {
        let p = policy(None, false);
        assert_eq!(
            p.decide("/grpc.health.v1.Health/Check", None, None),
            Ok(None)
        );
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert!(matches!(
            p.decide(reflection, None, None),
            Err(Refusal::Unauthenticated(_))
        ));
        let nobody = token("shop", "", 60);
        assert!(p.decide(reflection, Some(&nobody), None).is_ok());
        assert!(matches!(
            p.decide("/shop.v1.Orders/Get", None, None),
            Err(Refusal::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_token_grants_its_scope_and_nothing_more() {
        let p = policy(None, false);
        let reader = token("shop", "orders:read", 60);
        assert!(p.decide("/shop.v1.Orders/Get", Some(&reader), None).is_ok());
        assert!(matches!(
            p.decide("/shop.v1.Orders/Cancel", Some(&reader), None),
            Err(Refusal::PermissionDenied(m)) if m.contains("orders:cancel")
        ));
        assert!(matches!(
            p.decide("/shop.v1.Orders/Unlisted", Some(&reader), None),
            Err(Refusal::PermissionDenied(_))
        ));
        // Rights are namespaced: another service's read is not this one's.
        let stock_reader = token("shop", "stock:read", 60);
        assert!(
            p.decide("/shop.v1.Orders/Get", Some(&stock_reader), None)
                .is_err()
        );
    }

    #[test]
    fn the_wildcard_grants_only_where_configured() {
        let everything = token("shop", "*", 60);
        assert!(matches!(
            policy(None, false).decide("/shop.v1.Orders/Cancel", Some(&everything), None),
            Err(Refusal::PermissionDenied(m)) if m.contains("AUTH_ALLOW_WILDCARD_SCOPE")
        ));
        assert!(
            policy(None, true)
                .decide("/shop.v1.Orders/Cancel", Some(&everything), None)
                .is_ok()
        );
    }

    #[test]
    fn bad_tokens_are_unauthenticated() {
        let p = policy(None, false);
        for bad in [
            token("elsewhere", "orders:read", 60),
            token("shop", "orders:read", -120),
            "Bearer not-a-jwt".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
        ] {
            assert!(
                matches!(
                    p.decide("/shop.v1.Orders/Get", Some(&bad), None),
                    Err(Refusal::Unauthenticated(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_certificate_grants_what_its_identity_is_given() {
        let p = policy(Some("ops=orders:read"), false);
        let ops = certificate("ops");
        let caller = p
            .decide("/shop.v1.Orders/Get", None, Some(&ops))
            .expect("ops reads");
        assert_eq!(caller.map(|c| c.subject).as_deref(), Some("cert:ops"));
        assert!(matches!(
            p.decide("/shop.v1.Orders/Cancel", None, Some(&ops)),
            Err(Refusal::PermissionDenied(_))
        ));
        // Another certificate of the same CA: authenticated, no rights.
        let random = certificate("random");
        assert!(matches!(
            p.decide("/shop.v1.Orders/Get", None, Some(&random)),
            Err(Refusal::PermissionDenied(m)) if m.contains("cert:random")
        ));
        // No verified certificate: nothing.
        assert!(matches!(
            p.decide("/shop.v1.Orders/Get", None, None),
            Err(Refusal::Unauthenticated(_))
        ));
    }
}
