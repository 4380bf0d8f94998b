//! The JSON form reader on arbitrary input: it never panics, and whatever it
//! accepts survives the JSON round trip (less the write-only password) and
//! the XML round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(topo) = neptune_topology::from_json(text) {
        let xml = neptune_topology::from_xml(&neptune_topology::to_xml(&topo)).expect("XML reads back");
        assert_eq!(xml, topo);
        let mut without_passwords = topo;
        for node in &mut without_passwords.nodes {
            node.os.password = Default::default();
        }
        let again = neptune_topology::from_json(&neptune_topology::to_json(&without_passwords))
            .expect("JSON reads back");
        assert_eq!(again, without_passwords);
    }
});
