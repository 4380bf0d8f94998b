//! The METIS graph format (read by METIS, Scotch, KaHIP and Mt-KaHyPar):
//! a reader that reports line and column, never panics and bounds what it
//! allocates, and a writer. Edge weights are bandwidths.
//!
//! Format: `%` lines are comments. The header is `n m [fmt [ncon]]`; `fmt`
//! is up to three binary digits (vertex sizes, vertex weights, edge weights).
//! Then one line per vertex (an empty line is a vertex without neighbours):
//! `[size] [w_1 .. w_ncon] (neighbour [edge_weight])*`, neighbours 1-based,
//! every edge listed from both ends with the same weight.

use std::fmt;

use crate::model::{Resources, VirtualGraph};

/// Where and why a METIS file is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct MetisError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Bounds on what the reader accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most vertices.
    pub max_nodes: usize,
    /// Most (undirected) edges.
    pub max_edges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nodes: 10_000_000,
            max_edges: 200_000_000,
        }
    }
}

/// A graph read from METIS text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetisGraph {
    /// Number of vertices.
    pub n: usize,
    /// Vertex weights (`ncon` per vertex), empty when the file has none.
    pub vertex_weights: Vec<Vec<u64>>,
    /// Undirected edges `(u, v, weight)` with `u < v`, 0-based, sorted.
    pub edges: Vec<(usize, usize, u64)>,
}

impl MetisGraph {
    /// The VI graph: one VM per vertex (no resource demand), one link per edge.
    pub fn to_virtual_graph(&self) -> VirtualGraph {
        let mut g = VirtualGraph::with_nodes(self.n, Resources::ZERO);
        for &(a, b, w) in &self.edges {
            g.link(a, b, w);
        }
        g
    }
}

struct Tok<'a> {
    text: &'a str,
    col: usize,
}

fn tokens(line: &str) -> impl Iterator<Item = Tok<'_>> {
    let bytes = line.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        Some(Tok {
            text: line.get(start..i).unwrap_or(""),
            col: start + 1,
        })
    })
}

fn err(line: usize, column: usize, message: impl Into<String>) -> MetisError {
    MetisError {
        line,
        column,
        message: message.into(),
    }
}

fn num(t: &Tok<'_>, line: usize, what: &str) -> Result<u64, MetisError> {
    t.text.parse::<u64>().map_err(|_| {
        err(
            line,
            t.col,
            format!(
                "{what}: expected a non-negative integer, found {:?}",
                t.text
            ),
        )
    })
}

