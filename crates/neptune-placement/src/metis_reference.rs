//! The first METIS reader (sorting every entry), kept as the reference
//! for the differential test of the current one.

use super::{err, num, read_header, tokens, Header, Limits, MetisError, MetisGraph};

/// The reader as it was before it stopped sorting, kept to check the new
/// one against: the same graphs accepted, the same refused.
pub(super) fn parse(text: &str, limits: Limits) -> Result<MetisGraph, MetisError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (hline, header) = loop {
        match lines.next() {
            None => return Err(err(1, 1, "empty input: no header line")),
            Some((_, l)) if l.trim_start().starts_with('%') => continue,
            Some((_, l)) if l.trim().is_empty() => continue,
            Some(x) => break x,
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
