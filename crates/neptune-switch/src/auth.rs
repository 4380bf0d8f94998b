//! Request authentication: HMAC-SHA-256 with a key per switch.
//!
//! A request carries three headers:
//!
//! - `x-neptune-timestamp`: seconds since the Unix epoch;
//! - `x-neptune-nonce`: 16 to 64 characters `[0-9A-Za-z_-]`, never reused;
//! - `authorization: NEPTUNE-HMAC-SHA256 <hex>`, the MAC of
//!   `NEPTUNE-HMAC-SHA256\n{METHOD}\n{path?query}\n{timestamp}\n{nonce}\n{hex sha256(body)}`.
//!
//! The switch refuses a timestamp further than the allowed skew from its
//! clock, and a nonce it has already seen within twice that window (nonces
//! older than the window cannot pass the timestamp check anyway, so the
//! cache stays bounded by the request rate times the window).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Authorization scheme name.
pub const SCHEME: &str = "NEPTUNE-HMAC-SHA256";
/// Timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-neptune-timestamp";
/// Nonce header.
pub const NONCE_HEADER: &str = "x-neptune-nonce";

/// Most nonces remembered; past this, new requests are refused until old
/// ones expire (a flood cannot make the switch forget a nonce early).
const MAX_NONCES: usize = 100_000;

/// A switch's key. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SwitchKey(Vec<u8>);

impl fmt::Debug for SwitchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwitchKey(<redacted>)")
    }
}

impl SwitchKey {
    /// A key from bytes; at least 16 of them.
    pub fn new(bytes: Vec<u8>) -> Result<Self, AuthError> {
        if bytes.len() < 16 {
            return Err(AuthError::WeakKey);
        }
        Ok(SwitchKey(bytes))
    }

    /// Reads a key file: hex text (whitespace trimmed) or raw bytes.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let raw =
            std::fs::read(path).with_context(|| format!("reading key file {}", path.display()))?;
        let text = String::from_utf8_lossy(&raw);
        let trimmed = text.trim();
        let bytes = decode_hex(trimmed).unwrap_or(raw);
        Ok(SwitchKey::new(bytes)?)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> ! {
    panic!("HMAC-SHA-256 accepts keys of every length")
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No or malformed authentication headers.
    #[error("missing or malformed authentication headers")]
    Missing,
    /// Timestamp outside the allowed window.
    #[error("timestamp outside the allowed window")]
    Stale,
    /// Nonce seen before.
    #[error("nonce already used")]
    Replayed,
    /// MAC does not match.
    #[error("bad signature")]
    BadSignature,
    /// Too many requests within the window.
    #[error("too many requests in the replay window")]
    Busy,
    /// Key too short.
    #[error("a switch key needs at least 16 bytes")]
    WeakKey,
}

/// Lower-case hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parses hex (either case); `None` if not hex.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() % 2 != 0 {
        return None;
    }
    let val = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    text.as_bytes()
        .chunks(2)
        .map(|p| Some(val(p[0])? << 4 | val(p[1])?))
        .collect()
}

fn valid_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn string_to_sign(method: &str, target: &str, timestamp: u64, nonce: &str, body: &[u8]) -> String {
    let body_hash = encode_hex(&Sha256::digest(body));
    format!("{SCHEME}\n{method}\n{target}\n{timestamp}\n{nonce}\n{body_hash}")
}

/// The `authorization` header value for a request.
pub fn sign(
    key: &SwitchKey,
    method: &str,
    target: &str,
    timestamp: u64,
    nonce: &str,
    body: &[u8],
) -> String {
    let mut mac = key.mac();
    mac.update(string_to_sign(method, target, timestamp, nonce, body).as_bytes());
    format!("{SCHEME} {}", encode_hex(&mac.finalize().into_bytes()))
}

/// A fresh random nonce.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Fall back to the clock; uniqueness, not secrecy, is what matters.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = now.to_le_bytes();
    }
    encode_hex(&bytes)
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The three headers of a signed request (name, value).
pub fn signed_headers(
    key: &SwitchKey,
    method: &str,
    target: &str,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let ts = unix_now();
    let nonce = new_nonce();
    let auth = sign(key, method, target, ts, &nonce, body);
    [
        ("authorization", auth),
        (TIMESTAMP_HEADER, ts.to_string()),
        (NONCE_HEADER, nonce),
    ]
}

