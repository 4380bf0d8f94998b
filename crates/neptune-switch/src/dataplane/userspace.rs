//! The userspace data plane: RFC 2003 IP-in-IP (or VXLAN-GPE) on the wire,
//! no kernel tunnel module needed.
//!
//! - Home switch: the kernel routes each bound Home Address into a TUN
//!   device (`H/32 dev nsw-tun0`); the encapsulation thread reads batches from
//!   the TUN (TCP super-packets of up to 64 KB with `IFF_VNET_HDR`), looks up
//!   the Care-of Address and encapsulates. Super-packets are handed back to
//!   this switch's own IP stack through an injector device (`nsw-tun0i`),
//!   which forwards them to the peer as GSO packets, cut to wire size only
//!   where a device needs it, like the kernel data plane does:
//!   - VXLAN-GPE wire: the whole super-packet, encapsulated, in one write to a
//!     TAP with the UDP-tunnel GSO fields of the `virtio_net_hdr`;
//!   - RFC 2003 wire: one write per IP-in-IP segment to a NAPI TUN, whose GRO
//!     joins them again into one `SKB_GSO_IPXIP4` packet.
//!
//!   Other packets (and everything on kernels that refuse the injector) go
//!   out through `sendmmsg` on a raw IPPROTO_IPIP socket bound to this
//!   switch's Care-of Address, or, VXLAN-GPE, as `UDP_SEGMENT` trains.
//! - Foreign switch: the decapsulation thread receives batches with
//!   `recvmmsg` on the same socket, checks the outer source is a peer and
//!   the inner destination a visitor, and writes the inner packet to the TUN,
//!   from where the kernel routes it to the visitor's port: a super-packet
//!   that arrived whole in one write with a GSO header, segments joined into
//!   one where they follow each other. Everything else is dropped and
//!   counted.
//!
//! MTU: the TUN's MTU is 1480 (1500 minus the outer header; 1464 with
//! VXLAN-GPE), so full-size packets with DF draw "fragmentation needed" from
//! the home switch. The VI tunnel key is not carried by RFC 2003 (no key
//! field); VXLAN-GPE carries it as the VNI.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmmsg, recvmsg, sendmmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags,
    MultiHeaders, SockaddrIn,
};
use socket2::{Domain, Protocol, Socket, Type};

use super::{DataPlane, DataPlaneError, DataPlaneStats, Routes};
use crate::config::{SwitchConfig, UserspaceConfig, UserspaceWire};
use crate::netlink::{set_ipv4_conf, Netlink, RouteTarget};
use crate::offload::{
    complete_checksum, partial_checksum_hdr, segment_tcp4, whole_super_packet, Coalescer, VnetHdr,
    GSO_NONE, GSO_TCPV4, NEEDS_CSUM, VNET_HDR_LEN,
};
use crate::packet::{
    decapsulate_with, vxlan_gpe_header, Drop as Dropped, Ipv4Header, IPPROTO_IPIP,
};
use crate::prefix::Ipv4Prefix;
use crate::state::{Forwarding, SwitchTable};

const BUF: usize = 65536;

#[derive(Debug, Default)]
struct Counters {
    encapsulated: AtomicU64,
    decapsulated: AtomicU64,
    dropped_not_peer: AtomicU64,
    dropped_not_visitor: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_no_binding: AtomicU64,
    send_errors: AtomicU64,
    super_packets: AtomicU64,
    wire_reads: AtomicU64,
    coalesced_writes: AtomicU64,
    tun_write_errors: AtomicU64,
    injected: AtomicU64,
    whole_received: AtomicU64,
}

#[derive(Debug, Default)]
struct Tables {
    /// Home Address -> Care-of Address (home switch).
    bindings: HashMap<Ipv4Addr, Ipv4Addr>,
    /// Addresses delivered here (foreign switch).
    visitors: HashSet<Ipv4Addr>,
    /// Reverse-tunnelled visitors -> their home switch.
    reverse: HashMap<Ipv4Addr, Ipv4Addr>,
    /// Tunnel key per address (VNI on the VXLAN-GPE wire).
    keys: HashMap<Ipv4Addr, u32>,
    peers: HashSet<Ipv4Addr>,
    home_prefixes: Vec<Ipv4Prefix>,
}

#[derive(Debug)]
struct Shared {
    tables: RwLock<Tables>,
    counters: Counters,
    stop: AtomicBool,
}

