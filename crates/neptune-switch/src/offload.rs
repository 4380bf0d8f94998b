//! TUN offloads for the userspace data plane, in userspace (std only).
//!
//! With `IFF_VNET_HDR` and `TUNSETOFFLOAD(TSO4 | CSUM)` the kernel hands the
//! home switch whole TCP super-packets (up to 64 KB, one read) with a
//! `virtio_net_hdr` in front. RFC 2003 carries ordinary packets, so the home
//! switch cuts them into MSS-sized segments ([`segment_tcp4`]) and sends the
//! batch with one `sendmmsg`. The foreign switch does the reverse
//! ([`Coalescer`]): consecutive in-order segments of one TCP flow become one
//! super-packet, written to its TUN in one `write` with a header asking the
//! kernel to segment it again (which veth passes through to the VM untouched).
//! Checksums the kernel left partial ([`complete_checksum`]) are completed.
//! When the home switch hands super-packets to its own stack (see
//! `dataplane::userspace`), they usually reach the foreign switch whole,
//! with the inner checksum still partial: [`whole_super_packet`] checks such
//! a packet and gives the GSO header for one write; [`partial_checksum_hdr`]
//! covers single segments in the same state.

use std::net::Ipv4Addr;

use crate::packet::{checksum, Drop, Ipv4Header};

/// Length of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN`: the super-packet's first segment carries CWR.
pub const GSO_ECN: u8 = 0x80;

const TCP: u8 = 6;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;
/// Largest IPv4 packet.
const MAX_SUPER: usize = 65535;

/// `struct virtio_net_hdr` (native endianness, as TUN uses by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// Flags (`NEEDS_CSUM`).
    pub flags: u8,
    /// GSO type.
    pub gso_type: u8,
    /// Length of the headers.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let b = buf.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Ones'-complement sum of `data` added to `acc` (not folded).
fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so the accumulator never overflows.
        if acc > 0xFFFF_0000 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::try_from(acc).unwrap_or(u16::MAX)
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(proto),
        u16::try_from(len).unwrap_or(u16::MAX),
    ];
    words.iter().map(|w| u32::from(*w)).sum()
}

/// The folded TCP pseudo-header sum, what a partial checksum field holds.
pub fn pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, tcp_len: usize) -> u16 {
    fold(pseudo(src, dst, TCP, tcp_len))
}

