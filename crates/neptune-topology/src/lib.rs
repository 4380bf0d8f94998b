//! The Virtual Infrastructure model and the forms it is written in.
//!
//! - [`model`]: virtual nodes, interfaces, virtual links, entry points.
//! - [`xml`]: the paper's XML dialect (Fig. 3) plus links, entry points and
//!   address pins; see `docs/topology-xml.md`.
//! - JSON: the same model through serde ([`from_json`], [`to_json`]); the OS
//!   password is accepted on input and never written back.
//! - [`validate()`]: the checks every form shares, each problem placed.
//! - [`catalogue`]: generators of predefined topologies.
//!
//! Pure: no I/O. Loading never panics, whatever the input.

pub mod catalogue;
pub mod model;
pub mod validate;
pub mod xml;

use std::fmt;

pub use model::{
    Cpu, Endpoint, EntryPoint, InterfaceBinding, LinkKind, NetworkInterface, OperatingSystem,
    Software, SoftwareConfiguration, Summary, Topology, VirtualLink, VirtualNode,
};
pub use validate::{limits, validate, Loc, Problem};
pub use xml::{from_xml, to_xml};

/// One problem of a topology document, placed by line and column (1-based)
/// and, for forms without useful positions, by JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    /// The JSON pointer of the offending part, when known.
    pub pointer: Option<String>,
    pub problem: Problem,
}

impl Diagnostic {
    pub fn at(line: u32, column: u32, problem: Problem) -> Self {
        Diagnostic {
            line,
            column,
            pointer: None,
            problem,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pointer {
            Some(p) if !p.is_empty() => {
                write!(f, "{}:{}: {}: {}", self.line, self.column, p, self.problem)
            }
            _ => write!(f, "{}:{}: {}", self.line, self.column, self.problem),
        }
    }
}

/// The form of a topology document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    /// Guesses the form from the first non-blank character.
    pub fn sniff(text: &str) -> Format {
        match text.trim_start().chars().next() {
            Some('{') => Format::Json,
            _ => Format::Xml,
        }
    }
}

/// Loads a topology in either form (sniffed).
pub fn load(text: &str) -> Result<Topology, Vec<Diagnostic>> {
    match Format::sniff(text) {
        Format::Xml => from_xml(text),
        Format::Json => from_json(text),
    }
}

/// Loads a topology from raw bytes, as read from a file: text that is not
/// UTF-8 is invalid input, placed at its first bad byte.
pub fn load_bytes(bytes: &[u8]) -> Result<Topology, Vec<Diagnostic>> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load(text),
        Err(err) => {
            let good = &bytes[..err.valid_up_to()];
            // Everything before the bad byte is valid UTF-8.
            let before = std::str::from_utf8(good).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            Err(vec![Diagnostic::at(
                u32::try_from(line).unwrap_or(u32::MAX),
                u32::try_from(column).unwrap_or(u32::MAX),
                Problem::NotUtf8 {
                    byte: bytes[err.valid_up_to()],
                },
            )])
        }
    }
}

/// Parses and validates the JSON form. Semantic problems are placed by JSON
/// pointer (their line and column are those of the document start).
pub fn from_json(text: &str) -> Result<Topology, Vec<Diagnostic>> {
    if text.len() > xml::MAX_INPUT_BYTES {
        return Err(vec![Diagnostic::at(
            1,
            1,
            Problem::TooLarge {
                size: text.len(),
                limit: xml::MAX_INPUT_BYTES,
            },
        )]);
    }
    let mut topo: Topology = serde_json::from_str(text).map_err(|err| {
        let line = u32::try_from(err.line().max(1)).unwrap_or(u32::MAX);
        let column = u32::try_from(err.column().max(1)).unwrap_or(u32::MAX);
        let message = err.to_string();
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message).to_owned();
        vec![Diagnostic::at(line, column, Problem::Syntax(message))]
    })?;
    // The XML reader trims text content; trim here too so both forms agree.
    for node in &mut topo.nodes {
        node.name = node.name.trim().to_owned();
        node.description = node.description.trim().to_owned();
    }
    let problems = validate(&topo);
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .take(xml::MAX_DIAGNOSTICS)
            .map(|(loc, problem)| Diagnostic {
                line: 1,
                column: 1,
                pointer: Some(loc.json_pointer()),
                problem,
            })
            .collect());
    }
    Ok(topo)
}

/// The JSON form (pretty-printed). The OS password is never included.
pub fn to_json(topo: &Topology) -> String {
    // Serialising this model cannot fail: every map key is a string.
    serde_json::to_string_pretty(topo).unwrap_or_default()
}

#[cfg(test)]
mod tests;
