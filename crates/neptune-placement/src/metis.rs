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

use crate::model::{Resources, VirtualGraph, VirtualLink};

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
    /// The VI graph: one VM per vertex (no resource demand), one link per
    /// edge (the edge list's memory reused for the links).
    pub fn into_virtual_graph(self) -> VirtualGraph {
        let mut g = VirtualGraph::with_nodes(self.n, Resources::ZERO);
        g.links = self
            .edges
            .into_iter()
            .map(|(a, b, bandwidth)| VirtualLink { a, b, bandwidth })
            .collect();
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
    t.text.parse::<u64>().map_err(|_| bad(line, t, what))
}

/// Reads METIS text.
///
/// One pass over the bytes stores each vertex's neighbour entries as they
/// come; a second checks every edge is listed from both ends with one
/// weight, through the transposed entry lists (counting, not sorting: on
/// large graphs the reader was a sixth of a whole placement when it sorted
/// the entries). Positions are kept per vertex line, and an entry's column
/// is found again only when it is wrong.
pub fn parse(text: &str, limits: Limits) -> Result<MetisGraph, MetisError> {
    let mut lines = Lines::new(text);
    let (hline, header) = loop {
        match lines.next() {
            None => return Err(err(1, 1, "empty input: no header line")),
            Some((_, _, l)) if is_comment(l) => continue,
            Some((_, _, l)) if l.trim().is_empty() => continue,
            Some((ln, _, l)) => break (ln, l),
        }
    };
    let Header {
        n,
        m,
        m_col,
        has_size,
        has_vw,
        has_ew,
        ncon,
    } = read_header(hline, header, limits)?;
    let mut rows = Rows {
        text,
        has_size,
        ncon,
        has_ew,
        line: Vec::with_capacity(n),
    };
    let mut vertex_weights = Vec::new();
    let cap = (2 * m).min(1 << 22);
    // Row `v` of the entries: `nbr[xadj[v]..xadj[v + 1]]`, weights beside.
    let mut xadj: Vec<u32> = Vec::with_capacity(n + 1);
    xadj.push(0);
    let mut nbr: Vec<u32> = Vec::with_capacity(cap);
    let mut ewt: Vec<u64> = Vec::with_capacity(if has_ew { cap } else { 0 });
    let mut last_line = hline;
    for (ln, start, line) in lines.by_ref() {
        last_line = ln;
        if is_comment(line) {
            continue;
        }
        let v = rows.line.len();
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
        rows.line.push((ln, start));
        let b = line.as_bytes();
        let mut i = 0usize;
        if has_size {
            match next_num(line, &mut i) {
                Some(r) => {
                    r.map_err(|t| bad(ln, &t, "vertex size"))?;
                }
                None => return Err(err(ln, 1, "missing vertex size")),
            }
        }
        if has_vw {
            let mut w = Vec::with_capacity(ncon);
            for _ in 0..ncon {
                match next_num(line, &mut i) {
                    Some(r) => w.push(r.map_err(|t| bad(ln, &t, "vertex weight"))?),
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
        loop {
            let col = skip_space(b, &mut i) + 1;
            let Some(r) = next_num(line, &mut i) else {
                break;
            };
            let u = r.map_err(|t| bad(ln, &t, "neighbour"))?;
            if u == 0 || u > n as u64 {
                return Err(err(ln, col, format!("neighbour {u} out of range 1..={n}")));
            }
            let u = u as usize - 1;
            if u == v {
                return Err(err(ln, col, format!("self-loop on vertex {}", v + 1)));
            }
            if has_ew {
                match next_num(line, &mut i) {
                    Some(r) => ewt.push(r.map_err(|t| bad(ln, &t, "edge weight"))?),
                    None => {
                        return Err(err(
                            ln,
                            line.len() + 1,
                            format!("neighbour {} has no edge weight", u + 1),
                        ))
                    }
                }
            }
            if nbr.len() >= 2 * m {
                return Err(err(
                    ln,
                    col,
                    format!("more edge entries than the 2 x {m} the header declares"),
                ));
            }
            nbr.push(u as u32);
        }
        xadj.push(nbr.len() as u32);
    }
    if rows.line.len() < n {
        return Err(err(
            last_line + 1,
            1,
            format!("expected {n} vertex lines, found {}", rows.line.len()),
        ));
    }
    // The transposed rows: for each vertex, the entries that name it, in
    // the order of the vertices listing them (so ascending).
    let mut tx = vec![0u32; n + 1];
    for &u in &nbr {
        tx[u as usize + 1] += 1;
    }
    for v in 0..n {
        tx[v + 1] += tx[v];
    }
    // With each entry its weight, so that the check below reads these
    // in order rather than the weights of random entries.
    let mut fill = tx.clone();
    let mut named: Vec<(u32, u32, u64)> = vec![(0, 0, 0); nbr.len()];
    for v in 0..n {
        for k in xadj[v]..xadj[v + 1] {
            let u = nbr[k as usize] as usize;
            let w = if has_ew { ewt[k as usize] } else { 1 };
            named[fill[u] as usize] = (v as u32, k, w);
            fill[u] += 1;
        }
    }
    drop(fill);
    // Per vertex `v`: `seen[u]` = v + 1 when row v names u (at entry
    // `at[u]`); `met[u]` = v + 1 once row u names v back.
    let mut seen = vec![0u32; n];
    let mut met = vec![0u32; n];
    let mut at = vec![0u32; n];
    let mut edges = Vec::with_capacity(m);
    for v in 0..n {
        let stamp = v as u32 + 1;
        let row = xadj[v] as usize..xadj[v + 1] as usize;
        for k in row.clone() {
            let u = nbr[k] as usize;
            if seen[u] == stamp {
                return Err(rows.at(
                    v,
                    k - row.start,
                    format!("duplicate edge {}-{}", v + 1, u + 1),
                ));
            }
            seen[u] = stamp;
            at[u] = k as u32;
        }
        for &(s, k2, w2) in &named[tx[v] as usize..tx[v + 1] as usize] {
            let (s, k2) = (s as usize, k2 as usize);
            let srow = || k2 - xadj[s] as usize;
            if met[s] == stamp {
                return Err(rows.at(s, srow(), format!("duplicate edge {}-{}", s + 1, v + 1)));
            }
            met[s] = stamp;
            if seen[s] != stamp {
                return Err(rows.at(
                    s,
                    srow(),
                    format!("edge {}-{} is not listed at vertex {}", s + 1, v + 1, v + 1),
                ));
            }
            let k = at[s] as usize;
            let w = if has_ew { ewt[k] } else { 1 };
            if w != w2 {
                // Reported at the later line, as the second word on it.
                let (hi, hrow, hw, lo, lw) = if s > v {
                    (s, srow(), w2, v, w)
                } else {
                    (v, k - row.start, w, s, w2)
                };
                return Err(rows.at(
                    hi,
                    hrow,
                    format!(
                        "edge {}-{} has weight {hw} here but {lw} on line {}",
                        hi + 1,
                        lo + 1,
                        rows.line[lo].0
                    ),
                ));
            }
            if s > v {
                edges.push((v, s, w));
            }
        }
        if let Some(k) = row.clone().find(|&k| met[nbr[k] as usize] != stamp) {
            let u = nbr[k] as usize;
            return Err(rows.at(
                v,
                k - row.start,
                format!("edge {}-{} is not listed at vertex {}", v + 1, u + 1, u + 1),
            ));
        }
    }
    if edges.len() != m {
        return Err(err(
            hline,
            m_col,
            format!("header declares {m} edges, the file lists {}", edges.len()),
        ));
    }
    Ok(MetisGraph {
        n,
        vertex_weights,
        edges,
    })
}

/// What a header line declares.
struct Header {
    n: usize,
    m: usize,
    /// Column of the edge count, where a wrong total is reported.
    m_col: usize,
    has_size: bool,
    has_vw: bool,
    has_ew: bool,
    /// Vertex weights per vertex (0 without them).
    ncon: usize,
}

/// Reads the header `n m [fmt [ncon]]` found on line `hline`.
fn read_header(hline: usize, header: &str, limits: Limits) -> Result<Header, MetisError> {
    let ht: Vec<Tok<'_>> = tokens(header).collect();
    if ht.len() < 2 || ht.len() > 4 {
        return Err(err(hline, 1, "header must be `n m [fmt [ncon]]`"));
    }
    let n = num(&ht[0], hline, "vertex count")?;
    let m = num(&ht[1], hline, "edge count")?;
    // Vertices and entries are indexed by u32 below.
    let max_nodes = (limits.max_nodes as u64).min(u64::from(u32::MAX - 1));
    if n > max_nodes {
        return Err(err(
            hline,
            ht[0].col,
            format!("{n} vertices exceed the limit of {max_nodes}"),
        ));
    }
    let max_edges = (limits.max_edges as u64).min(u64::from(u32::MAX / 2));
    if m > max_edges {
        return Err(err(
            hline,
            ht[1].col,
            format!("{m} edges exceed the limit of {max_edges}"),
        ));
    }
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
    Ok(Header {
        n: n as usize,
        m: m as usize,
        m_col: ht[1].col,
        has_size,
        has_vw,
        has_ew,
        ncon: if has_vw { ncon } else { 0 },
    })
}

/// Lines as `str::lines` gives them (split at `\n`, a trailing `\r`
/// dropped), numbered from 1, with their byte offset.
struct Lines<'a> {
    text: &'a str,
    pos: usize,
    no: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            no: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.text.len() {
            return None;
        }
        let rest = &self.text.as_bytes()[self.pos..];
        let start = self.pos;
        let end = memchr::memchr(b'\n', rest);
        let len = end.unwrap_or(rest.len());
        self.pos += len + 1;
        self.no += 1;
        let line = self.text.get(start..start + len).unwrap_or("");
        let line = match end {
            Some(_) => line.strip_suffix('\r').unwrap_or(line),
            None => line,
        };
        Some((self.no, start, line))
    }
}

fn is_comment(line: &str) -> bool {
    match line.bytes().find(|c| !c.is_ascii_whitespace()) {
        Some(b'%') => true,
        // Other whitespace than ASCII before a `%`, as `str::trim_start` sees it.
        Some(c) if !c.is_ascii() => line.trim_start().starts_with('%'),
        _ => false,
    }
}

/// Advances `i` past whitespace; returns where it stopped.
fn skip_space(b: &[u8], i: &mut usize) -> usize {
    while *i < b.len() && b[*i].is_ascii_whitespace() {
        *i += 1;
    }
    *i
}

/// The next token of `line` from `i` as a number: `None` at the end of the
/// line, `Err` with the token when it is not a non-negative integer.
fn next_num<'a>(line: &'a str, i: &mut usize) -> Option<Result<u64, Tok<'a>>> {
    let b = line.as_bytes();
    let start = skip_space(b, i);
    if start >= b.len() {
        return None;
    }
    let mut x = 0u64;
    let mut ok = true;
    while *i < b.len() && b[*i].is_ascii_digit() {
        match x
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(b[*i] - b'0')))
        {
            Some(y) => x = y,
            None => ok = false,
        }
        *i += 1;
    }
    if ok && *i > start && (*i == b.len() || b[*i].is_ascii_whitespace()) {
        return Some(Ok(x));
    }
    while *i < b.len() && !b[*i].is_ascii_whitespace() {
        *i += 1;
    }
    let t = Tok {
        text: line.get(start..*i).unwrap_or(""),
        col: start + 1,
    };
    // What `str::parse` takes besides digits (a leading `+`).
    Some(t.text.parse::<u64>().map_err(|_| t))
}

