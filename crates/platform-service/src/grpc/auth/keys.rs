//! The keys bearer tokens are checked with: one configured key
//! (`AUTH_JWT_HS256_SECRET` or `AUTH_JWT_PUBLIC_KEY`), or a key set file
//! (`AUTH_JWT_KEYS_FILE`, a JWKS as RFC 7517 writes it) from which each
//! token's `kid` picks its key. The file is read again when it changes
//! (looked at, at most once a second, when a token arrives), so keys are
//! rotated by editing it: add the new key, switch the issuer, remove the
//! old one, and no replica restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The shortest HS256 secret accepted, in bytes (256 bits, as RFC 7518
/// asks): a shorter one falls to an offline search from any token.
pub const MIN_SECRET_BYTES: usize = 32;

/// How often the key set file is looked at, at most.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// One key and the algorithm it signs with.
#[derive(Clone)]
pub struct Key {
    /// The key.
    pub key: DecodingKey,
    /// Its algorithm; a token whose header names another is refused.
    pub algorithm: Algorithm,
}

/// Where a token's key comes from.
#[derive(Clone)]
pub enum Keys {
    /// One key for every token (no `kid` needed).
    Single(Key),
    /// A key set; the token's `kid` picks the key.
    Set(Arc<KeySet>),
}

impl Keys {
    /// The key for a token whose header names `kid`.
    pub fn for_kid(&self, kid: Option<&str>) -> Result<Key, String> {
        match self {
            Self::Single(key) => Ok(key.clone()),
            Self::Set(set) => {
                let kid = kid.ok_or("it names no key (kid), and the key set needs one")?;
                set.find(kid)
                    .ok_or_else(|| format!("no key {kid:?} in the key set"))
            }
        }
    }
}

/// An HS256 key from a shared secret of at least [`MIN_SECRET_BYTES`].
pub fn secret(secret: &[u8]) -> Result<Key, String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes, this one is {}",
            secret.len()
        ));
    }
    Ok(Key {
        key: DecodingKey::from_secret(secret),
        algorithm: Algorithm::HS256,
    })
}

/// Keys by `kid`, from a JWKS file.
pub struct KeySet {
    path: PathBuf,
    look_again: Duration,
    keys: RwLock<HashMap<String, Key>>,
    /// When the file was last looked at, and its modification time then.
    looked: Mutex<(Instant, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Parses a JWKS: every key needs a `kid` and an `alg`; an HMAC key must be
/// at least [`MIN_SECRET_BYTES`] long.
pub fn parse(text: &str) -> Result<HashMap<String, Key>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone().ok_or("every key needs a kid")?;
        let algorithm: Algorithm = jwk
            .common
            .key_algorithm
            .ok_or(format!("key {kid:?} needs an alg"))?
            .to_string()
            .parse()
            .map_err(|e| format!("key {kid:?}: {e}"))?;
        if let AlgorithmParameters::OctetKey(octets) = &jwk.algorithm {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(octets.value.trim_end_matches('='))
                .map_err(|e| format!("key {kid:?}: its k is not base64url: {e}"))?;
            secret(&bytes).map_err(|e| format!("key {kid:?}: {e}"))?;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        keys.insert(kid, Key { key, algorithm });
    }
    if keys.is_empty() {
        return Err("it holds no key".into());
    }
    Ok(keys)
}

impl KeySet {
    /// Reads `path` now; an unreadable or invalid file is an error.
    pub fn load(path: &Path) -> Result<Self, String> {
        Self::load_with(path, LOOK_AGAIN)
    }

    /// [`KeySet::load`], looking at the file again at most every `look_again`.
    pub fn load_with(path: &Path, look_again: Duration) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            look_again,
            keys: RwLock::new(parse(&text)?),
            looked: Mutex::new((Instant::now(), modified(path))),
        })
    }

    /// The key `kid`, reading the file again first if it changed (at most
    /// once a second). A file that became invalid keeps the keys it had.
    pub fn find(&self, kid: &str) -> Option<Key> {
        self.refresh();
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    fn refresh(&self) {
        let mut looked = self.looked.lock().unwrap_or_else(PoisonError::into_inner);
        if looked.0.elapsed() < self.look_again {
            return;
        }
        let now = modified(&self.path);
        let changed = now != looked.1;
        *looked = (Instant::now(), now);
        drop(looked);
        if !changed {
            return;
        }
        let read = std::fs::read_to_string(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(&text));
        match read {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "Token key set read again.");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
            }
            Err(error) => tracing::error!(
                path = %self.path.display(),
                %error,
                "The token key set changed but cannot be used; the keys it had are kept."
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(kid: &str, k: &str) -> String {
        format!(r#"{{"keys":[{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"{k}"}}]}}"#)
    }

    /// base64url of 32 bytes of `b`.
    fn k(b: u8) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b; 32])
    }

    #[test]
    fn secrets_have_a_minimum_length() {
        assert!(secret(b"secret").is_err());
        assert!(secret(&[7; 32]).is_ok());
    }

    #[test]
    fn a_key_set_needs_kids_algorithms_and_long_secrets() {
        assert!(parse(&jwks("a", &k(1))).is_ok());
        assert!(parse(r#"{"keys":[{"kty":"oct","alg":"HS256","k":"AAAA"}]}"#).is_err());
        assert!(parse(r#"{"keys":[{"kty":"oct","kid":"a","k":"AAAA"}]}"#).is_err());
        let short = parse(r#"{"keys":[{"kty":"oct","kid":"a","alg":"HS256","k":"c2VjcmV0"}]}"#);
        assert!(short.is_err_and(|e| e.contains("32 bytes")));
        assert!(parse(r#"{"keys":[]}"#).is_err());
    }

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let path = std::env::temp_dir().join(format!("mall-jwks-{}.json", std::process::id()));
        std::fs::write(&path, jwks("old", &k(1))).expect("write");
        let set = KeySet::load_with(&path, Duration::ZERO).expect("loads");
        assert!(set.find("old").is_some());
        assert!(set.find("new").is_none());
        std::fs::write(&path, jwks("new", &k(2))).expect("rewrite");
        // Until the file system shows a new modification time.
        let found = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            set.find("new").is_some()
        });
        assert!(found, "the new key is found without a restart");
        assert!(set.find("old").is_none(), "the old key is gone");
        std::fs::write(&path, "garbage").expect("break");
        let _ = (0..10).all(|_| {
            std::thread::sleep(Duration::from_millis(20));
            set.find("new").is_some()
        });
        assert!(set.find("new").is_some(), "a broken file keeps the keys");
        std::fs::remove_file(&path).ok();
    }
}
