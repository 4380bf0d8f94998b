//! Reading the paper's XML dialect into the model, with every problem
//! reported at once and placed at a line and column.
//!
//! The reader is schema-driven: each element lists the children and
//! attributes it allows, so unknown names are reported where they are and
//! never walked into. Syntax problems (unknown names, bad numbers, bad MACs)
//! are found here; the format-independent checks of [`crate::validate()`]
//! run on the model afterwards and are placed through a source map. A field
//! that failed to parse is remembered, so it does not also produce a
//! follow-on semantic complaint.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use neptune_types::{InterfaceName, LinkId, MacAddr, Mbps, Mhz, Mib, NodeId, Secret, TopologyId};
use roxmltree::{Document, Node, ParsingOptions};

use crate::model::{
    Cpu, Endpoint, EntryPoint, InterfaceBinding, LinkKind, NetworkInterface, OperatingSystem,
    Software, SoftwareConfiguration, Topology, VirtualLink, VirtualNode,
};
use crate::validate::{validate, Field, Loc, Problem};
use crate::Diagnostic;

/// Largest document accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;
/// Deepest element nesting accepted (the dialect itself needs 5).
pub const MAX_DEPTH: usize = 32;
/// Most XML nodes (elements, attributes, texts) a document may have.
const MAX_XML_NODES: u32 = 2_000_000;
/// Most diagnostics reported for one document.
pub const MAX_DIAGNOSTICS: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    One,
    Opt,
    Many,
}

/// Parses and validates a topology written in the XML dialect. On success
/// every interface has a MAC (absent ones are generated).
pub fn from_xml(text: &str) -> Result<Topology, Vec<Diagnostic>> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(vec![Diagnostic::at(
            1,
            1,
            Problem::TooLarge {
                size: text.len(),
                limit: MAX_INPUT_BYTES,
            },
        )]);
    }
    if let Some((at, depth)) = too_deep(text) {
        let (line, column) = line_col(text, at);
        return Err(vec![Diagnostic::at(
            line,
            column,
            Problem::TooDeep {
                depth,
                limit: MAX_DEPTH,
            },
        )]);
    }
    // roxmltree reports DOCTYPE at 1:1; point at the declaration itself.
    let opts = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
    };
    let doc = match Document::parse_with_options(text, opts) {
        Ok(doc) => doc,
        Err(roxmltree::Error::DtdDetected) => {
            let at = text.find("<!DOCTYPE").unwrap_or(0);
            let (line, column) = line_col(text, at);
            return Err(vec![Diagnostic::at(line, column, Problem::Doctype)]);
        }
        Err(err) => {
            let (line, column) = match err {
                // roxmltree places a text cut short at 1:1; the problem
                // is at its end.
                roxmltree::Error::UnexpectedEndOfStream | roxmltree::Error::UnclosedRootNode => {
                    line_col(text, text.len())
                }
                _ => (err.pos().row, err.pos().col),
            };
            return Err(vec![Diagnostic::at(
                line,
                column,
                Problem::Syntax(err.to_string()),
            )]);
        }
    };
    let mut reader = Reader {
        doc: &doc,
        problems: Vec::new(),
        map: HashMap::new(),
        failed: HashSet::new(),
    };
    let topo = reader.topology(doc.root_element());
    match topo {
        Some(topo) if reader.problems.is_empty() => {
            let semantic = validate(&topo);
            if semantic.is_empty() {
                return Ok(topo);
            }
            reader.add_semantic(semantic);
            Err(reader.finish_errors())
        }
        Some(topo) => {
            let semantic = validate(&topo);
            reader.add_semantic(semantic);
            Err(reader.finish_errors())
        }
        None => Err(reader.finish_errors()),
    }
}