/// TUN + raw IP-in-IP sockets.
#[derive(Debug)]
pub struct UserspacePlane {
    routes: Mutex<Routes>,
    tun_index: u32,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl UserspacePlane {
    /// Creates the TUN device and the raw socket, and starts both threads.
    pub fn start(config: &SwitchConfig, u: &UserspaceConfig) -> Result<Self, DataPlaneError> {
        let tun = super::tun::open_tun(&u.tun, u.offload || u.wire == UserspaceWire::VxlanGpe)?;
        nix::fcntl::fcntl(
            &tun,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(std::io::Error::from)?;
        let mut nl = Netlink::open()?;
        let tun_index = Netlink::index(&u.tun)?;
        // VXLAN-GPE adds 36 bytes on the wire instead of 20.
        let mtu = match u.wire {
            UserspaceWire::Ipip => u.mtu,
            UserspaceWire::VxlanGpe => u.mtu.min(1500 - 36),
        };
        nl.set_up(tun_index, Some(mtu))?;
        set_ipv4_conf(&u.tun, "rp_filter", "0")?;
        let mut routes = Routes {
            nl,
            visitor_table: u.visitor_table,
            rule_base: u.rule_base,
            peers: config.peers.clone(),
            home_prefixes: config.home_prefixes.clone(),
            ingress: u.tun.clone(),
        };
        routes.blackhole_home()?;
        routes.confine_ingress()?;

        let gpe = u.wire == UserspaceWire::VxlanGpe;
        let injector = if gpe && u.inject {
            Some(Injector::open(&mut routes.nl, &u.tun, config.care_of)?)
        } else {
            None
        };
        let ipip_injector = if !gpe && u.offload && u.inject {
            Some(IpipInjector::open(&mut routes.nl, &u.tun, config.care_of)?)
        } else {
            None
        };
        let sock = if gpe {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddrV4::new(config.care_of, u.port).into())?;
            // Receive coalesced datagrams (one read per train of segments).
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::UdpGroSegment, &true)
                .map_err(std::io::Error::from)?;
            s
        } else {
            let s = Socket::new(
                Domain::IPV4,
                Type::RAW,
                Some(Protocol::from(i32::from(IPPROTO_IPIP))),
            )?;
            s.bind(&SocketAddrV4::new(config.care_of, 0).into())?;
            s
        };
        sock.set_recv_buffer_size(8 << 20)?;
        sock.set_send_buffer_size(8 << 20)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;

        let shared = Arc::new(Shared {
            tables: RwLock::new(Tables {
                peers: config.peers.iter().copied().collect(),
                home_prefixes: config.home_prefixes.clone(),
                ..Tables::default()
            }),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        });
        let tun = Arc::new(tun);
        let sock = Arc::new(sock);
        let batch = u.batch;
        // The VXLAN-GPE wire is built around the offloads.
        let offload = u.offload || gpe;
        let port = u.port;
        let inner_mtu = usize::try_from(mtu).unwrap_or(usize::MAX);
        let mut threads = Vec::new();
        {
            let (tun, sock, shared) = (tun.clone(), sock.clone(), shared.clone());
            threads.push(std::thread::Builder::new().name("ess-encap".into()).spawn(
                move || {
                    if gpe {
                        encap_loop_gpe(&tun, &sock, &shared, batch, port, injector)
                    } else {
                        encap_loop(&tun, &sock, &shared, batch, offload, ipip_injector)
                    }
                },
            )?);
        }
        {
            let (tun, sock, shared) = (tun, sock, shared.clone());
            threads.push(std::thread::Builder::new().name("ess-decap".into()).spawn(
                move || {
                    if gpe {
                        decap_loop_gpe(&tun, &sock, &shared, inner_mtu)
                    } else {
                        decap_loop(&tun, &sock, &shared, batch, offload, inner_mtu)
                    }
                },
            )?);
        }
        Ok(UserspacePlane {
            routes: Mutex::new(routes),
            tun_index,
            shared,
            threads: Mutex::new(threads),
        })
    }
}