/// Completes a checksum the kernel left partial: the field at
/// `start + offset` holds the pseudo-header sum; the rest is summed from `start`.
pub fn complete_checksum(pkt: &mut [u8], start: usize, offset: usize) -> Result<(), Drop> {
    let at = start.checked_add(offset).ok_or(Drop::Malformed)?;
    if at + 2 > pkt.len() || start > pkt.len() {
        return Err(Drop::Malformed);
    }
    let c = !fold(sum(&pkt[start..], 0));
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

fn tcp_checksum_ok(ip: &Ipv4Header, pkt: &[u8]) -> bool {
    let seg = &pkt[ip.header_len..ip.total_len];
    fold(sum(seg, pseudo(ip.src, ip.dst, TCP, seg.len()))) == 0xffff
}

/// Whether the TCP checksum field holds only the pseudo-header sum: what the
/// kernel leaves in a packet whose checksum is still to be completed
/// (`CHECKSUM_PARTIAL`), and what a reader sees of such a packet when it is
/// delivered within one host without ever being put on a wire.
fn tcp_checksum_partial(ip: &Ipv4Header, pkt: &[u8]) -> bool {
    let t = ip.header_len;
    let Some(field) = pkt.get(t + 16..t + 18) else {
        return false;
    };
    let partial = fold(pseudo(ip.src, ip.dst, TCP, ip.total_len - t));
    u16::from_be_bytes([field[0], field[1]]) == partial
}

/// The TCP header length of a TCPv4 packet (not a fragment), if sane.
fn tcp_header_len(ip: &Ipv4Header, pkt: &[u8]) -> Option<usize> {
    if ip.protocol != TCP || ip.fragment {
        return None;
    }
    let tcp = pkt.get(ip.header_len..ip.total_len)?;
    let thl = usize::from(*tcp.get(12)? >> 4) * 4;
    (thl >= 20 && thl <= tcp.len()).then_some(thl)
}

/// A TCPv4 packet longer than `mtu` arrived whole: a GSO super-packet that
/// crossed from the peer's stack to this one without being cut (both ends
/// on one host), or a reassembled datagram. Returns the header that asks the
/// kernel to cut it into segments that fit `mtu`; the checksum field is left
/// as a pseudo-header sum for the kernel to complete per segment. A complete
/// checksum is verified first; a partial one is trusted, only a local stack
/// writes one. `Ok(None)`: the packet fits `mtu` (or is not TCP), write it
/// as it is.
pub fn whole_super_packet(pkt: &mut [u8], mtu: usize) -> Result<Option<VnetHdr>, Drop> {
    let ip = Ipv4Header::parse(pkt)?;
    if ip.total_len <= mtu {
        return Ok(None);
    }
    let Some(thl) = tcp_header_len(&ip, pkt) else {
        return Ok(None);
    };
    let hdrs = ip.header_len + thl;
    let mss = mtu
        .checked_sub(hdrs)
        .filter(|m| *m > 0)
        .ok_or(Drop::Malformed)?;
    let t = ip.header_len;
    if !tcp_checksum_partial(&ip, pkt) {
        if !tcp_checksum_ok(&ip, pkt) {
            return Err(Drop::Malformed);
        }
        let partial = fold(pseudo(ip.src, ip.dst, TCP, ip.total_len - t));
        pkt[t + 16..t + 18].copy_from_slice(&partial.to_be_bytes());
    }
    let cwr = pkt[t + 13] & CWR != 0;
    Ok(Some(VnetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4 | if cwr { GSO_ECN } else { 0 },
        hdr_len: u16::try_from(hdrs).map_err(|_| Drop::Malformed)?,
        gso_size: u16::try_from(mss).map_err(|_| Drop::Malformed)?,
        csum_start: u16::try_from(t).map_err(|_| Drop::Malformed)?,
        csum_offset: 16,
    }))
}

/// For a single TCPv4 segment whose checksum is still partial (cut by a GSO
/// within this host, handed over with `CHECKSUM_PARTIAL`): the header that
/// asks the kernel to complete it. `None` for anything else.
pub fn partial_checksum_hdr(pkt: &[u8]) -> Option<VnetHdr> {
    let ip = Ipv4Header::parse(pkt).ok()?;
    tcp_header_len(&ip, pkt)?;
    tcp_checksum_partial(&ip, pkt).then(|| VnetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: u16::try_from(ip.header_len).unwrap_or(0),
        csum_offset: 16,
    })
}

