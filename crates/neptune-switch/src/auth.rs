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
//!
//! The nonce cache lives in memory and dies with the process, so it cannot
//! by itself refuse, after a restart, a request captured before it. What
//! survives a restart is a [`ReplayMark`]: the newest timestamp ever
//! accepted, written to disk (fsynced) before a request with a newer
//! timestamp is accepted. A starting switch refuses every timestamp that is
//! not newer than both that mark and its own start, so nothing accepted by
//! an earlier run can be accepted again; fresh requests pass as soon as
//! their timestamp is past both. Timestamps have a resolution of one second,
//! so the mark costs at most one small write per second, whatever the
//! request rate, one number on disk, and no secret at rest.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
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
pub const MAX_NONCES: usize = 100_000;

/// A switch's key. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SwitchKey(Vec<u8>);

impl fmt::Debug for SwitchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwitchKey(<redacted>)")
    }
}

/// The shortest key accepted, in bytes (32 hex digits in a key file).
pub const MIN_KEY_BYTES: usize = 16;

impl SwitchKey {
    /// A key from bytes; at least [`MIN_KEY_BYTES`] of them.
    pub fn new(bytes: Vec<u8>) -> Result<Self, AuthError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(AuthError::WeakKey);
        }
        Ok(SwitchKey(bytes))
    }

    /// Reads a key file: hex digits (either case), surrounding whitespace
    /// ignored, at least [`MIN_KEY_BYTES`] bytes once decoded.
    pub fn from_file(path: &Path) -> Result<Self, KeyFileError> {
        let raw = std::fs::read(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        SwitchKey::from_hex_file_contents(&raw).map_err(|problem| KeyFileError::Invalid {
            path: path.to_owned(),
            problem,
        })
    }

    /// Decodes the contents of a key file. Anything but hex is refused,
    /// never taken as raw bytes: a key that the Manager reads as hex and the
    /// switch as bytes would make every call fail with `401` and no hint.
    pub fn from_hex_file_contents(raw: &[u8]) -> Result<Self, KeyProblem> {
        let start = raw
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(raw.len());
        let end = raw
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(start, |i| i + 1);
        let digits = &raw[start..end];
        if let Some(i) = digits.iter().position(|b| !b.is_ascii_hexdigit()) {
            let offset = start + i;
            let before = &raw[..offset];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = offset
                - before
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |n| n + 1)
                + 1;
            return Err(KeyProblem::NotHex {
                line,
                column,
                offset,
                found: describe_byte(raw[offset]),
            });
        }
        if digits.len() % 2 != 0 {
            return Err(KeyProblem::OddDigits {
                digits: digits.len(),
            });
        }
        let bytes = std::str::from_utf8(digits)
            .ok()
            .and_then(decode_hex)
            .unwrap_or_default();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyProblem::TooShort { bytes: bytes.len() });
        }
        Ok(SwitchKey(bytes))
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
    /// Timestamp not newer than the switch's start, or than a request
    /// accepted before it (a replay across a restart, or a clock behind).
    #[error("timestamp not after the switch's last start; sign the request again")]
    BeforeStart,
    /// The replay mark could not be written, so the request is not accepted.
    #[error("the replay mark could not be persisted")]
    Unrecorded,
    /// Key too short.
    #[error("a switch key needs at least 16 bytes")]
    WeakKey,
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("reading the key file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a usable key.
    #[error("the key file {}: {problem}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with its contents.
        problem: KeyProblem,
    },
}

/// What is wrong with the contents of a key file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// A character that is not a hex digit (inside the surrounding whitespace).
    #[error("line {line}, column {column} (byte {offset}): {found} is not a hex digit; the file must hold the key as hex text")]
    NotHex {
        /// Line, from 1.
        line: usize,
        /// Column in bytes, from 1.
        column: usize,
        /// Offset in the file, from 0.
        offset: usize,
        /// The offending byte, described.
        found: String,
    },
    /// An odd number of hex digits: not a whole number of bytes.
    #[error("{digits} hex digits, an odd number (every byte of the key is two digits)")]
    OddDigits {
        /// Hex digits found.
        digits: usize,
    },
    /// Fewer bytes than [`MIN_KEY_BYTES`].
    #[error("the key is {bytes} bytes long; at least {MIN_KEY_BYTES} bytes ({} hex digits) are needed", 2 * MIN_KEY_BYTES)]
    TooShort {
        /// Bytes decoded.
        bytes: usize,
    },
}