/// The position and depth of the first element nested deeper than
/// [`MAX_DEPTH`]. Checked with a streaming reader before the tree is built:
/// the tree builder recurses per nesting level.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((before, depth));
                }
            }
            Ok(quick_xml::events::Event::End(_)) => depth = depth.saturating_sub(1),
            // Malformed input is left to the tree builder, which reports it.
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn line_col(text: &str, byte: usize) -> (u32, u32) {
    let before = text.get(..byte).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

struct Reader<'d, 'input> {
    doc: &'d Document<'input>,
    /// Problems found, with the byte offset they point at.
    problems: Vec<(usize, Problem)>,
    /// Where each part of the model came from (byte offsets).
    map: HashMap<Loc, usize>,
    /// Parts that failed to parse: their semantic complaints would be noise.
    failed: HashSet<Loc>,
}

type El<'d, 'input> = Node<'d, 'input>;

impl<'d, 'input: 'd> Reader<'d, 'input> {
    fn problem(&mut self, pos: usize, problem: Problem) {
        self.problems.push((pos, problem));
    }

    fn add_semantic(&mut self, semantic: Vec<(Loc, Problem)>) {
        for (loc, problem) in semantic {
            if self.failed.contains(&loc) {
                continue;
            }
            let pos = self.locate(loc);
            self.problems.push((pos, problem));
        }
    }

    fn locate(&self, loc: Loc) -> usize {
        let parent = match loc {
            Loc::Topology | Loc::Node(_) | Loc::Link(_) => None,
            Loc::NodeField(n, _) | Loc::Interface(n, _) => Some(Loc::Node(n)),
            Loc::InterfaceField(n, i, _) => Some(Loc::Interface(n, i)),
            Loc::LinkField(l, _) | Loc::Endpoint(l, _) => Some(Loc::Link(l)),
        };
        self.map
            .get(&loc)
            .or_else(|| parent.and_then(|p| self.map.get(&p)))
            .or_else(|| self.map.get(&Loc::Topology))
            .copied()
            .unwrap_or(0)
    }

    fn finish_errors(mut self) -> Vec<Diagnostic> {
        self.problems.sort_by_key(|(pos, _)| *pos);
        let total = self.problems.len();
        let mut out: Vec<Diagnostic> = self
            .problems
            .into_iter()
            .take(MAX_DIAGNOSTICS)
            .map(|(pos, problem)| {
                let p = self.doc.text_pos_at(pos);
                Diagnostic::at(p.row, p.col, problem)
            })
            .collect();
        if total > MAX_DIAGNOSTICS {
            let last = out.last().map_or((1, 1), |d| (d.line, d.column));
            out.push(Diagnostic::at(
                last.0,
                last.1,
                Problem::Syntax(format!(
                    "{} more problems not shown",
                    total - MAX_DIAGNOSTICS
                )),
            ));
        }
        out
    }

    /// Checks the children of `el` against `spec` and returns the allowed
    /// ones by name. Reports unknown, duplicate and missing elements and any
    /// non-blank text.
    fn children(
        &mut self,
        el: El<'d, 'input>,
        spec: &[(&'static str, Card)],
    ) -> HashMap<&'static str, Vec<El<'d, 'input>>> {
        let mut found: HashMap<&'static str, Vec<El<'d, 'input>>> = HashMap::new();
        let parent = el.tag_name().name();
        for child in el.children() {
            if child.is_text() {
                let text = child.text().unwrap_or("").trim();
                if !text.is_empty() {
                    self.problem(
                        child.range().start,
                        Problem::UnexpectedText {
                            element: parent.to_owned(),
                            text: clip(text),
                        },
                    );
                }
                continue;
            }
            if !child.is_element() {
                continue; // comments and processing instructions
            }
            let name = child.tag_name().name();
            match spec.iter().find(|(n, _)| *n == name) {
                Some((n, card)) => {
                    let list = found.entry(n).or_default();
                    if *card != Card::Many && !list.is_empty() {
                        self.problem(
                            child.range().start,
                            Problem::DuplicateElement {
                                element: name.to_owned(),
                                parent: parent.to_owned(),
                            },
                        );
                        continue;
                    }
                    list.push(child);
                }
                None => self.problem(
                    child.range().start,
                    Problem::UnknownElement {
                        element: name.to_owned(),
                        parent: parent.to_owned(),
                        expected: spec
                            .iter()
                            .map(|(n, _)| format!("<{n}>"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                ),
            }
        }
        for (name, card) in spec {
            if *card == Card::One && !found.contains_key(name) {
                self.problem(
                    el.range().start,
                    Problem::MissingElement {
                        element: (*name).to_owned(),
                        parent: parent.to_owned(),
                    },
                );
            }
        }
        found
    }

    fn one(
        found: &HashMap<&'static str, Vec<El<'d, 'input>>>,
        name: &str,
    ) -> Option<El<'d, 'input>> {
        found.get(name).and_then(|v| v.first().copied())
    }

    /// Checks the attributes of `el`: each must be in `allowed`, and each of
    /// `required` must be present.
    fn attributes(&mut self, el: El<'d, 'input>, allowed: &[&str], required: &[&str]) {
        let element = el.tag_name().name();
        for attr in el.attributes() {
            if !allowed.contains(&attr.name()) {
                self.problem(
                    attr.range_qname().start,
                    Problem::UnknownAttribute {
                        element: element.to_owned(),
                        attribute: attr.name().to_owned(),
                        expected: if allowed.is_empty() {
                            "none".to_owned()
                        } else {
                            allowed.join(", ")
                        },
                    },
                );
            }
        }
        for name in required {
            if el.attribute(*name).is_none() {
                self.problem(
                    el.range().start,
                    Problem::MissingAttribute {
                        element: element.to_owned(),
                        attribute: (*name).to_owned(),
                    },
                );
            }
        }
    }

    /// The value of attribute `name` and the byte offset of the value.
    fn attr(&self, el: El<'d, 'input>, name: &str) -> Option<(&'d str, usize)> {
        el.attributes()
            .find(|a| a.name() == name)
            .map(|a| (a.value(), a.range_value().start))
    }

    /// Parses attribute `name` with `parse`; a failure is reported and, if
    /// `loc` is given, remembered so it does not cascade.
    fn parsed<T, E: std::fmt::Display>(
        &mut self,
        el: El<'d, 'input>,
        name: &str,
        loc: Option<Loc>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        let (value, pos) = self.attr(el, name)?;
        if let Some(loc) = loc {
            self.map.insert(loc, pos);
        }
        match parse(value) {
            Ok(v) => Some(v),
            Err(err) => {
                self.problem(
                    pos,
                    Problem::BadValue {
                        element: el.tag_name().name().to_owned(),
                        attribute: name.to_owned(),
                        message: err.to_string(),
                    },
                );
                if let Some(loc) = loc {
                    self.failed.insert(loc);
                }
                None
            }
        }
    }

    fn string(&self, el: El<'d, 'input>, name: &str) -> String {
        el.attribute(name).unwrap_or("").to_owned()
    }

    /// A leaf element holding text: `<description>...</description>`.
    fn text_leaf(&mut self, el: Option<El<'d, 'input>>) -> String {
        let Some(el) = el else { return String::new() };
        self.attributes(el, &[], &[]);
        let mut text = String::new();
        for child in el.children() {
            if child.is_element() {
                self.problem(
                    child.range().start,
                    Problem::UnknownElement {
                        element: child.tag_name().name().to_owned(),
                        parent: el.tag_name().name().to_owned(),
                        expected: "text only".to_owned(),
                    },
                );
            } else if let Some(t) = child.text() {
                text.push_str(t);
            }
        }
        text.trim().to_owned()
    }

    fn empty_leaf(&mut self, el: El<'d, 'input>) {
        self.children(el, &[]);
    }

    fn topology(&mut self, root: El<'d, 'input>) -> Option<Topology> {
        self.map.insert(Loc::Topology, root.range().start);
        if root.tag_name().name() != "topology" {
            self.problem(
                root.range().start,
                Problem::UnknownElement {
                    element: root.tag_name().name().to_owned(),
                    parent: "document".to_owned(),
                    expected: "<topology>".to_owned(),
                },
            );
            return None;
        }
        self.attributes(root, &["id"], &["id"]);
        let id = self.parsed(root, "id", None, TopologyId::from_str);
        let found = self.children(root, &[("nodes", Card::One), ("links", Card::Opt)]);
        let mut nodes = Vec::new();
        if let Some(list) = Self::one(&found, "nodes") {
            self.attributes(list, &[], &[]);
            let node_els = self.children(list, &[("node", Card::Many)]);
            for el in node_els.get("node").into_iter().flatten() {
                let index = nodes.len();
                if let Some(node) = self.node(*el, index) {
                    nodes.push(node);
                }
            }
        }
        let mut links = Vec::new();
        if let Some(list) = Self::one(&found, "links") {
            self.attributes(list, &[], &[]);
            let link_els = self.children(list, &[("link", Card::Many)]);
            for el in link_els.get("link").into_iter().flatten() {
                let index = links.len();
                if let Some(link) = self.link(*el, index) {
                    links.push(link);
                }
            }
        }
        Some(Topology {
            id: id?,
            nodes,
            links,
        })
    }

    fn node(&mut self, el: El<'d, 'input>, index: usize) -> Option<VirtualNode> {
        self.attributes(el, &["id"], &["id"]);
        let id = self.parsed(el, "id", None, NodeId::from_str);
        // A node whose id is unusable is reported but not kept; its parts
        // are still checked, under an index nothing refers to.
        let n = if id.is_some() { index } else { usize::MAX };
        self.map.insert(Loc::Node(n), el.range().start);
        let found = self.children(
            el,
            &[
                ("description", Card::Opt),
                ("name", Card::Opt),
                ("cpu", Card::Opt),
                ("ram", Card::One),
                ("hd", Card::One),
                ("network_interfaces", Card::Opt),
                ("operative_system", Card::Opt),
                ("software_configuration", Card::Opt),
            ],
        );
        let description = self.text_leaf(Self::one(&found, "description"));
        let name = self.text_leaf(Self::one(&found, "name"));
        let cpu = Self::one(&found, "cpu")
            .map(|c| self.cpu(c))
            .unwrap_or_default();

        let ram_loc = Loc::NodeField(n, Field::Ram);
        let ram = match Self::one(&found, "ram") {
            Some(r) => {
                self.attributes(r, &["dimension"], &["dimension"]);
                self.empty_leaf(r);
                self.map.insert(ram_loc, r.range().start);
                self.parsed(r, "dimension", Some(ram_loc), Mib::parse)
            }
            None => None,
        };
        if ram.is_none() {
            self.failed.insert(ram_loc);
        }
        let disk_loc = Loc::NodeField(n, Field::Disk);
        let disk = match Self::one(&found, "hd") {
            Some(h) => {
                self.attributes(h, &["dimension"], &["dimension"]);
                self.empty_leaf(h);
                self.map.insert(disk_loc, h.range().start);
                self.parsed(h, "dimension", Some(disk_loc), Mib::parse_gib)
            }
            None => None,
        };
        if disk.is_none() {
            self.failed.insert(disk_loc);
        }

        let mut interfaces = Vec::new();
        if let Some(list) = Self::one(&found, "network_interfaces") {
            self.attributes(list, &[], &[]);
            let ifs = self.children(list, &[("interface", Card::Many)]);
            for iel in ifs.get("interface").into_iter().flatten() {
                let i = interfaces.len();
                if let Some(iface) = self.interface(*iel, n, i) {
                    interfaces.push(iface);
                }
            }
        }
        let os = Self::one(&found, "operative_system")
            .map(|o| self.os(o))
            .unwrap_or_default();
        let software = Self::one(&found, "software_configuration")
            .map(|s| self.software(s))
            .unwrap_or_default();
        Some(VirtualNode {
            id: id?,
            name,
            description,
            cpu,
            ram: ram.unwrap_or_default(),
            disk: disk.unwrap_or_default(),
            interfaces,
            os,
            software,
        })
    }

    fn cpu(&mut self, el: El<'d, 'input>) -> Cpu {
        self.attributes(el, &["amount", "clock", "name", "type"], &[]);
        self.empty_leaf(el);
        let amount = self.parsed(el, "amount", None, parse_count).unwrap_or(0);
        Cpu {
            amount,
            clock: self
                .parsed(el, "clock", None, Mhz::parse)
                .unwrap_or_default(),
            name: self.string(el, "name"),
            kind: self.string(el, "type"),
        }
    }

    fn interface(&mut self, el: El<'d, 'input>, n: usize, i: usize) -> Option<NetworkInterface> {
        self.attributes(el, &["MAC", "name", "type", "address"], &["name"]);
        let name = self.parsed(el, "name", None, InterfaceName::from_str);
        let i = if name.is_some() { i } else { usize::MAX };
        self.map.insert(Loc::Interface(n, i), el.range().start);
        let mac = match el.attribute("MAC") {
            Some(v) if v.trim().is_empty() => None,
            Some(_) => self.parsed(
                el,
                "MAC",
                Some(Loc::InterfaceField(n, i, Field::Mac)),
                MacAddr::from_str,
            ),
            None => None,
        };
        let address = self.parsed(
            el,
            "address",
            Some(Loc::InterfaceField(n, i, Field::Address)),
            Ipv4Addr::from_str,
        );
        if let Some((_, pos)) = self.attr(el, "type") {
            self.map.insert(Loc::InterfaceField(n, i, Field::Kind), pos);
        }
        let found = self.children(
            el,
            &[("interface_binding", Card::Opt), ("entry_point", Card::Opt)],
        );
        let binding = match Self::one(&found, "interface_binding") {
            Some(b) => {
                self.attributes(b, &["type"], &["type"]);
                self.empty_leaf(b);
                self.parsed(b, "type", None, |s| {
                    InterfaceBinding::from_xml_name(s).ok_or_else(|| {
                        format!("{s:?} is not a binding type (expected HIF or bridge)")
                    })
                })
                .unwrap_or_default()
            }
            None => InterfaceBinding::Unspecified,
        };
        let entry_point = Self::one(&found, "entry_point").map(|e| {
            self.attributes(e, &["home_address"], &[]);
            self.empty_leaf(e);
            let home_address = self.parsed(
                e,
                "home_address",
                Some(Loc::InterfaceField(n, i, Field::HomeAddress)),
                Ipv4Addr::from_str,
            );
            EntryPoint { home_address }
        });
        Some(NetworkInterface {
            name: name?,
            mac,
            kind: self.string(el, "type"),
            binding,
            entry_point,
            address,
        })
    }

    fn os(&mut self, el: El<'d, 'input>) -> OperatingSystem {
        self.attributes(el, &["name", "password", "username"], &[]);
        self.empty_leaf(el);
        OperatingSystem {
            name: self.string(el, "name"),
            username: self.string(el, "username"),
            password: Secret::new(self.string(el, "password")),
        }
    }

    fn software(&mut self, el: El<'d, 'input>) -> SoftwareConfiguration {
        self.attributes(el, &["template"], &[]);
        let found = self.children(el, &[("sshServer", Card::Opt), ("software", Card::Many)]);
        let ssh_port = Self::one(&found, "sshServer").and_then(|s| {
            self.attributes(s, &["port"], &["port"]);
            self.empty_leaf(s);
            self.parsed(s, "port", None, |v| match v.trim().parse::<u16>() {
                Ok(0) => Err("port 0 is not a port".to_owned()),
                Ok(p) => Ok(p),
                Err(_) => Err(format!("{v:?} is not a port number (1-65535)")),
            })
        });
        let mut software = Vec::new();
        for s in found.get("software").into_iter().flatten() {
            self.attributes(*s, &["name", "type", "version"], &["name"]);
            self.empty_leaf(*s);
            software.push(Software {
                name: self.string(*s, "name"),
                kind: self.string(*s, "type"),
                version: self.string(*s, "version"),
            });
        }
        SoftwareConfiguration {
            template: self.string(el, "template"),
            ssh_port,
            software,
        }
    }

    fn link(&mut self, el: El<'d, 'input>, index: usize) -> Option<VirtualLink> {
        self.attributes(
            el,
            &["id", "type", "bandwidth", "subnet"],
            &["id", "bandwidth"],
        );
        let id = self.parsed(el, "id", None, LinkId::from_str);
        let l = if id.is_some() { index } else { usize::MAX };
        self.map.insert(Loc::Link(l), el.range().start);
        let bw_loc = Loc::LinkField(l, Field::Bandwidth);
        let bandwidth = self.parsed(el, "bandwidth", Some(bw_loc), Mbps::parse);
        if bandwidth.is_none() {
            self.failed.insert(bw_loc);
        }
        let kind_loc = Loc::LinkField(l, Field::Kind);
        let kind = self.parsed(el, "type", Some(kind_loc), |s| {
            LinkKind::from_xml_name(s)
                .ok_or_else(|| format!("{s:?} is not a link type (expected point_to_point or lan)"))
        });
        let subnet = self.parsed(el, "subnet", Some(Loc::LinkField(l, Field::Subnet)), |s| {
            Ipv4Net::from_str(s.trim())
                .map_err(|_| format!("{s:?} is not an IPv4 prefix such as 10.1.0.0/30"))
        });
        let found = self.children(el, &[("endpoint", Card::Many)]);
        let mut endpoints = Vec::new();
        for ep in found.get("endpoint").into_iter().flatten() {
            self.attributes(*ep, &["node", "interface"], &["node", "interface"]);
            self.empty_leaf(*ep);
            self.map
                .insert(Loc::Endpoint(l, endpoints.len()), ep.range().start);
            let node = self.parsed(*ep, "node", None, NodeId::from_str);
            let interface = self.parsed(*ep, "interface", None, InterfaceName::from_str);
            match (node, interface) {
                (Some(node), Some(interface)) => endpoints.push(Endpoint { node, interface }),
                // A dropped end point would make the arity look wrong.
                _ => {
                    self.failed.insert(kind_loc);
                }
            }
        }
        let kind = kind.unwrap_or(if endpoints.len() > 2 {
            LinkKind::Lan
        } else {
            LinkKind::PointToPoint
        });
        Some(VirtualLink {
            id: id?,
            kind,
            bandwidth: bandwidth.unwrap_or_default(),
            endpoints,
            subnet,
        })
    }
}

/// A whole, non-negative count such as a number of CPUs.
fn parse_count(text: &str) -> Result<u32, neptune_types::DomainError> {
    let n = Mhz::parse(text)?;
    Ok(n.0)
}

fn clip(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}
