//! A VM's disk on a host: Neptune's `prepare_disk` (a qcow2 overlay of the
//! host's base copy of the template, the base made by the host's first
//! disk of that template) against the full copy it made before
//! (`qemu-img convert -O qcow2` of the template, then `qemu-img resize`),
//! in the same process, on the same files.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use neptune_hypervisor::libvirt::{LibvirtConfig, LibvirtHypervisor};
use neptune_hypervisor::{Capacity, Hypervisor};

/// What was measured of one template.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) label: String,
    /// The template file's size (what a host copies and hashes).
    pub(crate) file_bytes: u64,
    pub(crate) disk_mib: u64,
    /// The host's first disk, the template read from the disk (dropped
    /// from the page cache first).
    pub(crate) first_cold: f64,
    /// The first disk of a second host, the template in the page cache.
    pub(crate) first_warm: f64,
    /// Later disks, the base there.
    pub(crate) overlays: Vec<f64>,
    /// The full copies of the same template to the same size.
    pub(crate) full_copies: Vec<f64>,
}

impl Figures {
    pub(crate) fn file_gib(&self) -> f64 {
        self.file_bytes as f64 / f64::from(1u32 << 30)
    }
}

/// Makes `path`, a qcow2 image of `virtual_mib` MiB whose first `data_mib`
/// MiB are random (incompressible, and no two runs' alike), the rest
/// unallocated.
pub(crate) async fn make_template(
    path: &Path,
    virtual_mib: u64,
    data_mib: u64,
) -> anyhow::Result<()> {
    let raw = path.with_extension("raw");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&raw)?);
        let mut state = u64::from(std::process::id()) << 32
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64
            | 1;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..data_mib {
            for chunk in block.chunks_exact_mut(8) {
                // xorshift64*: fast, and random enough that no compressor
                // or deduplication finds anything to save.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
            }
            f.write_all(&block)?;
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.set_len(virtual_mib << 20)?;
    }
    let made = qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path_str(&raw)?,
        path_str(path)?,
    ])
    .await;
    let _ = std::fs::remove_file(&raw);
    made?;
    std::fs::File::open(path)?.sync_all()?;
    Ok(())
}

async fn qemu_img(args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("qemu-img")
        .args(args)
        .output()
        .await
        .context("running qemu-img (install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Asks the kernel to forget `file`'s cached pages (GNU dd's `nocache`, a
/// `posix_fadvise(DONTNEED)` of the whole file): the next read comes from
/// the disk, as a template's first read on a host does.
async fn drop_from_cache(file: &Path) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("dd")
        .arg(format!("if={}", path_str(file)?))
        .args(["iflag=nocache", "count=0", "status=none"])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "dd iflag=nocache: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn host(dir: &Path) -> anyhow::Result<LibvirtHypervisor> {
    Ok(LibvirtHypervisor::new(LibvirtConfig {
        // prepare_disk needs no daemon: files and qemu-img only.
        uri: "qemu:///system".to_owned(),
        data_dir: dir.to_owned(),
        capacity: Capacity {
            cpus: 1,
            ram_mib: 1024,
            disk_mib: u64::MAX / 2,
            vm_slots: 1,
        },
        kvm: Some(false),
        public_bridge: None,
        migration: Default::default(),
        migration_max_downtime: None,
    })?)
}

async fn timed_prepare(
    hv: &LibvirtHypervisor,
    vm: &str,
    template: &str,
    disk_mib: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    hv.prepare_disk(vm, template, disk_mib).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The disk Neptune made before overlays: a full qcow2 copy of the
/// template, grown to the VM's size, renamed into place.
async fn full_copy(template: &str, dest: &Path, disk_mib: u64) -> anyhow::Result<f64> {
    let tmp = dest.with_extension("qcow2.tmp");
    let started = Instant::now();
    qemu_img(&["convert", "-O", "qcow2", template, path_str(&tmp)?]).await?;
    qemu_img(&["resize", path_str(&tmp)?, &format!("{disk_mib}M")]).await?;
    std::fs::rename(&tmp, dest)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Measures `template` (`label` in the report) with disks of `disk_mib`:
/// the first disk of two fresh hosts (template cold, then in the page
/// cache), then `runs` overlays and `runs` full copies, under `work`.
pub(crate) async fn measure(
    work: &Path,
    label: &str,
    template: &Path,
    disk_mib: u64,
    runs: usize,
) -> anyhow::Result<Figures> {
    let template_s = path_str(template)?.to_owned();
    let file_bytes = std::fs::metadata(template)?.len();
    let cold_dir: PathBuf = work.join("cold-host");
    let warm_dir: PathBuf = work.join("warm-host");
    std::fs::create_dir_all(&cold_dir)?;
    std::fs::create_dir_all(&warm_dir)?;
    let cold = host(&cold_dir)?;
    let warm = host(&warm_dir)?;

    drop_from_cache(template).await?;
    let first_cold = timed_prepare(&cold, "nt-bench-first", &template_s, disk_mib).await?;
    let first_warm = timed_prepare(&warm, "nt-bench-first", &template_s, disk_mib).await?;

    let mut overlays = Vec::with_capacity(runs);
    for i in 0..runs {
        overlays.push(timed_prepare(&cold, &format!("nt-bench-{i}"), &template_s, disk_mib).await?);
    }
    let mut full_copies = Vec::with_capacity(runs);
    for i in 0..runs {
        let dest = work.join(format!("full-{i}.qcow2"));
        full_copies.push(full_copy(&template_s, &dest, disk_mib).await?);
        std::fs::remove_file(&dest)?;
    }
    for hv in [&cold, &warm] {
        for i in 0..runs {
            hv.remove_disk(&format!("nt-bench-{i}")).await?;
        }
        hv.remove_disk("nt-bench-first").await?;
    }
    Ok(Figures {
        label: label.to_owned(),
        file_bytes,
        disk_mib,
        first_cold,
        first_warm,
        overlays,
        full_copies,
    })
}