/// Cuts a TCPv4 super-packet into segments of at most `mss` payload bytes,
/// each a complete IPv4 packet with valid checksums, appended to the arena
/// `out` (their ranges to `ranges`); returns how many. Flags as a TCP
/// segmentation offload sets them: FIN and PSH only on the last segment, CWR
/// only on the first.
pub fn segment_tcp4(
    pkt: &[u8],
    mss: usize,
    out: &mut Vec<u8>,
    ranges: &mut Vec<std::ops::Range<usize>>,
) -> Result<usize, Drop> {
    let ip = Ipv4Header::parse(pkt)?;
    if ip.protocol != TCP || ip.fragment || mss == 0 {
        return Err(Drop::Malformed);
    }
    let tcp = pkt
        .get(ip.header_len..ip.total_len)
        .ok_or(Drop::Malformed)?;
    let thl = usize::from(tcp.get(12).ok_or(Drop::Malformed)? >> 4) * 4;
    if thl < 20 || thl > tcp.len() {
        return Err(Drop::Malformed);
    }
    let hdrs = ip.header_len + thl;
    let payload = &pkt[hdrs..ip.total_len];
    let seq0 = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let id0 = u16::from_be_bytes([pkt[4], pkt[5]]);
    let flags0 = tcp[13];
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = payload
            .get(i * mss..((i + 1) * mss).min(payload.len()))
            .unwrap_or(&[]);
        let start = out.len();
        out.extend_from_slice(&pkt[..hdrs]);
        out.extend_from_slice(chunk);
        ranges.push(start..out.len());
        let seg = &mut out[start..];
        let total = u16::try_from(seg.len()).map_err(|_| Drop::Malformed)?;
        seg[2..4].copy_from_slice(&total.to_be_bytes());
        let id = id0.wrapping_add(u16::try_from(i).unwrap_or(0));
        seg[4..6].copy_from_slice(&id.to_be_bytes());
        seg[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&seg[..ip.header_len]);
        seg[10..12].copy_from_slice(&c.to_be_bytes());
        let t = ip.header_len;
        let offset = u32::try_from(i * mss).map_err(|_| Drop::Malformed)?;
        seg[t + 4..t + 8].copy_from_slice(&seq0.wrapping_add(offset).to_be_bytes());
        let mut flags = flags0;
        if i + 1 < n {
            flags &= !(FIN | PSH);
        }
        if i > 0 {
            flags &= !CWR;
        }
        seg[t + 13] = flags;
        seg[t + 16..t + 18].copy_from_slice(&[0, 0]);
        let c = !fold(sum(&seg[t..], pseudo(ip.src, ip.dst, TCP, seg.len() - t)));
        seg[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    }
    Ok(n)
}

/// Joins consecutive in-order segments of one TCP flow into a super-packet.
#[derive(Debug, Default)]
pub struct Coalescer {
    data: Vec<u8>,
    segments: usize,
    mss: usize,
    thl: usize,
    next_seq: u32,
    closed: bool,
}

/// What to write to the TUN device: a `virtio_net_hdr` and a packet.
#[derive(Debug)]
pub struct Write<'a> {
    /// The header.
    pub hdr: VnetHdr,
    /// The packet.
    pub packet: &'a [u8],
}

impl Coalescer {
    /// Whether a segment is one GRO would merge (plain data, valid checksum).
    fn mergeable(pkt: &[u8]) -> Option<(Ipv4Header, usize, usize)> {
        let ip = Ipv4Header::parse(pkt).ok()?;
        if ip.protocol != TCP || ip.fragment || ip.header_len != 20 || pkt[1] != 0 {
            return None;
        }
        let tcp = pkt.get(20..ip.total_len)?;
        let thl = usize::from(*tcp.get(12)? >> 4) * 4;
        if thl < 20 || thl > tcp.len() || tcp[13] & (FIN | SYN | RST | URG | ECE | CWR) != 0 {
            return None;
        }
        let len = tcp.len() - thl;
        if len == 0 || !tcp_checksum_ok(&ip, pkt) {
            return None;
        }
        Some((ip, thl, len))
    }