/// Verifies requests and remembers nonces.
#[derive(Debug)]
pub struct Verifier {
    key: SwitchKey,
    max_skew: u64,
    seen: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl Verifier {
    /// A verifier for one switch key.
    pub fn new(key: SwitchKey, max_skew_secs: u64) -> Self {
        Verifier {
            key,
            max_skew: max_skew_secs.max(1),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Checks one request at time `now`; on success its nonce is consumed.
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &mut self,
        now: u64,
        method: &str,
        target: &str,
        authorization: Option<&str>,
        timestamp: Option<&str>,
        nonce: Option<&str>,
        body: &[u8],
    ) -> Result<(), AuthError> {
        let (Some(authorization), Some(timestamp), Some(nonce)) = (authorization, timestamp, nonce)
        else {
            return Err(AuthError::Missing);
        };
        let given = authorization
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|h| decode_hex(h.trim()))
            .ok_or(AuthError::Missing)?;
        let ts: u64 = timestamp.trim().parse().map_err(|_| AuthError::Missing)?;
        if !valid_nonce(nonce) {
            return Err(AuthError::Missing);
        }
        if ts.abs_diff(now) > self.max_skew {
            return Err(AuthError::Stale);
        }
        let mut mac = self.key.mac();
        mac.update(string_to_sign(method, target, ts, nonce, body).as_bytes());
        mac.verify_slice(&given)
            .map_err(|_| AuthError::BadSignature)?;
        self.expire(now);
        if self.seen.contains_key(nonce) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= MAX_NONCES {
            return Err(AuthError::Busy);
        }
        let expiry = now.max(ts) + 2 * self.max_skew;
        self.seen.insert(nonce.to_owned(), expiry);
        self.order.push_back((expiry, nonce.to_owned()));
        Ok(())
    }

    fn expire(&mut self, now: u64) {
        while let Some((expiry, _)) = self.order.front() {
            if *expiry > now {
                break;
            }
            if let Some((_, n)) = self.order.pop_front() {
                self.seen.remove(&n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SwitchKey {
        SwitchKey::new(b"0123456789abcdef0123".to_vec()).unwrap()
    }

    #[test]
    fn accepts_once_refuses_replay_stale_and_tampering() {
        let mut v = Verifier::new(key(), 30);
        let now = 1_000_000;
        let nonce = "abcdef0123456789";
        let body = br#"{"generation":1}"#;
        let auth = sign(&key(), "PUT", "/v1/bindings/203.0.113.10", now, nonce, body);
        let ts = now.to_string();
        let call = |v: &mut Verifier, m: &str, t: &str, b: &[u8], at: u64| {
            v.verify(at, m, t, Some(&auth), Some(&ts), Some(nonce), b)
        };
        assert_eq!(
            call(&mut v, "PUT", "/v1/bindings/203.0.113.10", body, now),
            Ok(())
        );
        assert_eq!(
            call(&mut v, "PUT", "/v1/bindings/203.0.113.10", body, now),
            Err(AuthError::Replayed)
        );
        let mut fresh = Verifier::new(key(), 30);
        assert_eq!(
            call(&mut fresh, "DELETE", "/v1/bindings/203.0.113.10", body, now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            call(&mut fresh, "PUT", "/v1/bindings/203.0.113.11", body, now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            call(&mut fresh, "PUT", "/v1/bindings/203.0.113.10", b"{}", now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            call(
                &mut fresh,
                "PUT",
                "/v1/bindings/203.0.113.10",
                body,
                now + 31
            ),
            Err(AuthError::Stale)
        );
        assert_eq!(
            fresh.verify(now, "PUT", "/", None, Some(&ts), Some(nonce), body),
            Err(AuthError::Missing)
        );
        let other = SwitchKey::new(b"another key of sixteen".to_vec()).unwrap();
        let forged = sign(&other, "PUT", "/v1/bindings/203.0.113.10", now, nonce, body);
        assert_eq!(
            fresh.verify(
                now,
                "PUT",
                "/v1/bindings/203.0.113.10",
                Some(&forged),
                Some(&ts),
                Some(nonce),
                body
            ),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn nonces_expire_and_hex_round_trips() {
        let mut v = Verifier::new(key(), 1);
        let n = new_nonce();
        let a = sign(&key(), "GET", "/v1/state", 10, &n, b"");
        assert_eq!(
            v.verify(10, "GET", "/v1/state", Some(&a), Some("10"), Some(&n), b""),
            Ok(())
        );
        v.expire(100);
        assert!(v.seen.is_empty());
        assert_eq!(
            decode_hex(&encode_hex(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(decode_hex("zz"), None);
        assert!(format!("{:?}", key()).contains("redacted"));
        assert!(SwitchKey::new(vec![1; 4]).is_err());
    }
}
