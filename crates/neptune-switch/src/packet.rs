//! Packet parsing for the userspace data plane: IPv4 headers and RFC 2003
//! IP-in-IP decapsulation. Every input is untrusted; nothing here panics
//! (fuzzed by `fuzz/fuzz_targets/switch_packet.rs`, which includes this
//! file by path: keep it free of dependencies beyond `std`).

use std::net::Ipv4Addr;
use std::ops::Range;

/// IP protocol number of IP-in-IP (RFC 2003).
pub const IPPROTO_IPIP: u8 = 4;

/// The fields of an IPv4 header the switch looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Header length in bytes.
    pub header_len: usize,
    /// Total length in bytes (header and payload).
    pub total_len: usize,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// More-fragments flag set or fragment offset non-zero.
    pub fragment: bool,
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Not a well-formed IPv4 packet.
    Malformed,
    /// Outer packet is not IP-in-IP.
    NotIpip,
    /// Outer source is not a peer switch.
    NotPeer,
    /// Inner destination is not hosted here.
    NotVisitor,
    /// No binding for the destination.
    NoBinding,
}

// Written out (no derive crate) so the fuzz target can include this file alone.
impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Drop::Malformed => "malformed packet",
            Drop::NotIpip => "not IP-in-IP",
            Drop::NotPeer => "outer source is not a peer",
            Drop::NotVisitor => "inner destination is not a visitor",
            Drop::NoBinding => "no binding",
        })
    }
}

impl std::error::Error for Drop {}

impl Ipv4Header {
    /// Parses and checks the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, Drop> {
        let first = *buf.first().ok_or(Drop::Malformed)?;
        if first >> 4 != 4 {
            return Err(Drop::Malformed);
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < 20 || buf.len() < header_len {
            return Err(Drop::Malformed);
        }
        let total_len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if total_len < header_len || total_len > buf.len() {
            return Err(Drop::Malformed);
        }
        let frag = u16::from_be_bytes([buf[6], buf[7]]);
        Ok(Ipv4Header {
            header_len,
            total_len,
            protocol: buf[9],
            ttl: buf[8],
            fragment: frag & 0x3fff != 0,
            src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
            dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
        })
    }
}

/// A checked RFC 2003 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    /// The outer header.
    pub outer: Ipv4Header,
    /// The inner header.
    pub inner: Ipv4Header,
    /// Where the inner packet lies in the buffer.
    pub inner_range: Range<usize>,
}

/// Checks an IP-in-IP packet received by the foreign switch: the outer source
/// must be a peer and the inner destination a visitor. Returns where the
/// inner packet is.
pub fn decapsulate(
    buf: &[u8],
    is_peer: impl Fn(Ipv4Addr) -> bool,
    is_visitor: impl Fn(Ipv4Addr) -> bool,
) -> Result<Decapsulated, Drop> {
    decapsulate_with(buf, is_peer, |inner| is_visitor(inner.dst))
}

/// [`decapsulate`] with any test of the inner header (a home switch also
/// accepts reverse-tunnelled packets whose source is one of its home addresses).
pub fn decapsulate_with(
    buf: &[u8],
    is_peer: impl Fn(Ipv4Addr) -> bool,
    accept_inner: impl Fn(&Ipv4Header) -> bool,
) -> Result<Decapsulated, Drop> {
    let outer = Ipv4Header::parse(buf)?;
    if outer.protocol != IPPROTO_IPIP || outer.fragment {
        return Err(Drop::NotIpip);
    }
    if !is_peer(outer.src) {
        return Err(Drop::NotPeer);
    }
    let payload = buf
        .get(outer.header_len..outer.total_len)
        .ok_or(Drop::Malformed)?;
    let inner = Ipv4Header::parse(payload)?;
    if !accept_inner(&inner) {
        return Err(Drop::NotVisitor);
    }
    let start = outer.header_len;
    Ok(Decapsulated {
        outer,
        inner,
        inner_range: start..start + inner.total_len,
    })
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The fold above leaves at most 16 bits.
    !(u16::try_from(sum).unwrap_or(u16::MAX))
}

/// Builds an IPv4 packet (20-byte header, DF clear, TTL 64) around `payload`.
/// Returns `None` if the payload is too large.
pub fn build_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Option<Vec<u8>> {
    let total = u16::try_from(20 + payload.len()).ok()?;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, protocol, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    Some(p)
}

/// Builds an IPv4/UDP datagram (UDP checksum 0, allowed over IPv4).
pub fn build_udp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    data: &[u8],
) -> Option<Vec<u8>> {
    let len = u16::try_from(8 + data.len()).ok()?;
    let mut u = Vec::with_capacity(usize::from(len));
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    build_ipv4(src, dst, 17, &u)
}

/// A VXLAN-GPE header carrying IPv4 with the given VNI.
pub fn vxlan_gpe_header(vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    // Flags: I (VNI valid) and P (next protocol present); next protocol 1 = IPv4.
    [0x0c, 0, 0, 0x01, v[1], v[2], v[3], 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
    const HOME: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    const CN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn tunnel(outer_src: Ipv4Addr, inner_dst: Ipv4Addr) -> Vec<u8> {
        let inner = build_udp(CN, 1000, inner_dst, 2000, b"hello").unwrap();
        build_ipv4(
            outer_src,
            Ipv4Addr::new(198, 18, 2, 2),
            IPPROTO_IPIP,
            &inner,
        )
        .unwrap()
    }

    #[test]
    fn decapsulates_valid_and_refuses_the_rest() {
        let p = tunnel(PEER, HOME);
        let d = decapsulate(&p, |a| a == PEER, |a| a == HOME).unwrap();
        assert_eq!(d.inner.dst, HOME);
        assert_eq!(
            &p[d.inner_range.clone()],
            &build_udp(CN, 1000, HOME, 2000, b"hello").unwrap()[..]
        );
        assert_eq!(
            decapsulate(&tunnel(CN, HOME), |a| a == PEER, |a| a == HOME),
            Err(Drop::NotPeer)
        );
        assert_eq!(
            decapsulate(&p, |a| a == PEER, |_| false),
            Err(Drop::NotVisitor)
        );
        assert_eq!(
            decapsulate(&p[..30], |_| true, |_| true),
            Err(Drop::Malformed)
        );
        let udp = build_udp(PEER, 1, HOME, 2, b"x").unwrap();
        assert_eq!(decapsulate(&udp, |_| true, |_| true), Err(Drop::NotIpip));
        assert_eq!(checksum(&p[..20]), 0);
    }

    #[test]
    fn never_panics_on_truncations_and_garbage() {
        let p = tunnel(PEER, HOME);
        for n in 0..p.len() {
            let _ = decapsulate(&p[..n], |_| true, |_| true);
        }
        let mut g = p.clone();
        for i in 0..g.len() {
            g[i] = g[i].wrapping_mul(31).wrapping_add(7);
            let _ = decapsulate(&g, |_| true, |_| true);
        }
    }
}