impl Drop for UserspacePlane {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Ok(mut threads) = self.threads.lock() {
            for t in threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Most segments sent per `sendmmsg`.
const SEND_BATCH: usize = 256;

fn encap_loop(
    tun: &File,
    sock: &Socket,
    shared: &Shared,
    batch: usize,
    offload: bool,
    mut injector: Option<IpipInjector>,
) {
    let mut bufs = vec![vec![0u8; BUF + VNET_HDR_LEN]; batch];
    let mut lens = vec![0usize; batch];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(SEND_BATCH, None);
    // Packets to send, copied (or cut) into one arena.
    let mut arena: Vec<u8> = Vec::with_capacity(batch * 2048);
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut addrs: Vec<Option<SockaddrIn>> = Vec::new();
    let skip = if offload { VNET_HDR_LEN } else { 0 };
    let c = &shared.counters;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(tun.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "polling the TUN device");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let mut n = 0;
        while n < batch {
            match (&*tun).read(&mut bufs[n]) {
                Ok(len) => {
                    lens[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the TUN device");
                    break;
                }
            }
        }
        arena.clear();
        ranges.clear();
        addrs.clear();
        if let Ok(t) = shared.tables.read() {
            for i in 0..n {
                let Some(frame) = bufs[i].get_mut(..lens[i]) else {
                    continue;
                };
                let (vnet, pkt) = frame.split_at_mut(skip.min(frame.len()));
                let h = match Ipv4Header::parse(pkt) {
                    Ok(h) => h,
                    Err(_) => {
                        bump(&c.dropped_malformed);
                        continue;
                    }
                };
                // Home switch: by destination; foreign switch, reverse
                // tunnelling: by source.
                let Some(care_of) = t.bindings.get(&h.dst).or_else(|| t.reverse.get(&h.src)) else {
                    bump(&c.dropped_no_binding);
                    continue;
                };
                if let Some(inj) = injector.as_mut().filter(|i| i.working && h.protocol == 6) {
                    match inj.send(vnet, pkt, *care_of) {
                        Ok(true) => {
                            if VnetHdr::parse(vnet).is_some_and(|v| v.gso_type == GSO_TCPV4) {
                                bump(&c.super_packets);
                            }
                            bump(&c.injected);
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            tracing::warn!(error = %e, "the kernel refuses injected IP-in-IP; back to the raw socket");
                            inj.working = false;
                        }
                        Err(_) => {
                            bump(&c.send_errors);
                            continue;
                        }
                    }
                }
                let to = SockaddrIn::from(SocketAddrV4::new(*care_of, 0));
                let before = ranges.len();
                let ok = match VnetHdr::parse(vnet) {
                    Some(v) if v.gso_type == GSO_TCPV4 => {
                        bump(&c.super_packets);
                        segment_tcp4(pkt, usize::from(v.gso_size), &mut arena, &mut ranges).is_ok()
                    }
                    Some(v) if v.gso_type != GSO_NONE => false,
                    Some(v) if v.flags & NEEDS_CSUM != 0 => {
                        let r = complete_checksum(
                            pkt,
                            usize::from(v.csum_start),
                            usize::from(v.csum_offset),
                        );
                        let start = arena.len();
                        arena.extend_from_slice(pkt);
                        ranges.push(start..arena.len());
                        r.is_ok()
                    }
                    _ => {
                        let start = arena.len();
                        arena.extend_from_slice(pkt);
                        ranges.push(start..arena.len());
                        true
                    }
                };
                if !ok {
                    ranges.truncate(before);
                    bump(&c.dropped_malformed);
                    continue;
                }
                addrs.resize(ranges.len(), Some(to));
            }
        }
        let slices: Vec<[IoSlice<'_>; 1]> = ranges
            .iter()
            .map(|r| [IoSlice::new(&arena[r.clone()])])
            .collect();
        let mut start = 0;
        while start < slices.len() {
            let sent = sendmmsg(
                sock.as_raw_fd(),
                &mut headers,
                slices[start..].iter(),
                &addrs[start..],
                [],
                MsgFlags::empty(),
            )
            .map(|r| r.count());
            match sent {
                Ok(0) | Err(_) => {
                    // The first message of the rest failed: count it, go on.
                    bump(&c.send_errors);
                    start += 1;
                }
                Ok(k) => {
                    c.encapsulated
                        .fetch_add(u64::try_from(k).unwrap_or(0), Ordering::Relaxed);
                    start += k;
                }
            }
        }
    }
}

/// Writes one packet to the TUN device (with a `virtio_net_hdr` when offloading).
fn write_tun(tun: &File, offload: bool, hdr: VnetHdr, packet: &[u8]) -> std::io::Result<usize> {
    if offload {
        let h = hdr.to_bytes();
        (&*tun).write_vectored(&[IoSlice::new(&h), IoSlice::new(packet)])
    } else {
        (&*tun).write(packet)
    }
}

fn decap_loop(tun: &File, sock: &Socket, shared: &Shared, batch: usize, offload: bool, mtu: usize) {
    let mut bufs = vec![vec![0u8; BUF]; batch];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(batch, None);
    let mut coalescer = Coalescer::default();
    let (mut cut, mut cut_ranges) = (Vec::new(), Vec::new());
    let c = &shared.counters;
    let flush = |co: &mut Coalescer| {
        if let Some(w) = co.take() {
            let coalesced = w.hdr.gso_type != GSO_NONE;
            match write_tun(tun, offload, w.hdr, w.packet) {
                Ok(_) if coalesced => bump(&c.coalesced_writes),
                Ok(_) => {}
                Err(_) => bump(&c.tun_write_errors),
            }
        }
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let lens: Vec<usize> = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(
                sock.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(r) => {
                    bump(&c.wire_reads);
                    r.map(|m| m.bytes).collect()
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving IP-in-IP");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        };
        let Ok(t) = shared.tables.read() else {
            continue;
        };
        for (buf, len) in bufs.iter_mut().zip(lens) {
            let packet = &mut buf[..len.min(BUF)];
            let accept = |inner: &Ipv4Header| {
                t.visitors.contains(&inner.dst)
                    || t.home_prefixes.iter().any(|p| p.contains(inner.src))
            };
            match decapsulate_with(packet, |a| t.peers.contains(&a), accept) {
                Ok(d) => {
                    bump(&c.decapsulated);
                    let inner = &mut packet[d.inner_range];
                    // Joined by GRO on the way and handed over whole: one write.
                    match whole_super_packet(inner, mtu) {
                        Ok(None) => {}
                        Ok(Some(hdr)) if offload => {
                            flush(&mut coalescer);
                            match write_tun(tun, true, hdr, inner) {
                                Ok(_) => bump(&c.whole_received),
                                Err(_) => bump(&c.tun_write_errors),
                            }
                            continue;
                        }
                        Ok(Some(hdr)) => {
                            // A TUN without offloads takes only packets that
                            // fit: cut it here (checksums computed afresh).
                            cut.clear();
                            cut_ranges.clear();
                            if segment_tcp4(
                                inner,
                                usize::from(hdr.gso_size),
                                &mut cut,
                                &mut cut_ranges,
                            )
                            .is_err()
                            {
                                bump(&c.dropped_malformed);
                                continue;
                            }
                            for r in &cut_ranges {
                                if write_tun(tun, false, VnetHdr::default(), &cut[r.clone()])
                                    .is_err()
                                {
                                    bump(&c.tun_write_errors);
                                }
                            }
                            bump(&c.whole_received);
                            continue;
                        }
                        Err(_) => {
                            bump(&c.dropped_malformed);
                            continue;
                        }
                    }
                    if !offload {
                        if let Some(h) = partial_checksum_hdr(inner) {
                            let _ = complete_checksum(
                                inner,
                                usize::from(h.csum_start),
                                usize::from(h.csum_offset),
                            );
                        }
                    }
                    if offload {
                        if coalescer.offer(inner) {
                            continue;
                        }
                        flush(&mut coalescer);
                        if coalescer.offer(inner) {
                            continue;
                        }
                    }
                    let hdr = if offload {
                        partial_checksum_hdr(inner).unwrap_or_default()
                    } else {
                        VnetHdr::default()
                    };
                    if write_tun(tun, offload, hdr, inner).is_err() {
                        bump(&c.tun_write_errors);
                    }
                }
                Err(Dropped::NotPeer) => bump(&c.dropped_not_peer),
                Err(Dropped::NotVisitor) => bump(&c.dropped_not_visitor),
                Err(_) => bump(&c.dropped_malformed),
            }
        }
        drop(t);
        flush(&mut coalescer);
    }
}

/// Reads up to `batch` frames from the TUN (after waiting for the first);
/// returns how many.
fn read_tun_batch(tun: &File, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> usize {
    let mut fds = [PollFd::new(tun.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(200u16)) {
        Ok(0) | Err(Errno::EINTR) => return 0,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "polling the TUN device");
            std::thread::sleep(Duration::from_millis(100));
            return 0;
        }
    }
    let mut n = 0;
    while n < bufs.len() {
        match (&*tun).read(&mut bufs[n]) {
            Ok(len) => {
                lens[n] = len;
                n += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::warn!(error = %e, "reading the TUN device");
                }
                break;
            }
        }
    }
    n
}

/// What precedes the inner packet in a frame written to the injector:
/// Ethernet, outer IPv4, UDP, VXLAN-GPE.
const INJECT_HEAD: usize = 14 + 20 + 8 + 8;
/// `VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4`.
const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
/// Source MAC of injected frames (locally administered; never seen on a wire).
const INJECT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The home switch's way to send a TCP super-packet as one VXLAN-GPE packet:
/// written, encapsulated, to a TAP device with the UDP-tunnel GSO fields of
/// the `virtio_net_hdr`, so the switch's own IP stack forwards it to the
/// peer as a GSO packet, cut into wire-size datagrams only where a device
/// needs it, as the kernel data plane does. Saves the cutting, the
/// per-segment checksums and a copy in userspace, and every per-datagram
/// cost in the stacks between the two switches.
#[derive(Debug)]
struct Injector {
    tap: File,
    mac: [u8; 6],
    care_of: Ipv4Addr,
    /// Cleared when the kernel refuses the tunnel header (before Linux 6.17):
    /// the switch then cuts super-packets itself.
    working: bool,
    ip_id: u16,
}

impl Injector {
    /// Opens the TAP (named after the TUN) and lets it hand packets from
    /// this switch's own address to the forwarding path.
    fn open(nl: &mut Netlink, tun: &str, care_of: Ipv4Addr) -> Result<Self, DataPlaneError> {
        let name = injector_name(tun);
        let (tap, mac) = super::tun::open_tap_injector(&name)?;
        let index = Netlink::index(&name)?;
        nl.set_up(index, None)?;
        set_ipv4_conf(&name, "rp_filter", "0")?;
        // The outer source is this switch's Care-of Address, a local address.
        set_ipv4_conf(&name, "accept_local", "1")?;
        set_ipv4_conf(&name, "forwarding", "1")?;
        Ok(Injector {
            tap,
            mac,
            care_of,
            working: true,
            ip_id: 0,
        })
    }

    /// Sends one TCPv4 super-packet (its header `v` as read from the TUN).
    /// `Ok(false)`: this one cannot go whole (too long once encapsulated);
    /// cut it.
    fn send(
        &mut self,
        v: VnetHdr,
        pkt: &[u8],
        to: Ipv4Addr,
        port: u16,
        key: u32,
    ) -> std::io::Result<bool> {
        let Ok(ip) = Ipv4Header::parse(pkt) else {
            return Ok(false);
        };
        let thl = pkt
            .get(ip.header_len + 12)
            .map_or(0, |b| usize::from(b >> 4) * 4);
        let outer_len = INJECT_HEAD - 14 + ip.total_len;
        let (Ok(outer_len), Ok(hdr_len), Ok(csum_start)) = (
            u16::try_from(outer_len),
            u16::try_from(INJECT_HEAD + ip.header_len + thl),
            u16::try_from(INJECT_HEAD + usize::from(v.csum_start)),
        ) else {
            return Ok(false);
        };
        if v.flags & NEEDS_CSUM == 0 || ip.total_len != pkt.len() {
            return Ok(false);
        }
        let mut h = [0u8; super::tun::TUNNEL_VNET_HDR_LEN + INJECT_HEAD];
        // struct virtio_net_hdr_v1_hash_tunnel, little-endian (the kernel
        // reads tunnel headers as virtio 1.0, whatever the host order).
        h[0] = NEEDS_CSUM;
        h[1] = GSO_UDP_TUNNEL_IPV4 | GSO_TCPV4;
        h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&v.gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&v.csum_offset.to_le_bytes());
        // num_buffers, hash value, report, padding: zero.
        h[20..22].copy_from_slice(&(14u16 + 20).to_le_bytes());
        h[22..24].copy_from_slice(&(14u16 + 20 + 16).to_le_bytes());
        let f = &mut h[super::tun::TUNNEL_VNET_HDR_LEN..];
        f[0..6].copy_from_slice(&self.mac);
        f[6..12].copy_from_slice(&INJECT_SRC_MAC);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let o = &mut f[14..];
        o[0] = 0x45;
        o[2..4].copy_from_slice(&outer_len.to_be_bytes());
        self.ip_id = self.ip_id.wrapping_add(1);
        o[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        o[6] = 0x40; // DF: path-MTU discovery, as the kernel tunnel does
                     // One more than usual: the switch's own forwarding takes one off.
        o[8] = 65;
        o[9] = 17;
        o[12..16].copy_from_slice(&self.care_of.octets());
        o[16..20].copy_from_slice(&to.octets());
        let c = crate::packet::checksum(&o[..20]);
        o[10..12].copy_from_slice(&c.to_be_bytes());
        o[20..22].copy_from_slice(&port.to_be_bytes());
        o[22..24].copy_from_slice(&port.to_be_bytes());
        o[24..26].copy_from_slice(&(outer_len - 20).to_be_bytes());
        // UDP checksum 0, as the kernel VXLAN device sends over IPv4; the
        // inner TCP checksum covers the payload.
        o[28..36].copy_from_slice(&vxlan_gpe_header(key));
        // A TAP write takes the frame whole or not at all.
        let n = (&self.tap).write_vectored(&[IoSlice::new(&h), IoSlice::new(pkt)])?;
        if n != h.len() + pkt.len() {
            return Err(std::io::Error::other("short write to the injector"));
        }
        Ok(true)
    }
}

/// The home switch's way to send RFC 2003 with GSO from userspace: each
/// IP-in-IP segment is written to a NAPI TUN device, whose GRO joins the
/// segments of a flow into one `SKB_GSO_IPXIP4` packet that the stack
/// forwards whole (and cuts again only where a device must). Segments carry
/// partial checksums: no checksum pass and no payload copy in userspace.
#[derive(Debug)]
struct IpipInjector {
    tun: File,
    care_of: Ipv4Addr,
    /// Cleared when the kernel refuses a write: the raw socket takes over.
    working: bool,
    ip_id: u16,
}

/// How long GRO may hold IP-in-IP segments between two writes (ns): enough
/// for the next segment of a super-packet, short against a round trip.
const GRO_FLUSH_NS: &str = "50000";

impl IpipInjector {
    fn open(nl: &mut Netlink, tun: &str, care_of: Ipv4Addr) -> Result<Self, DataPlaneError> {
        let name = injector_name(tun);
        let file = super::tun::open_tun_injector(&name)?;
        let index = Netlink::index(&name)?;
        nl.set_up(index, None)?;
        set_ipv4_conf(&name, "rp_filter", "0")?;
        // The outer source is this switch's Care-of Address, a local address.
        set_ipv4_conf(&name, "accept_local", "1")?;
        set_ipv4_conf(&name, "forwarding", "1")?;
        // Without it GRO flushes after every write: correct, only slower.
        if let Err(e) = std::fs::write(
            format!("/sys/class/net/{name}/gro_flush_timeout"),
            GRO_FLUSH_NS,
        ) {
            tracing::warn!(error = %e, "setting gro_flush_timeout of the IP-in-IP injector");
        }
        Ok(IpipInjector {
            tun: file,
            care_of,
            working: true,
            ip_id: 0,
        })
    }

    /// Sends one TCP packet read from the TUN (`vnet`: its header), cut into
    /// segments if it is a super-packet, each in IP-in-IP. `Ok(false)`: not
    /// a packet this path takes; send it another way.
    fn send(&mut self, vnet: &[u8], pkt: &[u8], to: Ipv4Addr) -> std::io::Result<bool> {
        let v = VnetHdr::parse(vnet).unwrap_or_default();
        let Ok(ip) = Ipv4Header::parse(pkt) else {
            return Ok(false);
        };
        if ip.protocol != 6 || ip.fragment || ip.total_len != pkt.len() {
            return Ok(false);
        }
        let t = ip.header_len;
        let thl = pkt.get(t + 12).map_or(0, |b| usize::from(b >> 4) * 4);
        let hdrs = t + thl;
        if thl < 20 || hdrs > pkt.len() || hdrs > 120 {
            return Ok(false);
        }
        let (mss, n) = match v.gso_type {
            GSO_TCPV4 if v.gso_size > 0 && v.flags & NEEDS_CSUM != 0 => {
                let mss = usize::from(v.gso_size);
                (mss, (pkt.len() - hdrs).div_ceil(mss).max(1))
            }
            GSO_NONE => (pkt.len() - hdrs, 1),
            _ => return Ok(false),
        };
        let partial = v.flags & NEEDS_CSUM != 0;
        if partial && (usize::from(v.csum_start) != t || v.csum_offset != 16) {
            return Ok(false);
        }
        let seq0 = u32::from_be_bytes([pkt[t + 4], pkt[t + 5], pkt[t + 6], pkt[t + 7]]);
        let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
        let flags0 = pkt[t + 13];
        let mut h = [0u8; VNET_HDR_LEN + 20 + 120];
        for i in 0..n {
            let payload = pkt
                .get(hdrs + i * mss..(hdrs + (i + 1) * mss).min(pkt.len()))
                .unwrap_or(&[]);
            let seg_len = hdrs + payload.len();
            let (Ok(seg_len16), Ok(outer_len)) =
                (u16::try_from(seg_len), u16::try_from(seg_len + 20))
            else {
                return Ok(false);
            };
            let head = &mut h[..VNET_HDR_LEN + 20 + hdrs];
            let vh = if partial || n > 1 {
                VnetHdr {
                    flags: NEEDS_CSUM,
                    csum_start: u16::try_from(20 + t).unwrap_or(0),
                    csum_offset: 16,
                    ..VnetHdr::default()
                }
            } else {
                VnetHdr::default()
            };
            head[..VNET_HDR_LEN].copy_from_slice(&vh.to_bytes());
            let (o, inner) = head[VNET_HDR_LEN..].split_at_mut(20);
            o.fill(0);
            o[0] = 0x45;
            o[2..4].copy_from_slice(&outer_len.to_be_bytes());
            // Consecutive IDs: GRO joins only those.
            self.ip_id = self.ip_id.wrapping_add(1);
            o[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
            o[6] = 0x40;
            // One more than usual: the switch's own forwarding takes one off.
            o[8] = 65;
            o[9] = IPPROTO_IPIP;
            o[12..16].copy_from_slice(&self.care_of.octets());
            o[16..20].copy_from_slice(&to.octets());
            let c = crate::packet::checksum(o);
            o[10..12].copy_from_slice(&c.to_be_bytes());
            inner.copy_from_slice(&pkt[..hdrs]);
            if n > 1 {
                inner[2..4].copy_from_slice(&seg_len16.to_be_bytes());
                let id = id0.wrapping_add(u16::try_from(i).unwrap_or(0));
                inner[4..6].copy_from_slice(&id.to_be_bytes());
                inner[10..12].copy_from_slice(&[0, 0]);
                let c = crate::packet::checksum(&inner[..t]);
                inner[10..12].copy_from_slice(&c.to_be_bytes());
                let offset = u32::try_from(i * mss).unwrap_or(0);
                inner[t + 4..t + 8].copy_from_slice(&seq0.wrapping_add(offset).to_be_bytes());
                // As a TSO sets them: FIN and PSH on the last segment, CWR on the first.
                let mut flags = flags0;
                if i + 1 < n {
                    flags &= !0x09;
                }
                if i > 0 {
                    flags &= !0x80;
                }
                inner[t + 13] = flags;
                let sum = crate::offload::pseudo_sum(ip.src, ip.dst, seg_len - t);
                inner[t + 16..t + 18].copy_from_slice(&sum.to_be_bytes());
            }
            let want = head.len() + payload.len();
            let written =
                (&self.tun).write_vectored(&[IoSlice::new(head), IoSlice::new(payload)])?;
            if written != want {
                return Err(std::io::Error::other("short write to the injector"));
            }
        }
        Ok(true)
    }
}

/// The injector's name: the TUN's with an `i` (cut to fit).
fn injector_name(tun: &str) -> String {
    let mut name: String = tun.chars().take(14).collect();
    name.push('i');
    name
}

/// Largest UDP payload the switch sends in one segmentation-offload call.
const MAX_GSO_BYTES: usize = 65000;
/// Most datagrams per segmentation-offload call (the kernel's limit is 64 or 128).
const MAX_GSO_SEGMENTS: usize = 64;

/// Home switch, VXLAN-GPE wire: each TCP super-packet read from the TUN is cut
/// into segments, each segment gets a GPE header, and the train of equal-size
/// datagrams leaves in one `sendmsg` with `UDP_SEGMENT`.
fn encap_loop_gpe(
    tun: &File,
    sock: &Socket,
    shared: &Shared,
    batch: usize,
    port: u16,
    mut injector: Option<Injector>,
) {
    let mut bufs = vec![vec![0u8; BUF + VNET_HDR_LEN]; batch];
    let mut lens = vec![0usize; batch];
    let mut segs: Vec<u8> = Vec::with_capacity(BUF * 2);
    let mut seg_ranges: Vec<Range<usize>> = Vec::new();
    let mut train: Vec<u8> = Vec::with_capacity(BUF * 2);
    let c = &shared.counters;
    while !shared.stop.load(Ordering::Relaxed) {
        // With the injector, one super-packet at a time: the kernel copies it
        // out of the buffer right after copying it in, while it is still in
        // cache (a batch of 64 KB reads would not fit).
        let per_read = if injector.as_ref().is_some_and(|i| i.working) {
            1
        } else {
            batch
        };
        let n = read_tun_batch(tun, &mut bufs[..per_read], &mut lens[..per_read]);
        let Ok(t) = shared.tables.read() else {
            continue;
        };
        for i in 0..n {
            let Some(frame) = bufs[i].get_mut(..lens[i]) else {
                continue;
            };
            let (vnet, pkt) = frame.split_at_mut(VNET_HDR_LEN.min(frame.len()));
            let Ok(h) = Ipv4Header::parse(pkt) else {
                bump(&c.dropped_malformed);
                continue;
            };
            let Some((care_of, key)) = t
                .bindings
                .get(&h.dst)
                .or_else(|| t.reverse.get(&h.src))
                .map(|coa| {
                    let key = t.keys.get(&h.dst).or_else(|| t.keys.get(&h.src));
                    (*coa, key.copied().unwrap_or(0))
                })
            else {
                bump(&c.dropped_no_binding);
                continue;
            };
            let v = VnetHdr::parse(vnet).unwrap_or_default();
            if let Some(inj) = injector
                .as_mut()
                .filter(|i| i.working && v.gso_type == GSO_TCPV4)
            {
                match inj.send(v, pkt, care_of, port, key) {
                    Ok(true) => {
                        bump(&c.super_packets);
                        bump(&c.injected);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        tracing::warn!(
                            "the kernel refuses UDP-tunnel GSO writes; cutting super-packets in userspace"
                        );
                        inj.working = false;
                    }
                    Err(_) => {
                        bump(&c.send_errors);
                        continue;
                    }
                }
            }
            segs.clear();
            seg_ranges.clear();
            let ok = match VnetHdr::parse(vnet) {
                Some(v) if v.gso_type == GSO_TCPV4 => {
                    bump(&c.super_packets);
                    segment_tcp4(pkt, usize::from(v.gso_size), &mut segs, &mut seg_ranges).is_ok()
                }
                Some(v) if v.gso_type != GSO_NONE => false,
                Some(v) => {
                    let r = if v.flags & NEEDS_CSUM != 0 {
                        complete_checksum(
                            pkt,
                            usize::from(v.csum_start),
                            usize::from(v.csum_offset),
                        )
                    } else {
                        Ok(())
                    };
                    segs.extend_from_slice(pkt);
                    seg_ranges.push(0..segs.len());
                    r.is_ok()
                }
                None => false,
            };
            if !ok {
                bump(&c.dropped_malformed);
                continue;
            }
            let to = SockaddrIn::from(SocketAddrV4::new(care_of, port));
            let gpe = vxlan_gpe_header(key);
            // Trains of equal-size datagrams; a shorter one ends a train.
            let mut k = 0;
            while k < seg_ranges.len() {
                train.clear();
                let size = seg_ranges[k].len() + gpe.len();
                let mut count = 0;
                while k < seg_ranges.len()
                    && count < MAX_GSO_SEGMENTS
                    && train.len() + size <= MAX_GSO_BYTES
                {
                    let r = seg_ranges[k].clone();
                    let this = r.len() + gpe.len();
                    if this > size {
                        break;
                    }
                    train.extend_from_slice(&gpe);
                    train.extend_from_slice(&segs[r]);
                    count += 1;
                    k += 1;
                    if this < size {
                        break;
                    }
                }
                let seg = u16::try_from(size).unwrap_or(u16::MAX);
                let gso = [ControlMessage::UdpGsoSegments(&seg)];
                let cmsgs: &[ControlMessage<'_>] = if count > 1 { &gso } else { &[] };
                match sendmsg(
                    sock.as_raw_fd(),
                    &[IoSlice::new(&train)],
                    cmsgs,
                    MsgFlags::empty(),
                    Some(&to),
                ) {
                    Ok(_) => {
                        c.encapsulated
                            .fetch_add(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
                    }
                    Err(_) => bump(&c.send_errors),
                }
            }
        }
    }
}

/// Foreign switch, VXLAN-GPE wire: one `recvmsg` returns a train of
/// datagrams (UDP_GRO) from one peer; each is checked and its inner packet
/// joined with the next ones of its flow before the TUN write.
fn decap_loop_gpe(tun: &File, sock: &Socket, shared: &Shared, mtu: usize) {
    let mut buf = vec![0u8; BUF];
    let mut cmsg = nix::cmsg_space!(i32);
    let mut coalescer = Coalescer::default();
    let c = &shared.counters;
    let flush = |co: &mut Coalescer| {
        if let Some(w) = co.take() {
            let coalesced = w.hdr.gso_type != GSO_NONE;
            match write_tun(tun, true, w.hdr, w.packet) {
                Ok(_) if coalesced => bump(&c.coalesced_writes),
                Ok(_) => {}
                Err(_) => bump(&c.tun_write_errors),
            }
        }
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let (bytes, from, seg) = {
            let mut iov = [IoSliceMut::new(&mut buf[..])];
            match recvmsg::<SockaddrIn>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(m) => {
                    let mut seg = None;
                    if let Ok(cmsgs) = m.cmsgs() {
                        for cm in cmsgs {
                            if let ControlMessageOwned::UdpGroSegments(s) = cm {
                                seg = usize::try_from(s).ok();
                            }
                        }
                    }
                    (m.bytes, m.address.map(|a| a.ip()), seg)
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving VXLAN-GPE");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        };
        bump(&c.wire_reads);
        let Ok(t) = shared.tables.read() else {
            continue;
        };
        let data = &mut buf[..bytes.min(BUF)];
        let seg = seg.filter(|s| *s > 0).unwrap_or(data.len().max(1));
        if !from.is_some_and(|a| t.peers.contains(&a)) {
            c.dropped_not_peer.fetch_add(
                u64::try_from(data.len().div_ceil(seg)).unwrap_or(1),
                Ordering::Relaxed,
            );
            continue;
        }
        for dgram in data.chunks_mut(seg) {
            // Flags with P (next protocol present), next protocol 1: IPv4.
            let ok_hdr = dgram.len() > 8 && dgram[0] & 0x04 != 0 && dgram[3] == 0x01;
            let Some(inner) = dgram.get_mut(8..).filter(|_| ok_hdr) else {
                bump(&c.dropped_malformed);
                continue;
            };
            let Ok(h) = Ipv4Header::parse(inner) else {
                bump(&c.dropped_malformed);
                continue;
            };
            if !(t.visitors.contains(&h.dst) || t.home_prefixes.iter().any(|p| p.contains(h.src))) {
                bump(&c.dropped_not_visitor);
                continue;
            }
            bump(&c.decapsulated);
            let inner = &mut inner[..h.total_len];
            // A super-packet the peer's stack handed over uncut: one write.
            match whole_super_packet(inner, mtu) {
                Ok(None) => {}
                Ok(Some(hdr)) => {
                    flush(&mut coalescer);
                    match write_tun(tun, true, hdr, inner) {
                        Ok(_) => bump(&c.whole_received),
                        Err(_) => bump(&c.tun_write_errors),
                    }
                    continue;
                }
                Err(_) => {
                    bump(&c.dropped_malformed);
                    continue;
                }
            }
            if coalescer.offer(inner) {
                continue;
            }
            flush(&mut coalescer);
            if coalescer.offer(inner) {
                continue;
            }
            // Alone: as it came, or, cut from a super-packet within this
            // host, with its checksum still to be completed.
            let hdr = partial_checksum_hdr(inner).unwrap_or_default();
            if write_tun(tun, true, hdr, inner).is_err() {
                bump(&c.tun_write_errors);
            }
        }
        drop(t);
        flush(&mut coalescer);
    }
}

impl DataPlane for UserspacePlane {
    fn kind(&self) -> &'static str {
        "userspace"
    }

    fn repair(&self) -> Result<(), DataPlaneError> {
        let mut routes = self.routes.lock().map_err(|_| DataPlaneError::Poisoned)?;
        let restored = routes.restore()?;
        if restored > 0 {
            tracing::warn!(
                restored,
                "policy rules of the switch were missing; added back"
            );
        }
        Ok(())
    }

    fn apply(&self, table: &SwitchTable, addrs: &[Ipv4Addr]) -> Result<(), DataPlaneError> {
        let mut routes = self.routes.lock().map_err(|_| DataPlaneError::Poisoned)?;
        let mut first_err = None;
        for addr in addrs {
            let forwarding = table.forwarding(*addr);
            // Tables first for a new binding (packets may arrive as soon as the
            // route exists), routes first for a removed one.
            {
                let mut t = self
                    .shared
                    .tables
                    .write()
                    .map_err(|_| DataPlaneError::Poisoned)?;
                match &forwarding {
                    Forwarding::Tunnel { care_of, key } => {
                        t.keys.insert(*addr, *key);
                        t.bindings.insert(*addr, *care_of);
                        t.visitors.remove(addr);
                        t.reverse.remove(addr);
                    }
                    Forwarding::Local { reverse, .. } => {
                        t.visitors.insert(*addr);
                        t.bindings.remove(addr);
                        match reverse {
                            Some((home, key)) => {
                                t.keys.insert(*addr, *key);
                                t.reverse.insert(*addr, *home)
                            }
                            None => t.reverse.remove(addr),
                        };
                    }
                    Forwarding::Absent => {}
                }
            }
            let tun = self.tun_index;
            if let Err(e) = routes.apply(*addr, &forwarding, |_, _| {
                Ok(RouteTarget::Device {
                    oif: tun,
                    via: None,
                })
            }) {
                first_err.get_or_insert(e);
            }
            if forwarding == Forwarding::Absent {
                let mut t = self
                    .shared
                    .tables
                    .write()
                    .map_err(|_| DataPlaneError::Poisoned)?;
                t.bindings.remove(addr);
                t.visitors.remove(addr);
                t.reverse.remove(addr);
                t.keys.remove(addr);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn stats(&self) -> DataPlaneStats {
        let c = &self.shared.counters;
        let mut s = DataPlaneStats {
            kind: "userspace",
            ..DataPlaneStats::default()
        };
        for (k, v) in [
            ("encapsulated", &c.encapsulated),
            ("decapsulated", &c.decapsulated),
            ("dropped_not_peer", &c.dropped_not_peer),
            ("dropped_not_visitor", &c.dropped_not_visitor),
            ("dropped_malformed", &c.dropped_malformed),
            ("dropped_no_binding", &c.dropped_no_binding),
            ("send_errors", &c.send_errors),
            ("super_packets", &c.super_packets),
            ("wire_reads", &c.wire_reads),
            ("coalesced_writes", &c.coalesced_writes),
            ("tun_write_errors", &c.tun_write_errors),
            ("injected", &c.injected),
            ("whole_received", &c.whole_received),
        ] {
            s.counters.insert(k, v.load(Ordering::Relaxed));
        }
        s
    }
}