/// Reads METIS text.
pub fn parse(text: &str, limits: Limits) -> Result<MetisGraph, MetisError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (hline, header) = loop {
        match lines.next() {
            None => return Err(err(1, 1, "empty input: no header line")),
            Some((_, l)) if l.trim_start().starts_with('%') => continue,
            Some((_, l)) if l.trim().is_empty() => continue,
            Some(x) => break x,
        }
    };
    let ht: Vec<Tok<'_>> = tokens(header).collect();
    if ht.len() < 2 || ht.len() > 4 {
        return Err(err(hline, 1, "header must be `n m [fmt [ncon]]`"));
    }
    let n = num(&ht[0], hline, "vertex count")?;
    let m = num(&ht[1], hline, "edge count")?;
    if n > limits.max_nodes as u64 {
        return Err(err(
            hline,
            ht[0].col,
            format!("{n} vertices exceed the limit of {}", limits.max_nodes),
        ));
    }
    if m > limits.max_edges as u64 {
        return Err(err(
            hline,
            ht[1].col,
            format!("{m} edges exceed the limit of {}", limits.max_edges),
        ));
    }
    let (n, m) = (n as usize, m as usize);
    let (mut has_size, mut has_vw, mut has_ew) = (false, false, false);
    if let Some(f) = ht.get(2) {
        if f.text.len() > 3 || !f.text.bytes().all(|c| c == b'0' || c == b'1') {
            return Err(err(
                hline,
                f.col,
                format!("fmt must be up to three binary digits, found {:?}", f.text),
            ));
        }
        let padded = format!("{:0>3}", f.text);
        let b = padded.as_bytes();
        has_size = b[0] == b'1';
        has_vw = b[1] == b'1';
        has_ew = b[2] == b'1';
    }
    let ncon = match ht.get(3) {
        Some(t) => {
            let c = num(t, hline, "ncon")?;
            if !has_vw {
                return Err(err(
                    hline,
                    t.col,
                    "ncon given but fmt declares no vertex weights",
                ));
            }
            if c == 0 || c > 64 {
                return Err(err(hline, t.col, "ncon must be between 1 and 64"));
            }
            c as usize
        }
        None => usize::from(has_vw),
    };
    let mut vertex_weights = Vec::new();
    // (lo, hi, w, line, col): from the lower end's line and from the higher end's.
    let mut from_lo: Vec<(usize, usize, u64, usize, usize)> = Vec::with_capacity(m.min(1 << 20));
    let mut from_hi: Vec<(usize, usize, u64, usize, usize)> = Vec::with_capacity(m.min(1 << 20));
    let mut v = 0usize;
    let mut last_line = hline;
    for (ln, line) in lines {
        last_line = ln;
        if line.trim_start().starts_with('%') {
            continue;
        }
        if v >= n {
            if line.trim().is_empty() {
                continue;
            }
            return Err(err(
                ln,
                1,
                format!("more vertex lines than the {n} the header declares"),
            ));
        }
        let mut it = tokens(line);
        if has_size {
            match it.next() {
                Some(t) => {
                    num(&t, ln, "vertex size")?;
                }
                None => return Err(err(ln, 1, "missing vertex size")),
            }
        }
        if has_vw {
            let mut w = Vec::with_capacity(ncon);
            for _ in 0..ncon {
                match it.next() {
                    Some(t) => w.push(num(&t, ln, "vertex weight")?),
                    None => {
                        return Err(err(
                            ln,
                            line.len() + 1,
                            format!("expected {ncon} vertex weight(s)"),
                        ))
                    }
                }
            }
            vertex_weights.push(w);
        }
        while let Some(t) = it.next() {
            let u = num(&t, ln, "neighbour")?;
            if u == 0 || u > n as u64 {
                return Err(err(
                    ln,
                    t.col,
                    format!("neighbour {u} out of range 1..={n}"),
                ));
            }
            let u = u as usize - 1;
            if u == v {
                return Err(err(ln, t.col, format!("self-loop on vertex {}", v + 1)));
            }
            let w = if has_ew {
                match it.next() {
                    Some(wt) => num(&wt, ln, "edge weight")?,
                    None => {
                        return Err(err(
                            ln,
                            line.len() + 1,
                            format!("neighbour {} has no edge weight", u + 1),
                        ))
                    }
                }
            } else {
                1
            };
            if from_lo.len() + from_hi.len() >= 2 * m {
                return Err(err(
                    ln,
                    t.col,
                    format!("more edge entries than the 2 x {m} the header declares"),
                ));
            }
            if v < u {
                from_lo.push((v, u, w, ln, t.col));
            } else {
                from_hi.push((u, v, w, ln, t.col));
            }
        }
        v += 1;
    }
    if v < n {
        return Err(err(
            last_line + 1,
            1,
            format!("expected {n} vertex lines, found {v}"),
        ));
    }
    from_lo.sort_unstable();
    from_hi.sort_unstable();
    for pair in from_lo.windows(2) {
        if pair[0].0 == pair[1].0 && pair[0].1 == pair[1].1 {
            return Err(err(
                pair[1].3,
                pair[1].4,
                format!("duplicate edge {}-{}", pair[1].0 + 1, pair[1].1 + 1),
            ));
        }
    }
    for pair in from_hi.windows(2) {
        if pair[0].0 == pair[1].0 && pair[0].1 == pair[1].1 {
            return Err(err(
                pair[1].3,
                pair[1].4,
                format!("duplicate edge {}-{}", pair[1].1 + 1, pair[1].0 + 1),
            ));
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut edges = Vec::with_capacity(from_lo.len());
    while i < from_lo.len() || j < from_hi.len() {
        let a = from_lo.get(i);
        let b = from_hi.get(j);
        match (a, b) {
            (Some(a), Some(b)) if (a.0, a.1) == (b.0, b.1) => {
                if a.2 != b.2 {
                    return Err(err(
                        b.3,
                        b.4,
                        format!(
                            "edge {}-{} has weight {} here but {} on line {}",
                            b.1 + 1,
                            b.0 + 1,
                            b.2,
                            a.2,
                            a.3
                        ),
                    ));
                }
                edges.push((a.0, a.1, a.2));
                i += 1;
                j += 1;
            }
            (Some(a), b) if b.is_none_or(|b| (a.0, a.1) < (b.0, b.1)) => {
                return Err(err(
                    a.3,
                    a.4,
                    format!(
                        "edge {}-{} is not listed at vertex {}",
                        a.0 + 1,
                        a.1 + 1,
                        a.1 + 1
                    ),
                ));
            }
            (_, Some(b)) => {
                return Err(err(
                    b.3,
                    b.4,
                    format!(
                        "edge {}-{} is not listed at vertex {}",
                        b.1 + 1,
                        b.0 + 1,
                        b.0 + 1
                    ),
                ));
            }
            _ => break,
        }
    }
    if edges.len() != m {
        return Err(err(
            hline,
            ht[1].col,
            format!("header declares {m} edges, the file lists {}", edges.len()),
        ));
    }
    Ok(MetisGraph {
        n,
        vertex_weights,
        edges,
    })
}

/// Writes a graph with edge weights (`fmt` 001); parallel edges are merged
/// (weights added), self-loops and out-of-range ends dropped.
pub fn write(n: usize, edges: &[(usize, usize, u64)]) -> String {
    let mut adj: Vec<Vec<(usize, u64)>> = vec![Vec::new(); n];
    for &(a, b, w) in edges {
        if a != b && a < n && b < n {
            adj[a].push((b, w));
            adj[b].push((a, w));
        }
    }
    let mut m = 0;
    for list in &mut adj {
        list.sort_unstable();
        let mut merged: Vec<(usize, u64)> = Vec::with_capacity(list.len());
        for &(u, w) in list.iter() {
            match merged.last_mut() {
                Some(last) if last.0 == u => last.1 = last.1.saturating_add(w),
                _ => merged.push((u, w)),
            }
        }
        m += merged.len();
        *list = merged;
    }
    let mut out = format!("{n} {} 001\n", m / 2);
    for list in &adj {
        let line: Vec<String> = list.iter().map(|(u, w)| format!("{} {w}", u + 1)).collect();
        out.push_str(&line.join(" "));
        out.push('\n');
    }
    out
}

impl fmt::Display for MetisGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&write(self.n, &self.edges))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn p(s: &str) -> Result<MetisGraph, MetisError> {
        parse(s, Limits::default())
    }

    #[test]
    fn reads_weights_comments_and_isolated_vertices() {
        let g = p("% a comment\n4 2 1\n2 10\n1 10 4 3\n\n2 3\n").unwrap();
        assert_eq!(g.n, 4);
        assert_eq!(g.edges, vec![(0, 1, 10), (1, 3, 3)]);
        let g = p("3 2\n2\n1 3\n2\n").unwrap();
        assert_eq!(g.edges, vec![(0, 1, 1), (1, 2, 1)]);
        let g = p("2 1 11\n7 2 5\n8 1 5\n").unwrap();
        assert_eq!(g.vertex_weights, vec![vec![7], vec![8]]);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = p("2 1\n3\n1\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("out of range"));
        let e = p("2 1 1\n2 5\n1 6\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1));
        assert!(e.message.contains("weight"));
        let e = p("3 1\n2\n\n\n").unwrap_err();
        assert!(e.message.contains("not listed"), "{e}");
        let e = p("3 2\n2\n1\n").unwrap_err();
        assert!(e.message.contains("vertex lines"), "{e}");
        let e = p("2 1\n1\n\n").unwrap_err();
        assert!(e.message.contains("self-loop"));
        let e = p("2 x\n").unwrap_err();
        assert_eq!((e.line, e.column), (1, 3));
        let e = p("2 2\n2 2\n1 1\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
        let e = p("1 0\n\n5\n").unwrap_err();
        assert!(e.message.contains("more vertex lines"), "{e}");
        let e = p("99999999999 0\n").unwrap_err();
        assert!(e.message.contains("limit"));
        assert!(p("").is_err());
        assert!(p("2 1 2\n").is_err());
    }

    #[test]
    fn too_many_edge_entries_stop_early() {
        let e = p("3 1\n2 3\n1\n1\n").unwrap_err();
        assert!(e.message.contains("more edge entries"), "{e}");
    }

    proptest! {
        #[test]
        fn never_panics(s in "[0-9 %\\n]{0,80}") {
            let _ = p(&s);
        }

        #[test]
        fn never_panics_on_structured_noise(
            header in (0usize..12, 0usize..20, prop::sample::select(vec!["", " 1", " 11", " 10", " 100", " 111", " 2", " 011 2"])),
            lines in prop::collection::vec(prop::collection::vec(0u64..14, 0..8), 0..14),
        ) {
            let mut text = format!("{} {}{}\n", header.0, header.1, header.2);
            for l in &lines {
                let l: Vec<String> = l.iter().map(u64::to_string).collect();
                text.push_str(&l.join(" "));
                text.push('\n');
            }
            if let Ok(g) = p(&text) {
                // Whatever is accepted is a consistent graph.
                prop_assert!(g.edges.iter().all(|&(a, b, _)| a < b && b < g.n));
                prop_assert_eq!(g.edges.len(), header.1);
            }
        }

        #[test]
        fn write_then_read_round_trips(n in 1usize..30, raw in prop::collection::vec((0usize..30, 0usize..30, 1u64..100), 0..60)) {
            let edges: Vec<(usize, usize, u64)> = raw.into_iter().filter(|e| e.0 < n && e.1 < n).collect();
            let text = write(n, &edges);
            let g = p(&text).unwrap();
            prop_assert_eq!(g.n, n);
            let total: u64 = edges.iter().filter(|e| e.0 != e.1).map(|e| e.2).sum();
            prop_assert_eq!(g.edges.iter().map(|e| e.2).sum::<u64>(), total);
            prop_assert_eq!(write(n, &g.edges), text);
        }
    }
}
