//! Bearer tokens: a JWT whose signature, issuer (`iss`), audience (`aud`),
//! validity (`exp` required, `nbf` when present) and lifetime (`exp` no
//! further than the configured maximum ahead, nor after `iat`) are checked;
//! its `scope` lists its rights and an optional claim binds it to one
//! customer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Validation;

use super::keys::Keys;
use super::{Caller, Refusal};

/// How bearer tokens are checked.
#[derive(Clone)]
pub struct TokenCheck {
    keys: Keys,
    issuer: String,
    audience: String,
    max_lifetime: Duration,
    customer_claim: Option<String>,
}

/// Clock skew tolerated on `exp`, `nbf` and the lifetime bound.
const LEEWAY: u64 = 60;

impl TokenCheck {
    /// Tokens signed with one of `keys`, issued by `issuer` for `audience`,
    /// valid for at most `max_lifetime`; `customer_claim` names the claim
    /// that binds a token to a customer, if any.
    pub fn new(
        keys: Keys,
        issuer: &str,
        audience: &str,
        max_lifetime: Duration,
        customer_claim: Option<String>,
    ) -> Self {
        Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_lifetime,
            customer_claim,
        }
    }

    /// The caller a token proves, or why it proves nothing.
    pub fn caller(&self, token: &str) -> Result<Caller, Refusal> {
        let refused =
            |why: String| Refusal::Unauthenticated(format!("the bearer token is not valid: {why}"));
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(format!("it cannot be read as a JWT ({e})")))?;
        let key = self.keys.for_kid(header.kid.as_deref()).map_err(refused)?;
        let mut validation = Validation::new(key.algorithm);
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|error| refused(explain(&error)))?;
        let claims = data.claims;
        let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let exp = number("exp").unwrap_or_default();
        let longest = self.max_lifetime.as_secs();
        if exp > now + longest + LEEWAY {
            return Err(refused(format!(
                "it expires (exp) more than {longest} s from now, the longest lifetime accepted"
            )));
        }
        if let Some(iat) = number("iat")
            && exp.saturating_sub(iat) > longest
        {
            return Err(refused(format!(
                "it lives (exp - iat) longer than {longest} s, the longest lifetime accepted"
            )));
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
        };
        let customer =
            match &self.customer_claim {
                Some(claim) => match claims.get(claim) {
                    None => None,
                    Some(value) => Some(customer_id(value).ok_or_else(|| {
                        refused(format!("its {claim} claim is not a customer id"))
                    })?),
                },
                None => None,
            };
        Ok(Caller {
            subject: text("sub").to_owned(),
            rights: text("scope")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            customer,
        })
    }
}

/// A positive customer id, as a JSON number or a decimal string.
fn customer_id(value: &serde_json::Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str()?.parse().ok())
        .filter(|id| *id > 0)
}

/// What is wrong with a token, in words a caller can act on.
fn explain(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "it has expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidAudience => "its audience (aud) is not this service's".to_owned(),
        ErrorKind::InvalidIssuer => {
            "its issuer (iss) is not the one this service trusts".to_owned()
        }
        ErrorKind::InvalidSignature => "its signature does not match the configured key".to_owned(),
        ErrorKind::InvalidAlgorithm => "it is signed with another algorithm".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        _ => format!(
            "it cannot be read as a JWT ({})",
            platform_core::echo::echo(&error.to_string(), 200)
        ),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::super::keys;
    use super::*;

    const SECRET: &[u8] = b"a shared secret of enough length!";

    fn check(customer_claim: Option<&str>) -> TokenCheck {
        TokenCheck::new(
            Keys::Single(keys::secret(SECRET).expect("long enough")),
            "https://issuer.example",
            "shop",
            Duration::from_secs(3_600),
            customer_claim.map(str::to_owned),
        )
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("encode")
    }

    fn good() -> serde_json::Value {
        serde_json::json!({"sub": "ann", "aud": "shop", "iss": "https://issuer.example",
                           "scope": "orders:read", "exp": now() + 600})
    }

    fn with(key: &str, value: serde_json::Value) -> String {
        let mut claims = good();
        claims[key] = value;
        sign(claims)
    }

    #[test]
    fn a_good_token_names_its_caller_and_rights() {
        let caller = check(None).caller(&sign(good())).expect("valid");
        assert_eq!(caller.subject, "ann");
        assert_eq!(caller.rights, ["orders:read"]);
        assert_eq!(caller.customer, None);
    }

    #[test]
    fn issuer_nbf_and_lifetime_are_checked() {
        let refused = |token: String| {
            let Err(Refusal::Unauthenticated(why)) = check(None).caller(&token) else {
                panic!("accepted")
            };
            why
        };
        assert!(refused(with("iss", "https://evil".into())).contains("issuer"));
        let mut no_iss = good();
        no_iss.as_object_mut().expect("object").remove("iss");
        assert!(refused(sign(no_iss)).contains("iss"));
        assert!(refused(with("nbf", (now() + 86_400).into())).contains("nbf"));
        assert!(refused(with("exp", (1_i64 << 40).into())).contains("longest lifetime"));
        let mut long = good();
        long["iat"] = (now() - 86_400).into();
        assert!(refused(sign(long)).contains("exp - iat"));
        assert!(refused(with("exp", (now() - 600).into())).contains("expired"));
    }

    #[test]
    fn a_customer_claim_binds_the_token() {
        let bound = check(Some("customer_id"));
        let caller = bound
            .caller(&with("customer_id", 42.into()))
            .expect("valid");
        assert_eq!(caller.customer, Some(42));
        let caller = bound
            .caller(&with("customer_id", "7".into()))
            .expect("valid");
        assert_eq!(caller.customer, Some(7));
        assert!(bound.caller(&with("customer_id", "ann".into())).is_err());
        assert_eq!(bound.caller(&sign(good())).expect("unbound").customer, None);
    }

    #[test]
    fn a_key_set_picks_the_key_by_kid() {
        let path =
            std::env::temp_dir().join(format!("mall-token-jwks-{}.json", std::process::id()));
        use base64::Engine as _;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
        std::fs::write(
            &path,
            format!(r#"{{"keys":[{{"kty":"oct","kid":"2026-12","alg":"HS256","k":"{k}"}}]}}"#),
        )
        .expect("write");
        let set = keys::KeySet::load(&path).expect("loads");
        let check = TokenCheck::new(
            Keys::Set(std::sync::Arc::new(set)),
            "https://issuer.example",
            "shop",
            Duration::from_secs(3_600),
            None,
        );
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("2026-12".into());
        let token = jsonwebtoken::encode(&header, &good(), &EncodingKey::from_secret(SECRET))
            .expect("encode");
        assert!(check.caller(&token).is_ok());
        header.kid = Some("2025-01".into());
        let token = jsonwebtoken::encode(&header, &good(), &EncodingKey::from_secret(SECRET))
            .expect("encode");
        assert!(
            matches!(check.caller(&token), Err(Refusal::Unauthenticated(why)) if why.contains("2025-01"))
        );
        assert!(check.caller(&sign(good())).is_err(), "no kid");
        std::fs::remove_file(&path).ok();
    }
}
