//! A VM's cloud-init seed as the NoCloud `cidata` volume: an ISO 9660 image
//! made by `xorriso` (Debian's package of that name), attached read-only
//! as a CD-ROM.
//!
//! The seed may hold a password hash, so neither its files nor the image
//! are ever readable by other users: they are written in a directory only
//! root can enter, the image is made there with mode 0600, and renamed
//! into `<data_dir>/seeds` whole. QEMU under the system daemon runs as a
//! user of its own and still reads it: libvirt's DAC driver hands each
//! disk of a domain, this one included, to that user for the run
//! (`dynamic_ownership`, on by default). A 0640 image would have to belong
//! to QEMU's group, which the adapter cannot know; 0600 needs no guess.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use tokio::process::Command;

use crate::Seed;

/// The volume label cloud-init's NoCloud source looks for.
pub(super) const VOLUME_ID: &str = "cidata";

/// Makes `iso` (in `seeds_dir`) from `seed`, replacing what is there. The
/// work directory is named for `vm`, so two VMs never share one.
pub(super) async fn write_iso(
    seeds_dir: &Path,
    vm: &str,
    seed: &Seed,
    iso: &Path,
) -> Result<(), String> {
    let work = seeds_dir.join(format!(".{vm}.d"));
    let made = make_in(&work, seed, iso).await;
    let _ = std::fs::remove_dir_all(&work);
    made
}

async fn make_in(work: &Path, seed: &Seed, iso: &Path) -> Result<(), String> {
    // Left by a crash half-way: its content may be anyone's guess.
    let _ = std::fs::remove_dir_all(work);
    let files = work.join(VOLUME_ID);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&files)
        .map_err(|e| format!("cannot make {}: {e}", files.display()))?;
    for (name, text) in [
        ("meta-data", &seed.meta_data),
        ("user-data", &seed.user_data),
        ("network-config", &seed.network_config),
    ] {
        let path = files.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let image = work.join("seed.iso");
    let out = Command::new("xorriso")
        .args([
            "-as", "mkisofs", "-quiet", "-V", VOLUME_ID, "-J", "-R", "-o",
        ])
        .arg(&image)
        .arg(&files)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run xorriso (Debian package xorriso): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "xorriso: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&image, iso))
        .map_err(|e| format!("cannot place {}: {e}", iso.display()))
}
