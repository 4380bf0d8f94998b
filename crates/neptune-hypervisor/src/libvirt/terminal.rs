//! Typing on a guest's serial console. QEMU serves the serial port on a
//! pseudo-terminal and reads it only while something holds the terminal
//! open (it looks once a second), so a write from a terminal opened and
//! closed at once is lost. The adapter therefore keeps each console it
//! typed on open, in raw mode (the line discipline would otherwise echo the
//! guest's output back to it as input), with a thread that reads and drops
//! what the guest prints: the console's log file already has it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::{Arc, Mutex};

/// The consoles held open, by VM.
#[derive(Debug, Default)]
pub(super) struct Terminals {
    held: Mutex<HashMap<String, Held>>,
}

#[derive(Debug)]
struct Held {
    path: String,
    file: Arc<File>,
}

impl Terminals {
    /// Writes `input` to `vm`'s console at `path` (a `/dev/pts/N`),
    /// opening and holding it first unless it already is.
    pub(super) fn write(&self, vm: &str, path: &str, input: &[u8]) -> std::io::Result<()> {
        let file = {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            match held.get(vm) {
                Some(h) if h.path == path => h.file.clone(),
                _ => {
                    let file = Arc::new(open_raw(path)?);
                    let reader = file.clone();
                    std::thread::Builder::new()
                        .name(format!("console {vm}"))
                        .spawn(move || drain(&reader))?;
                    held.insert(
                        vm.to_owned(),
                        Held {
                            path: path.to_owned(),
                            file: file.clone(),
                        },
                    );
                    file
                }
            }
        };
        (&*file).write_all(input)
    }

    /// Lets `vm`'s console go (the VM stopped or left the host).
    pub(super) fn forget(&self, vm: &str) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(vm);
    }
}

/// Opens the terminal without making it the process's own, in raw mode.
fn open_raw(path: &str) -> std::io::Result<File> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOCTTY.bits())
        .open(path)?;
    let mut attrs = tcgetattr(&file).map_err(std::io::Error::from)?;
    cfmakeraw(&mut attrs);
    tcsetattr(&file, SetArg::TCSANOW, &attrs).map_err(std::io::Error::from)?;
    Ok(file)
}

/// Reads until the terminal goes (the guest stopped), dropping the text.
fn drain(file: &File) {
    let mut buf = [0u8; 4096];
    loop {
        match (&*file).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
