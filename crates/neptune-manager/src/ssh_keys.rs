//! Users' SSH public keys, in OpenSSH's one-line form (`TYPE BASE64
//! [COMMENT]`, as in `~/.ssh/id_ed25519.pub`): checked, fingerprinted as
//! `ssh-keygen -l` does, and sent to every guest of the user's VIs in its
//! cloud-init seed.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The most keys a user keeps.
pub const MAX_KEYS: i64 = 32;

/// The longest key line (an RSA key of 16384 bits is about 2.8 KiB).
pub const MAX_LINE: usize = 8192;

/// The key types a guest's OpenSSH accepts.
const TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// A key that was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// `TYPE BASE64 [COMMENT]`, one line, single spaces.
    pub line: String,
    pub comment: String,
    /// `SHA256:` and the unpadded base64 of the key blob's SHA-256.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {0} bytes long; at most {MAX_LINE}")]
    TooLong(usize),
    #[error("the key is more than one line")]
    Lines,
    #[error("{0:?} is not an SSH key type (expected one of: {types})", types = TYPES.join(", "))]
    Type(String),
    #[error("the key's data is not base64")]
    Base64,
    #[error("the key's data is not a {0} key")]
    Blob(String),
}

/// Checks an OpenSSH public key line.
pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    if text.len() > MAX_LINE {
        return Err(KeyError::TooLong(text.len()));
    }
    if text.contains(['\n', '\r']) {
        return Err(KeyError::Lines);
    }
    let mut parts = text.split_whitespace();
    let kind = parts.next().unwrap_or_default();
    if !TYPES.contains(&kind) {
        return Err(KeyError::Type(kind.chars().take(40).collect()));
    }
    let data = parts.next().ok_or(KeyError::Base64)?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| KeyError::Base64)?;
    // The blob starts with its type as an SSH string (a 32-bit length).
    let named = blob
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) || blob.len() <= 4 + kind.len() {
        return Err(KeyError::Blob(kind.to_owned()));
    }
    let comment = parts.collect::<Vec<_>>().join(" ");
    let mut line = format!("{kind} {data}");
    if !comment.is_empty() {
        line.push(' ');
        line.push_str(&comment);
    }
    let digest = Sha256::digest(&blob);
    let fingerprint = format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    );
    Ok(PublicKey {
        line,
        comment,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `ssh-keygen -t ed25519 -C alice@example -N ''`; its
    /// fingerprint as `ssh-keygen -l` printed it.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILT91Hmx+45ACVNbiRLr9Od5zQ0o0M1A4izOeu5J7tZN alice@example";

    #[test]
    fn a_key_is_checked_and_fingerprinted() {
        let k = parse(&format!("  {ED25519}\n")).unwrap();
        assert_eq!(k.line, ED25519);
        assert_eq!(k.comment, "alice@example");
        assert_eq!(
            k.fingerprint,
            "SHA256:xO1umV1sxzyE5Gs7w5oaTXH4M67Uacliq3yEzy6O56w"
        );
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(parse(" "), Err(KeyError::Empty));
        assert_eq!(
            parse("ssh-dss AAAA"),
            Err(KeyError::Type("ssh-dss".to_owned()))
        );
        assert_eq!(parse("ssh-ed25519 !!!"), Err(KeyError::Base64));
        // An RSA label on an Ed25519 blob.
        let blob = ED25519.split(' ').nth(1).unwrap();
        assert_eq!(
            parse(&format!("ssh-rsa {blob}")),
            Err(KeyError::Blob("ssh-rsa".to_owned()))
        );
        assert_eq!(
            parse(&format!("{ED25519}\nssh-ed25519 AAAA")),
            Err(KeyError::Lines)
        );
        assert!(matches!(
            parse(&"x".repeat(MAX_LINE + 1)),
            Err(KeyError::TooLong(_))
        ));
    }
}
