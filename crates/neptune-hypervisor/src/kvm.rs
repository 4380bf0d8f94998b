//! Whether KVM can run guests here: the device node is not enough.
//!
//! A host may have `/dev/kvm` and still be unable to run a guest on it (a
//! nested hypervisor that offers the device but fails every guest with
//! "KVM internal error"): libvirt then reports the domain running while it
//! sits paused. So the probe runs a guest: QEMU boots a 64 KiB firmware
//! that enters protected mode and writes to QEMU's `isa-debug-exit` port,
//! which ends QEMU with a known status. The guest's code ran, or KVM is
//! not usable.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value the firmware writes; QEMU exits with `(value << 1) | 1`.
const EXIT_VALUE: u8 = 0x31;
const EXIT_STATUS: i32 = ((EXIT_VALUE as i32) << 1) | 1;

/// How long a probe may take: a working accelerator answers in well under
/// a second (QEMU's start included); a broken one stops the guest for ever.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A firmware image that enters protected mode and then writes
/// [`EXIT_VALUE`] to the exit port. Real-mode code alone is not enough: a
/// nested hypervisor seen here runs it on KVM and then fails the guest at
/// its first switch to protected mode, as every operating system makes.
///
/// The BIOS is mapped at 0xF0000; the reset vector (0xFFFF0) jumps to
/// 0xFE000, which loads a flat GDT, sets CR0.PE and far-jumps to 32-bit
/// code: `mov al, 0x31; out 0xf4, al; hlt; jmp $`.
fn firmware() -> Vec<u8> {
    let mut image = vec![0u8; 64 * 1024];
    let mut put = |offset: usize, bytes: &[u8]| {
        image[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    // Reset vector: jmp 0xF000:0xE000.
    put(0xFFF0, &[0xEA, 0x00, 0xE0, 0x00, 0xF0]);
    put(
        0xE000,
        &[
            0xFA, // cli
            0x2E, 0x0F, 0x01, 0x16, 0x40, 0xE0, // lgdt cs:[0xE040]
            0x0F, 0x20, 0xC0, // mov eax, cr0
            0x0C, 0x01, // or al, 1
            0x0F, 0x22, 0xC0, // mov cr0, eax
            0x66, 0xEA, 0x20, 0xE0, 0x0F, 0x00, 0x08, 0x00, // jmp dword 0x08:0xFE020
        ],
    );
    // 32-bit code.
    put(0xE020, &[0xB0, EXIT_VALUE, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE]);
    // GDT descriptor (limit, base 0xFE048) and the GDT: null, code, data.
    put(0xE040, &[0x17, 0x00, 0x48, 0xE0, 0x0F, 0x00]);
    put(0xE048, &[0; 8]);
    put(0xE050, &[0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9A, 0xCF, 0x00]);
    put(0xE058, &[0xFF, 0xFF, 0x00, 0x00, 0x00, 0x92, 0xCF, 0x00]);
    image
}

/// Whether QEMU with accelerator `accel` (`kvm`, `tcg`) runs guest code:
/// `Ok(false)` when the guest did not reach its exit (an error, or no
/// answer within the timeout); `Err` when QEMU could not be run at all.
pub fn runs_guests(accel: &str) -> std::io::Result<bool> {
    let bios = scratch_path();
    std::fs::write(&bios, firmware())?;
    let result = run_probe(accel, &bios);
    let _ = std::fs::remove_file(&bios);
    result
}

fn scratch_path() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "neptune-kvm-probe-{}-{}.bin",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn run_probe(accel: &str, bios: &Path) -> std::io::Result<bool> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", accel, "-machine", "pc", "-m", "16", "-bios"])
        .arg(bios)
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x01",
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-serial",
            "none",
            "-monitor",
            "none",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code() == Some(EXIT_STATUS));
        }
        if started.elapsed() > PROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether guests should run on KVM on this host: the device exists and a
/// guest runs on it. Probed once per process (every host of `neptune up`
/// shares the machine).
pub fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| Path::new("/dev/kvm").exists() && runs_guests("kvm").unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe's guest runs under QEMU's emulation, which works wherever
    /// QEMU is installed: the firmware and the exit work.
    #[test]
    fn the_probe_guest_runs_under_emulation() {
        if Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs QEMU (qemu-system-x86)"
            );
            eprintln!(
                "SKIPPED the_probe_guest_runs_under_emulation: qemu-system-x86_64 is not installed"
            );
            return;
        }
        assert!(runs_guests("tcg").unwrap());
        // An accelerator QEMU does not have: no guest ran.
        assert!(!runs_guests("no-such-accel").unwrap());
        // KVM: whatever this host can do, the probe answers in time.
        let started = Instant::now();
        let _ = usable();
        assert!(started.elapsed() < PROBE_TIMEOUT + Duration::from_secs(5));
    }
}
