//! Opening a TUN device: the one `ioctl` that safe crates here do not wrap.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const IFF_TAP: libc::c_short = 0x0002;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
/// `sizeof(struct virtio_net_hdr_v1_hash_tunnel)`: a header this long lets
/// writes carry GSO over UDP tunnels (Linux 6.17 and later).
pub(crate) const TUNNEL_VNET_HDR_LEN: usize = 24;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags, padded to 40 bytes.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    /// The union of `struct ifreq` past the flags (`sa_data` of an address).
    data: [u8; 22],
}

/// Opens `/dev/net/tun` and attaches it to the TUN/TAP device `name`
/// (creating it if needed) with `flags`; returns the file and the request
/// as the kernel left it. The device lives as long as the file.
fn attach(name: &str, flags: libc::c_short) -> io::Result<(File, IfReq)> {
    if !crate::state::valid_ifname(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid TUN/TAP name",
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; 16],
        flags,
        data: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: the descriptor is open and owned by `file` for the whole call;
    // TUNSETIFF reads and writes one `struct ifreq` (40 bytes on Linux), which
    // `IfReq` matches in size and in the layout of the fields the kernel uses
    // (name, then flags); `req` is a live, exclusively borrowed local.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((file, req))
}

/// Opens (creating if needed) the TUN device `name`, IP packets only (no
/// packet-information prefix). With `offload`, every packet carries a
/// `virtio_net_hdr` and the kernel may hand over TCPv4 super-packets with
/// partial checksums (TSO4, CSUM). The device lives as long as the file.
pub(crate) fn open_tun(name: &str, offload: bool) -> io::Result<File> {
    let (file, _) = attach(
        name,
        IFF_TUN | IFF_NO_PI | if offload { IFF_VNET_HDR } else { 0 },
    )?;
    if offload {
        // SAFETY: the descriptor is open and owned by `file`; TUNSETOFFLOAD
        // takes its argument by value (the offload flags), no memory is passed.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                TUN_F_CSUM | TUN_F_TSO4,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(file)
}

const IFF_NAPI: libc::c_short = 0x0010;

/// Opens (creating if needed) the TUN device `name` through which the home
/// switch hands RFC 2003 packets to its own IP stack, to be forwarded to the
/// peer. `IFF_NAPI` puts every write through GRO, which joins the IP-in-IP
/// segments of one TCP flow back into one GSO packet of the right kind
/// (`SKB_GSO_IPXIP4`), something a `virtio_net_hdr` cannot express; held for
/// `gro_flush_timeout` between writes, they cross the stacks up to the peer
/// as one packet. Writes carry a plain `virtio_net_hdr` (checksums left
/// partial).
pub(crate) fn open_tun_injector(name: &str) -> io::Result<File> {
    attach(name, IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_NAPI).map(|(file, _)| file)
}

/// Opens (creating if needed) the TAP device `name` through which the home
/// switch hands whole encapsulated super-packets to its own IP stack, to be
/// forwarded to the peer: writes carry a 24-byte `virtio_net_hdr` with the
/// UDP-tunnel GSO fields, so the kernel keeps one 64 KB packet up to where a
/// device really has to segment it (none between two veth ends). Returns the
/// file and the device's MAC address (frames must be sent to it).
pub(crate) fn open_tap_injector(name: &str) -> io::Result<(File, [u8; 6])> {
    let (file, req) = attach(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)?;
    let size = libc::c_int::try_from(TUNNEL_VNET_HDR_LEN).unwrap_or(libc::c_int::MAX);
    // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which
    // points at a live local for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            TUNSETVNETHDRSZ as _,
            &size as *const libc::c_int,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // The MAC sits in `ifr_hwaddr.sa_data`, right after the 2-byte family.
    let mut hw = IfReq {
        name: req.name,
        flags: 0,
        data: [0; 22],
    };
    // SAFETY: SIOCGIFHWADDR on a TUN/TAP descriptor writes one
    // `struct ifreq` (40 bytes), the size of `IfReq`; `hw` is a live local.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), SIOCGIFHWADDR as _, &mut hw as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&hw.data[..6]);
    Ok((file, mac))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ifreq_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<super::IfReq>(), 40);
    }
}
