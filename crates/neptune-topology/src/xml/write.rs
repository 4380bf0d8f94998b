//! Writing the model in the paper's XML dialect, in the canonical element
//! order of Fig. 3, followed by the `<links>` section.

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use crate::model::{NetworkInterface, Topology, VirtualLink, VirtualNode};

type W = Writer<Vec<u8>>;

/// The topology as an XML document. The OS password is written: the XML
/// form is the user's own design document (API and JSON output never carry
/// it).
pub fn to_xml(topo: &Topology) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing into a Vec cannot fail; errors would only come from the sink.
    let _ = write_topology(&mut w, topo);
    let mut out = String::from_utf8(w.into_inner()).unwrap_or_default();
    out.push('\n');
    out
}

fn write_topology(w: &mut W, topo: &Topology) -> std::io::Result<()> {
    w.write_event(Event::Decl(BytesDecl::new(
        "1.0",
        Some("UTF-8"),
        Some("no"),
    )))?;
    start(w, "topology", &[("id", topo.id.as_str())])?;
    start(w, "nodes", &[])?;
    for node in &topo.nodes {
        write_node(w, node)?;
    }
    end(w, "nodes")?;
    if !topo.links.is_empty() {
        start(w, "links", &[])?;
        for link in &topo.links {
            write_link(w, link)?;
        }
        end(w, "links")?;
    }
    end(w, "topology")
}

fn write_node(w: &mut W, node: &VirtualNode) -> std::io::Result<()> {
    start(w, "node", &[("id", node.id.as_str())])?;
    text_leaf(w, "description", &node.description)?;
    text_leaf(w, "name", &node.name)?;
    let amount = node.cpu.amount.to_string();
    let clock = node.cpu.clock.0.to_string();
    empty(
        w,
        "cpu",
        &[
            ("amount", &amount),
            ("clock", &clock),
            ("name", &node.cpu.name),
            ("type", &node.cpu.kind),
        ],
    )?;
    empty(w, "ram", &[("dimension", &node.ram.0.to_string())])?;
    empty(w, "hd", &[("dimension", &node.disk.to_gib_text())])?;
    start(w, "network_interfaces", &[])?;
    for iface in &node.interfaces {
        write_interface(w, iface)?;
    }
    end(w, "network_interfaces")?;
    empty(
        w,
        "operative_system",
        &[
            ("name", &node.os.name),
            ("password", node.os.password.expose()),
            ("username", &node.os.username),
        ],
    )?;
    let sw = &node.software;
    if sw.ssh_port.is_none() && sw.software.is_empty() {
        empty(w, "software_configuration", &[("template", &sw.template)])?;
    } else {
        start(w, "software_configuration", &[("template", &sw.template)])?;
        if let Some(port) = sw.ssh_port {
            empty(w, "sshServer", &[("port", &port.to_string())])?;
        }
        for s in &sw.software {
            empty(
                w,
                "software",
                &[
                    ("name", &s.name),
                    ("type", &s.kind),
                    ("version", &s.version),
                ],
            )?;
        }
        end(w, "software_configuration")?;
    }
    end(w, "node")
}

fn write_interface(w: &mut W, iface: &NetworkInterface) -> std::io::Result<()> {
    let mac = iface.mac.map(|m| m.to_string()).unwrap_or_default();
    let address = iface.address.map(|a| a.to_string());
    let mut attrs = vec![
        ("MAC", mac.as_str()),
        ("name", iface.name.as_str()),
        ("type", &iface.kind),
    ];
    if let Some(a) = &address {
        attrs.push(("address", a));
    }
    let binding = iface.binding.xml_name();
    if binding.is_none() && iface.entry_point.is_none() {
        return empty(w, "interface", &attrs);
    }
    start(w, "interface", &attrs)?;
    if let Some(b) = binding {
        empty(w, "interface_binding", &[("type", b)])?;
    }
    if let Some(ep) = &iface.entry_point {
        let home = ep.home_address.map(|a| a.to_string());
        match &home {
            Some(h) => empty(w, "entry_point", &[("home_address", h)])?,
            None => empty(w, "entry_point", &[])?,
        }
    }
    end(w, "interface")
}

fn write_link(w: &mut W, link: &VirtualLink) -> std::io::Result<()> {
    let bandwidth = link.bandwidth.0.to_string();
    let subnet = link.subnet.map(|s| s.to_string());
    let mut attrs = vec![
        ("id", link.id.as_str()),
        ("type", link.kind.xml_name()),
        ("bandwidth", bandwidth.as_str()),
    ];
    if let Some(s) = &subnet {
        attrs.push(("subnet", s));
    }
    start(w, "link", &attrs)?;
    for ep in &link.endpoints {
        empty(
            w,
            "endpoint",
            &[
                ("node", ep.node.as_str()),
                ("interface", ep.interface.as_str()),
            ],
        )?;
    }
    end(w, "link")
}

fn element<'a>(name: &'a str, attrs: &[(&str, &str)]) -> BytesStart<'a> {
    let mut el = BytesStart::new(name);
    for (k, v) in attrs {
        el.push_attribute((*k, *v));
    }
    el
}

fn start(w: &mut W, name: &str, attrs: &[(&str, &str)]) -> std::io::Result<()> {
    w.write_event(Event::Start(element(name, attrs)))
}

fn empty(w: &mut W, name: &str, attrs: &[(&str, &str)]) -> std::io::Result<()> {
    w.write_event(Event::Empty(element(name, attrs)))
}

fn end(w: &mut W, name: &str) -> std::io::Result<()> {
    w.write_event(Event::End(BytesEnd::new(name)))
}

fn text_leaf(w: &mut W, name: &str, text: &str) -> std::io::Result<()> {
    if text.is_empty() {
        return empty(w, name, &[]);
    }
    start(w, name, &[])?;
    w.write_event(Event::Text(BytesText::new(text)))?;
    end(w, name)
}
