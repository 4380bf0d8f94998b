//! The XML dialect reader on arbitrary input: it never panics, and whatever
//! it accepts writes back to a document it reads as the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(topo) = neptune_topology::from_xml(text) {
        let written = neptune_topology::to_xml(&topo);
        let again = neptune_topology::from_xml(&written).expect("written XML reads back");
        assert_eq!(again, topo, "write -> read changed the model");
    }
});