/// A byte as a person reading an error should see it.
fn describe_byte(b: u8) -> String {
    match b {
        b' ' => "a space".into(),
        b'\t' => "a tab".into(),
        b'\n' => "a line break".into(),
        b'\r' => "a carriage return".into(),
        b if b.is_ascii_graphic() => format!("{:?}", char::from(b)),
        b => format!("the byte 0x{b:02x}"),
    }
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

/// The newest accepted timestamp, kept on disk across restarts.
#[derive(Debug)]
pub struct ReplayMark {
    path: PathBuf,
    /// What the file holds (0: no file yet).
    persisted: u64,
}

/// Why the replay mark could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    /// The file exists but could not be read.
    #[error("reading the replay mark {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold one decimal number.
    #[error("the replay mark {} is not a decimal timestamp", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

impl ReplayMark {
    /// Reads the mark at `path`; a missing file is a mark of 0 (the start
    /// time still bounds what a first run accepts).
    pub fn load(path: &Path) -> Result<Self, MarkError> {
        let persisted = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().parse().map_err(|_| MarkError::Malformed {
                path: path.to_owned(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(MarkError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(ReplayMark {
            path: path.to_owned(),
            persisted,
        })
    }

    /// The newest timestamp accepted by any run so far.
    pub fn get(&self) -> u64 {
        self.persisted
    }

    /// Raises the mark to `ts` durably: temporary file (mode 0600), fsync,
    /// rename, fsync of the directory. A lower `ts` writes nothing.
    pub fn raise(&mut self, ts: u64) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if ts <= self.persisted {
            return Ok(());
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "replay".into());
        let tmp = dir.join(format!(".{name}.tmp"));
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{ts}")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        self.persisted = ts;
        Ok(())
    }
}

/// Verifies requests and remembers nonces.
#[derive(Debug)]
pub struct Verifier {
    key: SwitchKey,
    max_skew: u64,
    /// Timestamps at or below this are refused: the start of this run, or
    /// the newest timestamp an earlier run accepted, whichever is later.
    floor: u64,
    mark: Option<ReplayMark>,
    max_nonces: usize,
    seen: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl Verifier {
    /// A verifier that remembers nonces in memory only (tests, tools): it
    /// cannot refuse replays across a restart. The daemon uses [`Verifier::durable`].
    pub fn new(key: SwitchKey, max_skew_secs: u64) -> Self {
        Verifier {
            key,
            max_skew: max_skew_secs.max(1),
            floor: 0,
            mark: None,
            max_nonces: MAX_NONCES,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// A verifier started at `started` (seconds since the epoch) whose
    /// replay mark is `mark`: it refuses every timestamp not newer than
    /// both, and raises the mark before accepting a newer timestamp.
    pub fn durable(key: SwitchKey, max_skew_secs: u64, mark: ReplayMark, started: u64) -> Self {
        let mut v = Verifier::new(key, max_skew_secs);
        v.floor = started.max(mark.get());
        v.mark = Some(mark);
        v
    }

    /// Caps the number of nonces remembered (default [`MAX_NONCES`]).
    pub fn with_max_nonces(mut self, max: usize) -> Self {
        self.max_nonces = max;
        self
    }

    /// Timestamps at or below this are refused.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Nonces remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.len()
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
        if ts <= self.floor {
            return Err(AuthError::BeforeStart);
        }
        self.expire(now);
        if self.seen.contains_key(nonce) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= self.max_nonces {
            return Err(AuthError::Busy);
        }
        if let Some(mark) = &mut self.mark {
            // On disk before the request takes effect: a run that starts
            // after this one refuses it.
            if let Err(e) = mark.raise(ts) {
                tracing::warn!(error = %e, path = %mark.path.display(), "persisting the replay mark");
                return Err(AuthError::Unrecorded);
            }
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

    #[test]
    fn a_key_file_is_hex_or_refused_with_where_and_why() {
        let key = |text: &[u8]| SwitchKey::from_hex_file_contents(text);
        let good = "00112233445566778899aabbccddeeff";
        assert!(key(good.as_bytes()).is_ok());
        assert!(key(format!("  {}\r\n", good.to_uppercase()).as_bytes()).is_ok());
        // The same key, read as hex: it signs as the Manager's copy does.
        let from_file = key(format!("{good}\n").as_bytes()).unwrap();
        let bytes = SwitchKey::new(decode_hex(good).unwrap()).unwrap();
        assert_eq!(
            sign(&from_file, "GET", "/", 1, "n", b""),
            sign(&bytes, "GET", "/", 1, "n", b"")
        );

        let odd = key(b"00112233445566778899aabbccddeeff0\n").unwrap_err();
        assert_eq!(odd, KeyProblem::OddDigits { digits: 33 });
        let not_hex = key(b"\n  00112233g4556677\n").unwrap_err();
        assert_eq!(
            not_hex,
            KeyProblem::NotHex {
                line: 2,
                column: 11,
                offset: 11,
                found: "'g'".into()
            }
        );
        assert_eq!(
            not_hex.to_string(),
            "line 2, column 11 (byte 11): 'g' is not a hex digit; the file must hold the key as hex text"
        );
        // Binary keys (the old fallback) and keys split by a space.
        assert!(matches!(
            key(&[0xff; 32]).unwrap_err(),
            KeyProblem::NotHex { offset: 0, ref found, .. } if found == "the byte 0xff"
        ));
        assert!(matches!(
            key(b"0011223344556677 8899aabbccddeeff").unwrap_err(),
            KeyProblem::NotHex { column: 17, ref found, .. } if found == "a space"
        ));
        assert_eq!(
            key(b"0011223344556677\n").unwrap_err(),
            KeyProblem::TooShort { bytes: 8 }
        );
        assert_eq!(key(b"\n").unwrap_err(), KeyProblem::TooShort { bytes: 0 });

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ess.key");
        std::fs::write(&path, "0011223344556677\n").unwrap();
        let e = SwitchKey::from_file(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("8 bytes long"),
            "{e}"
        );
    }
    fn signed(ts: u64) -> (String, String, String) {
        let nonce = new_nonce();
        let auth = sign(&key(), "GET", "/v1/state", ts, &nonce, b"");
        (auth, ts.to_string(), nonce)
    }

    fn check(v: &mut Verifier, now: u64, r: &(String, String, String)) -> Result<(), AuthError> {
        v.verify(
            now,
            "GET",
            "/v1/state",
            Some(&r.0),
            Some(&r.1),
            Some(&r.2),
            b"",
        )
    }

    fn durable(path: &Path, started: u64) -> Verifier {
        Verifier::durable(key(), 30, ReplayMark::load(path).unwrap(), started)
    }

    #[test]
    fn a_request_accepted_before_a_restart_is_refused_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.json.replay");
        let mut first = durable(&path, 1000);
        let on_time = signed(1005);
        // A client whose clock runs 5 s ahead.
        let ahead = signed(1010);
        assert_eq!(check(&mut first, 1005, &on_time), Ok(()));
        assert_eq!(check(&mut first, 1005, &ahead), Ok(()));
        assert_eq!(check(&mut first, 1005, &on_time), Err(AuthError::Replayed));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1010\n");
        drop(first);

        // Restarted a second later: both captured requests are still
        // within the skew window, and both are refused.
        let mut second = durable(&path, 1006);
        assert_eq!(second.floor(), 1010);
        assert_eq!(
            check(&mut second, 1007, &on_time),
            Err(AuthError::BeforeStart)
        );
        assert_eq!(
            check(&mut second, 1007, &ahead),
            Err(AuthError::BeforeStart)
        );
        // Fresh requests pass once their timestamp is past the mark.
        assert_eq!(check(&mut second, 1011, &signed(1011)), Ok(()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1011\n");

        // A lost (or restored, older) mark: the start time still bounds what
        // is accepted, so a request signed before the start cannot pass.
        std::fs::remove_file(&path).unwrap();
        let mut third = durable(&path, 2000);
        assert_eq!(third.floor(), 2000);
        assert_eq!(
            check(&mut third, 2001, &signed(1999)),
            Err(AuthError::BeforeStart)
        );
        assert_eq!(
            check(&mut third, 2001, &signed(2000)),
            Err(AuthError::BeforeStart)
        );
        assert_eq!(check(&mut third, 2001, &signed(2001)), Ok(()));
    }

    #[test]
    fn nonces_and_the_mark_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mark");
        let mut v = durable(&path, 100).with_max_nonces(3);
        for ts in [101, 101, 102] {
            assert_eq!(check(&mut v, ts, &signed(ts)), Ok(()));
        }
        // Full: refused rather than forgetting a nonce early.
        assert_eq!(check(&mut v, 102, &signed(102)), Err(AuthError::Busy));
        assert_eq!(v.remembered(), 3);
        // Once they expire (twice the skew), new requests are taken again.
        let later = 102 + 2 * 30;
        for ts in later..later + 3 {
            assert_eq!(check(&mut v, ts, &signed(ts)), Ok(()));
            assert!(v.remembered() <= 3);
        }
        // On disk: one number, readable by its owner only.
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", later + 2)
        );
    }

    #[test]
    fn an_unpersisted_mark_refuses_and_a_malformed_one_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing_dir = dir.path().join("no-such-dir/mark");
        let mut v = durable(&missing_dir, 100);
        let r = signed(101);
        assert_eq!(check(&mut v, 101, &r), Err(AuthError::Unrecorded));
        assert_eq!(v.remembered(), 0, "a refused request consumed its nonce");
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "yesterday").unwrap();
        assert!(matches!(
            ReplayMark::load(&bad),
            Err(MarkError::Malformed { .. })
        ));
    }
}