    /// Whether anything is held.
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Offers a packet. `true`: it joined (or started) the super-packet;
    /// `false`: it cannot, flush first (and write it alone if it still cannot).
    pub fn offer(&mut self, pkt: &[u8]) -> bool {
        let Some((ip, thl, len)) = Self::mergeable(pkt) else {
            return false;
        };
        let tcp = &pkt[20..ip.total_len];
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let psh = tcp[13] & PSH != 0;
        if self.segments == 0 {
            self.data.clear();
            self.data.extend_from_slice(&pkt[..ip.total_len]);
            self.segments = 1;
            self.mss = len;
            self.thl = thl;
            self.next_seq = seq.wrapping_add(u32::try_from(len).unwrap_or(0));
            self.closed = psh;
            return true;
        }
        let first = &self.data;
        let same_flow = !self.closed
            && thl == self.thl
            && len <= self.mss
            && seq == self.next_seq
            && first[1] == pkt[1]
            && first[8] == pkt[8]
            && first[12..20] == pkt[12..20]
            // ports, ack, header length, flags but PSH, window
            && first[20..24] == pkt[20..24]
            && first[28..33] == pkt[28..33]
            && first[33] & !PSH == pkt[33] & !PSH
            && first[34..36] == pkt[34..36]
            // options (timestamps included) identical, as GRO requires
            && first[40..20 + thl] == pkt[40..20 + thl]
            && self.data.len() + len <= MAX_SUPER;
        if !same_flow {
            return false;
        }
        self.data.extend_from_slice(&pkt[20 + thl..ip.total_len]);
        self.segments += 1;
        self.next_seq = seq.wrapping_add(u32::try_from(len).unwrap_or(0));
        if len < self.mss || psh {
            self.closed = true;
            if psh {
                self.data[20 + 13] |= PSH;
            }
        }
        true
    }

