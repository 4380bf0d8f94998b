//! Typing on a VM's serial port, the pseudo-terminal QEMU holds the master
//! side of (`virsh ttyconsole` names its other side).
//!
//! QEMU reads from that terminal only while someone has it open: it
//! checks for a reader once a second (its pty backend's timer), and when
//! the last one closes it stops reading, so input written and closed at
//! once is lost. The terminal is therefore kept open for [`HOLD`] after
//! the write, and longer while the guest still answers (it is reading
//! what was typed), up to [`MAX_HOLD`]. What the guest prints meanwhile is
//! read and dropped: unread, it would fill the terminal and stall the
//! guest's console, whose output the log file keeps anyway.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Over QEMU's one-second check for a reader.
const HOLD: Duration = Duration::from_millis(1500);
/// How long a guest that keeps printing keeps the terminal open.
const MAX_HOLD: Duration = Duration::from_secs(5);
/// Quiet for this long, the guest has read what was typed.
const QUIET: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(50);

// O_NOCTTY: the Agent must not take the guest's terminal as its own.
// O_NONBLOCK: reads that find nothing return at once.
const O_NOCTTY: i32 = 0o400;
const O_NONBLOCK: i32 = 0o4000;

/// Types `input` on the terminal at `path`. Blocks for [`HOLD`] at least.
pub(super) fn type_on(path: &Path, input: &[u8]) -> std::io::Result<()> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_NOCTTY | O_NONBLOCK)
        .open(path)?;
    let began = Instant::now();
    let mut rest = input;
    while !rest.is_empty() {
        match tty.write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if began.elapsed() > MAX_HOLD {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the guest's console takes no input",
                    ));
                }
                drain(&mut tty);
                std::thread::sleep(POLL);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let written = Instant::now();
    let mut last_output = written;
    loop {
        if drain(&mut tty) {
            last_output = Instant::now();
        }
        let held = written.elapsed();
        if held >= MAX_HOLD || held >= HOLD && last_output.elapsed() >= QUIET {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// Reads what the guest printed; whether there was anything.
fn drain(tty: &mut std::fs::File) -> bool {
    let mut buf = [0u8; 4096];
    let mut any = false;
    while let Ok(n) = tty.read(&mut buf) {
        if n == 0 {
            break;
        }
        any = true;
    }
    any
}
