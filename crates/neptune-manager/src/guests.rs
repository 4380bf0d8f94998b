//! Templates built from Debian's packages by the scripts of the source
//! tree, carried inside the binary so that an installed `neptune` builds
//! them too: the tiny test template (`guest/tiny`), which boots in seconds
//! under QEMU's software emulation and reads the same cloud-init seed as a
//! full image, and `debian-12` (`guest/debian`), a real Debian 12 cloud
//! image with cloud-init, made by mmdebstrap.
//!
//! A build runs the script in a source directory next to its output: the
//! files are written there only when their content changed, so the
//! script's own check (outputs newer than its sources) skips a build that
//! is up to date.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The tiny template's script and guest files, as the source tree has them.
const TINY: &[(&str, &str)] = &[
    (
        "scripts/build-tiny-template",
        include_str!("../../../scripts/build-tiny-template"),
    ),
    ("guest/tiny/init", include_str!("../../../guest/tiny/init")),
    (
        "guest/tiny/shutdown",
        include_str!("../../../guest/tiny/shutdown"),
    ),
    (
        "guest/tiny/yaml2flat.awk",
        include_str!("../../../guest/tiny/yaml2flat.awk"),
    ),
    (
        "guest/tiny/README.md",
        include_str!("../../../guest/tiny/README.md"),
    ),
];

/// The Debian 12 template's script and files.
const DEBIAN: &[(&str, &str)] = &[
    (
        "scripts/build-debian-template",
        include_str!("../../../scripts/build-debian-template"),
    ),
    (
        "guest/debian/extlinux.conf",
        include_str!("../../../guest/debian/extlinux.conf"),
    ),
    (
        "guest/debian/cloud.cfg.d/90-neptune.cfg",
        include_str!("../../../guest/debian/cloud.cfg.d/90-neptune.cfg"),
    ),
    (
        "guest/debian/patches/cloud-init-route-to-default.patch",
        include_str!("../../../guest/debian/patches/cloud-init-route-to-default.patch"),
    ),
    (
        "guest/debian/README.md",
        include_str!("../../../guest/debian/README.md"),
    ),
];

/// The name the tiny template is registered under.
pub const TINY_TEMPLATE: &str = "neptune-tiny";

/// The name the Debian 12 template is registered under.
pub const DEBIAN_TEMPLATE: &str = "debian-12";

/// The templates `neptune template build` knows.
pub const BUILDABLE: &[&str] = &[TINY_TEMPLATE, DEBIAN_TEMPLATE];

impl Manifest {
    /// The software a template of this image carries: its packages, and
    /// what it provides besides.
    pub fn software(&self) -> Vec<neptune_api::Software> {
        let mut out: Vec<neptune_api::Software> = self
            .packages
            .iter()
            .map(|p| neptune_api::Software {
                name: p.name.clone(),
                kind: "package".to_owned(),
                version: p.version.clone(),
            })
            .collect();
        for name in &self.provides {
            if !out.iter().any(|s| &s.name == name) {
                out.push(neptune_api::Software {
                    name: name.clone(),
                    kind: "provided".to_owned(),
                    version: String::new(),
                });
            }
        }
        out
    }
}

/// A built template: its image and what its manifest says.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: PathBuf,
    pub manifest: Manifest,
}

/// The manifest a build writes beside the image.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub os: String,
    pub version: String,
    #[serde(default)]
    pub packages: Vec<Package>,
    /// What the image offers by other names than its packages' (`httpd`
    /// of BusyBox, say).
    #[serde(default)]
    pub provides: Vec<String>,
    pub virtual_size: u64,
    pub sha256: String,
    pub format: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
}

/// Builds the tiny template into `out` (`neptune-tiny.qcow2` and
/// `neptune-tiny.json`), or finds it built: about 10 s. Needs the Debian
/// packages its script names, and apt's lists (it fetches Debian's cloud
/// kernel with `apt-get download`).
pub async fn build_tiny(out: &Path) -> anyhow::Result<Built> {
    build(out, TINY, "scripts/build-tiny-template", "neptune-tiny").await
}

/// Builds the Debian 12 template into `out` (`debian-12.qcow2` and
/// `debian-12.json`), or finds it built: minutes (mmdebstrap). Needs root
/// (a loop mount for the boot loader) and the Debian packages its script
/// names.
pub async fn build_debian(out: &Path) -> anyhow::Result<Built> {
    build(out, DEBIAN, "scripts/build-debian-template", "debian-12").await
}

/// Builds the template `name` (one of [`BUILDABLE`]).
pub async fn build_named(name: &str, out: &Path) -> anyhow::Result<Built> {
    match name {
        TINY_TEMPLATE => build_tiny(out).await,
        DEBIAN_TEMPLATE => build_debian(out).await,
        other => anyhow::bail!(
            "no template named {other:?} can be built; known: {}",
            BUILDABLE.join(", ")
        ),
    }
}

async fn build(
    out: &Path,
    files: &[(&str, &str)],
    script: &str,
    stem: &str,
) -> anyhow::Result<Built> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    let source = out.join(".source");
    for (path, text) in files {
        write_if_changed(&source.join(path), text)?;
    }
    let run = tokio::process::Command::new("bash")
        .arg(source.join(script))
        .arg(&out)
        .output()
        .await
        .context("running bash")?;
    if !run.status.success() {
        anyhow::bail!(
            "building template {stem} failed:\n{}",
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    let manifest_path = out.join(format!("{stem}.json"));
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not a manifest", manifest_path.display()))?;
    Ok(Built {
        image: out.join(format!("{stem}.qcow2")),
        manifest,
    })
}

/// Writes `text` at `path` unless it is there already (its time kept).
fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if std::fs::read(path).is_ok_and(|b| b == text.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sources_are_rewritten_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a/b");
        write_if_changed(&f, "one").unwrap();
        let first = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_if_changed(&f, "one").unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), first);
        write_if_changed(&f, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "two");
    }

    #[test]
    fn the_binary_carries_every_file_of_the_tiny_guest() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/tiny");
        let mut files: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| format!("guest/tiny/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        files.sort();
        let mut carried: Vec<&str> = TINY
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| p.starts_with("guest/"))
            .collect();
        carried.sort();
        assert_eq!(files, carried);
    }
}
