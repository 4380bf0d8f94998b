//! The paper's XML dialect (Fig. 3), extended with `<links>`, entry points
//! and address pins. The whole dialect is documented in
//! `docs/topology-xml.md`.

mod read;
mod write;

pub use read::{from_xml, MAX_DEPTH, MAX_DIAGNOSTICS, MAX_INPUT_BYTES};
pub use write::to_xml;
