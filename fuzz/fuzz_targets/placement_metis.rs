//! The METIS graph reader on arbitrary input: it never panics, and a graph
//! it accepts is consistent (edges between existing vertices, in order) and
//! writes back to a file it reads as the same graph.
#![no_main]

use libfuzzer_sys::fuzz_target;
use neptune_placement::metis::{self, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Small limits keep the fuzzer fast; the real ones only scale.
    let limits = Limits { max_nodes: 10_000, max_edges: 100_000 };
    if let Ok(g) = metis::parse(text, limits) {
        assert!(g.edges.iter().all(|&(u, v, _)| u < v && v < g.n), "edge out of range");
        assert!(g.edges.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)), "edges unsorted");
        let again = metis::parse(&metis::write(g.n, &g.edges), limits).expect("written graph reads back");
        assert_eq!((again.n, &again.edges), (g.n, &g.edges));
    }
});
