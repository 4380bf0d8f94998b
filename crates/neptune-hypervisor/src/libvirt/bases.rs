//! The template images a host's disks are overlays of: each copied once
//! into `<data_dir>/bases/<sha256 of its bytes>.<format>`, so that a VM's
//! disk costs a qcow2 overlay (milliseconds) instead of a copy of the whole
//! template (seconds a GiB), and the image repository may replace a
//! template while VMs run on the old one.
//!
//! Which template a base came from is kept in `bases/templates/`, one small
//! file per template path with the file's identity (device, inode, size,
//! modification time): a template seen again unchanged is not hashed again.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A template path's identity when its base was made, and that base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Origin {
    pub(super) template: String,
    pub(super) identity: Identity,
    /// The base's file name in the bases directory.
    pub(super) base: String,
}

/// What changes when a file is replaced or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

pub(super) fn identity(path: &Path) -> std::io::Result<Identity> {
    let m = std::fs::metadata(path)?;
    Ok(Identity {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// Where the origin of `template`'s base is kept.
pub(super) fn origin_path(bases: &Path, template: &str) -> PathBuf {
    bases
        .join("templates")
        .join(format!("{:016x}.json", fnv64(template)))
}

/// The base of `template` when it is unchanged since its base was made
/// and that base is still there.
pub(super) fn known_base(bases: &Path, template: &str) -> Option<PathBuf> {
    let bytes = std::fs::read(origin_path(bases, template)).ok()?;
    let origin: Origin = serde_json::from_slice(&bytes).ok()?;
    let base = bases.join(&origin.base);
    (origin.template == template
        && identity(Path::new(template)).ok()? == origin.identity
        && base.is_file())
    .then_some(base)
}

/// The temporary name of a copy of `template` in progress.
pub(super) fn incoming_path(bases: &Path, template: &str) -> PathBuf {
    bases.join(format!(".incoming-{:016x}.tmp", fnv64(template)))
}

/// Copies `src` to `tmp`, checks that the copy's SHA-256 is the one read
/// from `src`, makes it read-only and durable, and renames it to
/// `<sha256>.<format>` in `bases` (unless a base of those bytes is there
/// already). Returns the base's file name. Blocking: seconds a GiB.
pub(super) fn copy_verified(
    src: &Path,
    tmp: &Path,
    bases: &Path,
    format: &str,
) -> std::io::Result<String> {
    let source_sum = {
        let mut from = std::fs::File::open(src)?;
        let mut to = std::fs::File::create(tmp)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            to.write_all(&buf[..n])?;
        }
        to.sync_all()?;
        hex(&hasher.finalize())
    };
    let copy_sum = sha256_file(tmp)?;
    if copy_sum != source_sum {
        let _ = std::fs::remove_file(tmp);
        return Err(std::io::Error::other(format!(
            "the copy of {} reads back as SHA-256 {copy_sum}, not {source_sum}",
            src.display()
        )));
    }
    // Read-only: every overlay of it depends on its bytes staying.
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o444))?;
    let name = format!("{source_sum}.{format}");
    let base = bases.join(&name);
    if base.is_file() {
        std::fs::remove_file(tmp)?;
    } else {
        std::fs::rename(tmp, &base)?;
        std::fs::File::open(bases)?.sync_all()?;
    }
    Ok(name)
}

pub(super) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` (in the bases directory) is a base or a copy in progress,
/// as opposed to the origins' directory.
pub(super) fn is_base_file(name: &str) -> bool {
    name != "templates"
}

/// 64 bits of FNV-1a: a stable file name for a template path.
fn fnv64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_copy_is_named_by_its_hash_and_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("t.raw");
        std::fs::write(&src, b"abc").unwrap();
        let bases = dir.path().join("bases");
        std::fs::create_dir(&bases).unwrap();
        let tmp = incoming_path(&bases, "t");
        let name = copy_verified(&src, &tmp, &bases, "raw").unwrap();
        assert_eq!(
            name,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.raw"
        );
        assert_eq!(std::fs::read(bases.join(&name)).unwrap(), b"abc");
        assert!(!tmp.exists());
        assert_eq!(copy_verified(&src, &tmp, &bases, "raw").unwrap(), name);
        assert!(!tmp.exists(), "a second copy of the same bytes is dropped");
        let mode = std::fs::metadata(bases.join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
    }
}
