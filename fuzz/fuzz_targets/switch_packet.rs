//! The Edge Service Switch's packet code (userspace data plane, RFC 2003,
//! TUN offloads) on arbitrary input: it never panics; whatever the
//! decapsulation accepts is a well-formed inner packet inside the buffer, for
//! a peer; every segment cut from a super-packet is a well-formed IPv4 packet;
//! a super-packet received whole is only handed on with segments that fit.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Included by path: this code has no dependency beyond std, so the fuzz
// build does not pull the switch daemon's dependencies.
#[allow(dead_code)]
#[path = "../../crates/neptune-switch/src/packet.rs"]
mod packet;
#[allow(dead_code)]
#[path = "../../crates/neptune-switch/src/offload.rs"]
mod offload;

fuzz_target!(|data: &[u8]| {
    let _ = packet::Ipv4Header::parse(data);
    // Half the inputs see every source as a peer; the other half only even last octets.
    let lenient = data.first().is_some_and(|b| b & 1 == 0);
    let is_peer = |a: std::net::Ipv4Addr| lenient || a.octets()[3] % 2 == 0;
    if let Ok(d) = packet::decapsulate(data, is_peer, |_| true) {
        assert!(is_peer(d.outer.src));
        let inner = data.get(d.inner_range.clone()).expect("inner range inside the packet");
        let again = packet::Ipv4Header::parse(inner).expect("inner header parses");
        assert_eq!(again, d.inner);
        assert_eq!(inner.len(), d.inner.total_len);
    }

    // Offloads: cutting a super-packet yields well-formed packets.
    let mss = usize::from(data.last().copied().unwrap_or(1)).max(1) * 8;
    let (mut arena, mut ranges) = (Vec::new(), Vec::new());
    if offload::segment_tcp4(data, mss, &mut arena, &mut ranges).is_ok() {
        for r in &ranges {
            let seg = arena.get(r.clone()).expect("segment inside the arena");
            let h = packet::Ipv4Header::parse(seg).expect("segment parses");
            assert_eq!(h.total_len, seg.len());
        }
    }
    // Joining arbitrary pieces never panics.
    let mut joiner = offload::Coalescer::default();
    for piece in data.split(|b| *b == 0xff) {
        if !joiner.offer(piece) {
            let _ = joiner.take();
            let _ = joiner.offer(piece);
        }
    }
    let _ = joiner.take();
    let mut copy = data.to_vec();
    let start = usize::from(data.first().copied().unwrap_or(0));
    let _ = offload::complete_checksum(&mut copy, start, 16);
    // A super-packet received whole: the header asks for segments that fit
    // the MTU, and what the checksum check lets through still parses.
    let mut whole = data.to_vec();
    let mtu = usize::from(data.get(1).copied().unwrap_or(0)) * 8;
    if let Ok(Some(h)) = offload::whole_super_packet(&mut whole, mtu) {
        let ip = packet::Ipv4Header::parse(&whole).expect("accepted packet parses");
        assert!(usize::from(h.hdr_len) + usize::from(h.gso_size) <= mtu);
        assert!(usize::from(h.hdr_len) < ip.total_len);
    }
    let _ = offload::partial_checksum_hdr(data);
});
