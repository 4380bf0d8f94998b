//! A VM's serial console kept in a file, `<data_dir>/consoles/<vm>.log`,
//! and what it tells of the guest's readiness.
//!
//! libvirt writes the file (its `<log>` element on the serial port: through
//! virtlogd, which rotates it to `<vm>.log.0`… at its `max_size`; by QEMU
//! itself under `stdio_handler = "file"`, not tried here); the adapter only
//! reads it, trims it, and writes a boundary line of its own before each
//! boot.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

/// A log longer than this at a check is cut to its last [`KEEP`] bytes:
/// a guest that prints forever must not fill the host's disk.
pub(super) const TRIM_AT: u64 = 1 << 20;
pub(super) const KEEP: u64 = 512 << 10;

/// Starts the lines the adapter adds to a log. A ready line counts only
/// after the last of them, so that a guest booting again is not taken for
/// ready on the strength of its previous boot.
const BOUNDARY: &str = "-- Neptune: ";

/// The last `max` bytes of `path`; empty when it does not exist.
pub(super) fn tail(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Cuts `path` to its last [`KEEP`] bytes when it passed [`TRIM_AT`].
///
/// In place, not by a rename: the writer (virtlogd or QEMU) keeps the file
/// open and appends to it, so its next write lands after the kept part. A
/// line written during the few microseconds of the cut may come out of
/// order or be lost, which a console can bear.
pub(super) fn trim(path: &Path) -> std::io::Result<()> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if len <= TRIM_AT {
        return Ok(());
    }
    let kept = tail(path, KEEP)?;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.set_len(0)?;
    f.write_all(&kept)
}

/// Appends the adapter's line `-- Neptune: <what> --` to `path`, creating
/// it. Only while no guest writes to it (before a boot or a restore).
pub(super) fn mark(path: &Path, what: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("\n{BOUNDARY}{what} --\n").as_bytes())
}

/// Whether `log` shows `ready_line` after its last boundary, as a whole
/// word: `NEPTUNE-READY i-1` is not `NEPTUNE-READY i-10`'s.
pub(super) fn shows_ready(log: &[u8], ready_line: &str) -> bool {
    let text = String::from_utf8_lossy(log);
    let since = text
        .rfind(&format!("\n{BOUNDARY}"))
        .map_or(&text[..], |at| &text[at + 1..]);
    since.match_indices(ready_line).any(|(at, m)| {
        since[at + m.len()..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_ready_line_counts_after_the_last_boot_only() {
        let line = "NEPTUNE-READY i-1";
        assert!(shows_ready(b"boot\r\nNEPTUNE-READY i-1\r\n", line));
        assert!(shows_ready(b"cloud-init[9]: NEPTUNE-READY i-1", line));
        assert!(!shows_ready(b"NEPTUNE-READY i-10\n", line));
        assert!(!shows_ready(b"NEPTUNE-READY i-\n", line));
        let rebooted = b"NEPTUNE-READY i-1\n\n-- Neptune: boot --\nbooting\n";
        assert!(!shows_ready(rebooted, line));
        let again = b"NEPTUNE-READY i-1\n\n-- Neptune: boot --\nNEPTUNE-READY i-1\n";
        assert!(shows_ready(again, line));
    }

    #[test]
    fn a_long_log_keeps_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("vm.log");
        assert!(tail(&log, 10).unwrap().is_empty());
        trim(&log).unwrap();
        mark(&log, "boot").unwrap();
        assert_eq!(tail(&log, 100).unwrap(), b"\n-- Neptune: boot --\n");
        let mut big = vec![b'a'; usize::try_from(TRIM_AT).unwrap()];
        big.extend_from_slice(b"the end\n");
        std::fs::write(&log, &big).unwrap();
        trim(&log).unwrap();
        let kept = std::fs::read(&log).unwrap();
        assert_eq!(kept.len() as u64, KEEP);
        assert!(kept.ends_with(b"the end\n"));
        assert_eq!(tail(&log, 4).unwrap(), b"end\n");
    }
}