    /// Takes what is held: a single packet as it came, or a super-packet
    /// with a header asking the kernel to segment it at the first segment's size.
    pub fn take(&mut self) -> Option<Write<'_>> {
        if self.segments == 0 {
            return None;
        }
        let segments = std::mem::take(&mut self.segments);
        if segments == 1 {
            return Some(Write {
                hdr: VnetHdr::default(),
                packet: &self.data,
            });
        }
        let total = self.data.len();
        let t16 = u16::try_from(total).unwrap_or(u16::MAX);
        self.data[2..4].copy_from_slice(&t16.to_be_bytes());
        self.data[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&self.data[..20]);
        self.data[10..12].copy_from_slice(&c.to_be_bytes());
        let src = Ipv4Addr::new(self.data[12], self.data[13], self.data[14], self.data[15]);
        let dst = Ipv4Addr::new(self.data[16], self.data[17], self.data[18], self.data[19]);
        // Partial checksum: the pseudo-header sum, which the kernel completes per segment.
        let partial = fold(pseudo(src, dst, TCP, total - 20));
        self.data[36..38].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: u16::try_from(20 + self.thl).unwrap_or(0),
            gso_size: u16::try_from(self.mss).unwrap_or(0),
            csum_start: 20,
            csum_offset: 16,
        };
        Some(Write {
            hdr,
            packet: &self.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::build_ipv4;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    fn tcp_packet(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 32];
        t[0..2].copy_from_slice(&5001u16.to_be_bytes());
        t[2..4].copy_from_slice(&40000u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&77u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        t.extend_from_slice(payload);
        let mut p = build_ipv4(A, B, TCP, &t).unwrap();
        p[6] = 0x40; // DF
        let c = checksum(&{
            let mut h = p[..20].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let c = !fold(sum(&p[20..], pseudo(A, B, TCP, p.len() - 20)));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn segments_are_valid_and_coalesce_back() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let sup = tcp_packet(1000, 0x10 | PSH, &payload);
        let (mut arena, mut ranges) = (Vec::new(), Vec::new());
        assert_eq!(
            segment_tcp4(&sup, 1428, &mut arena, &mut ranges).unwrap(),
            8
        );
        let segs: Vec<&[u8]> = ranges.iter().map(|r| &arena[r.clone()]).collect();
        for (i, s) in segs.iter().enumerate() {
            let ip = Ipv4Header::parse(s).unwrap();
            assert_eq!(checksum(&s[..20]), 0);
            assert!(tcp_checksum_ok(&ip, s), "segment {i}");
            assert_eq!(s[33] & PSH != 0, i == 7);
        }
        let mut c = Coalescer::default();
        for s in &segs {
            assert!(c.offer(s));
        }
        let w = c.take().unwrap();
        assert_eq!(w.hdr.gso_type, GSO_TCPV4);
        assert_eq!(w.hdr.gso_size, 1428);
        assert_eq!(&w.packet[52..], &payload[..]);
        assert_eq!(
            u16::from_be_bytes([w.packet[2], w.packet[3]]) as usize,
            w.packet.len()
        );
        assert!(c.is_empty());
    }

    #[test]
    fn refuses_gaps_other_flows_and_bad_checksums() {
        let a = tcp_packet(1, 0x10, &[1; 100]);
        let gap = tcp_packet(500, 0x10, &[1; 100]);
        let mut c = Coalescer::default();
        assert!(c.offer(&a));
        assert!(!c.offer(&gap));
        let single = c.take().unwrap();
        assert_eq!(single.hdr, VnetHdr::default());
        assert_eq!(single.packet, &a[..]);
        let mut bad = tcp_packet(1, 0x10, &[1; 100]);
        bad[60] ^= 0xff;
        assert!(!c.offer(&bad));
        let syn = tcp_packet(1, SYN, &[1; 10]);
        assert!(!c.offer(&syn));
        assert!(c.take().is_none());
    }

    #[test]
    fn whole_super_packets_are_checked_and_handed_to_gso() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 249) as u8).collect();
        let mut sup = tcp_packet(5, 0x10, &payload);
        let hdr = whole_super_packet(&mut sup, 1464).unwrap().unwrap();
        assert_eq!(hdr.gso_type, GSO_TCPV4);
        assert_eq!(usize::from(hdr.gso_size), 1464 - 52);
        assert_eq!((hdr.csum_start, hdr.csum_offset), (20, 16));
        // Left partial, and a partial checksum is taken as it is.
        let ip = Ipv4Header::parse(&sup).unwrap();
        assert!(tcp_checksum_partial(&ip, &sup));
        assert_eq!(whole_super_packet(&mut sup, 1464).unwrap(), Some(hdr));
        // A complete but wrong checksum is refused.
        let mut bad = tcp_packet(5, 0x10, &payload);
        bad[3000] ^= 1;
        assert!(whole_super_packet(&mut bad, 1464).is_err());
        // What fits one segment is written as it is.
        let mut small = tcp_packet(5, 0x10, &[1; 100]);
        assert_eq!(whole_super_packet(&mut small, 1464).unwrap(), None);
        assert_eq!(partial_checksum_hdr(&small), None);
        let partial = fold(pseudo(A, B, TCP, small.len() - 20));
        small[36..38].copy_from_slice(&partial.to_be_bytes());
        let h = partial_checksum_hdr(&small).unwrap();
        assert_eq!(
            (h.flags, h.gso_type, h.csum_start),
            (NEEDS_CSUM, GSO_NONE, 20)
        );
        // Headers too long for the MTU: refused, not cut at size zero.
        let mut sup = tcp_packet(5, 0x10, &payload);
        assert!(whole_super_packet(&mut sup, 40).is_err());
    }

    #[test]
    fn completes_partial_checksums_and_survives_garbage() {
        let mut p = tcp_packet(1, 0x10, &[9; 33]);
        let good = p.clone();
        let partial = fold(pseudo(A, B, TCP, p.len() - 20));
        p[36..38].copy_from_slice(&partial.to_be_bytes());
        complete_checksum(&mut p, 20, 16).unwrap();
        assert_eq!(p, good);
        assert!(complete_checksum(&mut p, 200, 16).is_err());
        let (mut out, mut ranges) = (Vec::new(), Vec::new());
        for n in 0..good.len() {
            let _ = segment_tcp4(&good[..n], 7, &mut out, &mut ranges);
            let mut c = Coalescer::default();
            let _ = c.offer(&good[..n]);
            let mut cut = good[..n].to_vec();
            let _ = whole_super_packet(&mut cut, 30);
            let _ = partial_checksum_hdr(&cut);
        }
        assert!(segment_tcp4(&good, 0, &mut out, &mut ranges).is_err());
        let h = VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 52,
            gso_size: 1428,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.to_bytes()), Some(h));
    }
}
