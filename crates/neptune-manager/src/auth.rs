//! Authentication: argon2 password hashes, bearer tokens (only their SHA-256
//! is stored), and the [`Caller`] every handler receives.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use neptune_store::{Role, TokenScope, UserRecord};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::{now_ms, AppState};

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Whether `value` is already a crypt(3) hash (SHA-512, SHA-256, yescrypt,
/// bcrypt or MD5 crypt), as `/etc/shadow` and cloud-init take it.
pub fn is_crypt_hash(value: &str) -> bool {
    ["$6$", "$5$", "$y$", "$2a$", "$2b$", "$2y$", "$1$"]
        .iter()
        .any(|id| value.starts_with(id))
        && value.len() > 12
        && !value.chars().any(char::is_whitespace)
}

/// The SHA-512-crypt hash (`$6$`, 5000 rounds, random salt) that a guest's
/// `/etc/shadow` holds for `password`: the only form in which the Manager
/// keeps an OS password.
pub fn crypt_password(password: &str) -> anyhow::Result<String> {
    sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default())
        .map_err(|e| anyhow::anyhow!("hashing an OS password: {e:?}"))
}

/// A new random token (256 bits, hex) and the hash stored for it.
pub fn new_token() -> anyhow::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = token_hash(&token);
    Ok((token, hash))
}

pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random password for the first admin (shown once).
pub fn generate_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// Runs password hashing on a blocking thread, at most as many at once as
/// the machine has cores: argon2 takes ~19 MiB and tens of milliseconds
/// each, so neither the async threads nor memory suffer a flood of logins.
pub(crate) async fn off_thread<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state
        .hashing
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(ApiError::Internal)
}

/// The token of an `Authorization: Bearer TOKEN` header's value; the
/// scheme is case-insensitive (RFC 9110, section 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated user making a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRecord,
    pub token_hash: String,
    /// What the request's token may do.
    pub scope: TokenScope,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() && self.scope == TokenScope::User {
            Ok(())
        } else {
            Err(ApiError::Forbidden("only administrators may do this"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Already authenticated by a middleware of this request (only the
        // Manager's own layers insert a Caller; nothing from the wire does).
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        // The console's cookie only when no bearer token is sent (see
        // `http::session` for the CSRF and origin checks it brings).
        let token = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            Some(header) => header
                .to_str()
                .ok()
                .and_then(bearer_token)
                .ok_or(ApiError::Unauthenticated)?,
            None => crate::http::session::authenticate_cookie(parts)?,
        };
        let hash = token_hash(token);
        match state.store.user_for_token(&hash, now_ms()).await {
            Ok((token, user)) => {
                // An Agent's token registers (and heartbeats) its host, and
                // nothing else: a stolen one cannot act for its user.
                // The full path: a nested router sees only its own part.
                let path = parts
                    .extensions
                    .get::<axum::extract::OriginalUri>()
                    .map_or_else(|| parts.uri.path().to_owned(), |o| o.path().to_owned());
                if matches!(token.scope, TokenScope::Agent { .. })
                    && !(parts.method == axum::http::Method::POST && path == "/api/v1/hosts")
                {
                    return Err(ApiError::Forbidden(
                        "an agent token only registers its own host",
                    ));
                }
                Ok(Caller {
                    user,
                    token_hash: hash,
                    scope: token.scope,
                })
            }
            Err(neptune_store::StoreError::NotFound { .. }) => Err(ApiError::Unauthenticated),
            Err(other) => Err(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }

    #[test]
    fn os_passwords_are_kept_as_crypt_hashes() {
        let h = crypt_password("antoxps").unwrap();
        assert!(h.starts_with("$6$"), "{h}");
        assert!(is_crypt_hash(&h));
        assert!(sha_crypt::sha512_check("antoxps", &h).is_ok());
        assert!(sha_crypt::sha512_check("wrong", &h).is_err());
        assert!(!is_crypt_hash("antoxps"));
        assert!(!is_crypt_hash("$6$"));
        assert!(!is_crypt_hash("$6$salt$with space in it"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer  ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(token_hash(&a), ha);
        assert_ne!(a, ha);
        assert_eq!(generate_password().unwrap().len(), 20);
    }
}
