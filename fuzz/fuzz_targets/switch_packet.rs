//! The Edge Service Switch's packet parsing (userspace data plane, RFC 2003)
//! on arbitrary input: it never panics, and whatever it accepts is a
//! well-formed inner packet inside the buffer, for a peer and a visitor.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Included by path: the parser has no dependency beyond std, so the fuzz
// build does not pull the switch daemon's dependencies.
#[allow(dead_code)]
#[path = "../../crates/neptune-switch/src/packet.rs"]
mod packet;

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
});