fn bad(line: usize, t: &Tok<'_>, what: &str) -> MetisError {
    err(
        line,
        t.col,
        format!(
            "{what}: expected a non-negative integer, found {:?}",
            t.text
        ),
    )
}

/// Where each vertex's line is, to place an error at one of its entries.
struct Rows<'a> {
    text: &'a str,
    has_size: bool,
    ncon: usize,
    has_ew: bool,
    /// (line number, byte offset) of each vertex's line.
    line: Vec<(usize, usize)>,
}

impl Rows<'_> {
    /// An error at the `j`-th neighbour entry of vertex `v`.
    fn at(&self, v: usize, j: usize, message: String) -> MetisError {
        let (ln, start) = self.line[v];
        let rest = self.text.get(start..).unwrap_or("");
        let line = rest.split('\n').next().unwrap_or("");
        let skip = usize::from(self.has_size) + self.ncon;
        let col = tokens(line)
            .nth(skip + j * (1 + usize::from(self.has_ew)))
            .map_or(1, |t| t.col);
        err(ln, col, message)
    }
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
#[path = "metis_reference.rs"]
mod reference;

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
    fn edge_errors_point_at_the_entry() {
        // Vertex 3 gives edge 1-3 another weight: reported on its line, at
        // the neighbour, naming the line of the other end.
        let e = p("3 2 1\n2 1 3 7\n1 1\n% c\n1 9\n").unwrap_err();
        assert_eq!((e.line, e.column), (5, 1), "{e}");
        assert!(e.message.contains("weight 9 here but 7 on line 2"), "{e}");
        // Vertex 2 names 3, which does not name it back.
        let e = p("3 2\n2\n1 3\n\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 3), "{e}");
        assert!(
            e.message.contains("edge 2-3 is not listed at vertex 3"),
            "{e}"
        );
        // Vertex 1 names 2 twice.
        let e = p("2 2 1\n2 4  2 4\n1 4\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 6), "{e}");
        assert!(e.message.contains("duplicate edge 1-2"), "{e}");
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

        /// Against the first reader, on files that are mostly valid: every
        /// edge listed from both ends (with vertex sizes, vertex weights and
        /// edge weights or without), then a few entries dropped, doubled,
        /// changed, made unreadable or cut off.
        #[test]
        fn reads_as_the_reference_reader_does(
            n in 1usize..12,
            raw in prop::collection::vec((0usize..12, 0usize..12, 1u64..4), 0..30),
            (size, ncon, weighted) in (any::<bool>(), 0usize..3, any::<bool>()),
            damage in prop::collection::vec((0usize..12, 0usize..8, 0u8..5, 0u64..13), 0..3),
            extra in prop::sample::select(vec!["", "\n", "% end\n", "\n\n", "5\n"]),
        ) {
            let edges: Vec<(usize, usize, u64)> = raw.into_iter().filter(|e| e.0 < n && e.1 < n).collect();
            let text = write(n, &edges);
            let mut lines = text.lines();
            let m = lines.next().unwrap_or_default().split(' ').nth(1).unwrap_or("0").to_owned();
            let mut rows: Vec<Vec<String>> = lines
                .map(|line| {
                    let mut row: Vec<String> = Vec::new();
                    if size {
                        row.push("1".to_owned());
                    }
                    row.extend((0..ncon).map(|c| (c + 2).to_string()));
                    let words: Vec<&str> = line.split(' ').filter(|t| !t.is_empty()).collect();
                    for pair in words.chunks(2) {
                        row.push(pair[0].to_owned());
                        if weighted {
                            row.push(pair[1].to_owned());
                        }
                    }
                    row
                })
                .collect();
            for &(v, j, kind, x) in &damage {
                let row = &mut rows[v % n];
                if row.is_empty() {
                    continue;
                }
                let j = j % row.len();
                match kind {
                    0 => drop(row.remove(j)),
                    1 => row.insert(j, row[j].clone()),
                    2 => row[j] = x.to_string(),
                    3 => row[j] = format!("{x}x"),
                    _ => row.truncate(j),
                }
            }
            let fmt = format!("{}{}{}", u8::from(size), u8::from(ncon > 0), u8::from(weighted));
            let mut text = match ncon {
                0 | 1 => format!("{n} {m} {fmt}\n"),
                _ => format!("{n} {m} {fmt} {ncon}\n"),
            };
            for r in &rows {
                text.push_str(&r.join(" "));
                text.push('\n');
            }
            text.push_str(extra);
            let ours = p(&text);
            let theirs = reference::parse(&text, Limits::default());
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "{text:?}: ours {ours:?}, reference {theirs:?}"),
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
            let links: Vec<(usize, usize, u64)> = g
                .clone()
                .into_virtual_graph()
                .links
                .iter()
                .map(|l| (l.a, l.b, l.bandwidth))
                .collect();
            prop_assert_eq!(links, g.edges.clone());
        }
    }
}
