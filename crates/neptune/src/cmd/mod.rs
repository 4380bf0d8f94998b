//! One module per subcommand group.

pub(crate) mod address;
pub(crate) mod agent;
pub(crate) mod client;
pub(crate) mod placement;
pub(crate) mod switch;
pub(crate) mod topology;
pub(crate) mod up;

/// Makes the files a daemon creates its own: the database, disks, saved
/// states and templates hold tenants' data. With libvirt, QEMU runs as a
/// user of its own and must pass through the directories to the disks
/// libvirt hands it: directories stay enterable (not listable) by others.
pub(crate) fn private_files(libvirt: bool) {
    use nix::sys::stat::{umask, Mode};
    umask(Mode::from_bits_truncate(if libvirt {
        0o066
    } else {
        0o077
    }));
}
