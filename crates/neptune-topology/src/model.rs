//! The Virtual Infrastructure model: what a user designs, independent of the
//! form it was written in (the paper's XML dialect, JSON, the web editor or
//! the catalogue).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use neptune_types::{InterfaceName, LinkId, MacAddr, Mbps, Mhz, Mib, NodeId, Secret, TopologyId};
use serde::{Deserialize, Serialize};

/// A Virtual Infrastructure topology: virtual nodes and the virtual links
/// between their interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "paper-fig3"))]
    pub id: TopologyId,
    pub nodes: Vec<VirtualNode>,
    #[serde(default)]
    pub links: Vec<VirtualLink>,
}

/// One virtual machine of a VI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VirtualNode {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "web"))]
    pub id: NodeId,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub cpu: Cpu,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub ram: Mib,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub disk: Mib,
    #[serde(default)]
    pub interfaces: Vec<NetworkInterface>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = OperatingSystemSchema))]
    pub os: OperatingSystem,
    #[serde(default)]
    pub software: SoftwareConfiguration,
}

impl VirtualNode {
    /// Virtual CPUs the node gets: the requested amount, or one when unspecified.
    pub fn vcpus(&self) -> u32 {
        self.cpu.amount.max(1)
    }

    pub fn interface(&self, name: &InterfaceName) -> Option<&NetworkInterface> {
        self.interfaces.iter().find(|i| &i.name == name)
    }
}

/// CPU wishes; zero or empty means unspecified.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    #[serde(default)]
    pub amount: u32,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = u32))]
    pub clock: Mhz,
    #[serde(default)]
    pub name: String,
    /// The paper's `type` attribute (an architecture or model family).
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// A virtual network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "eth0"))]
    pub name: InterfaceName,
    /// Always set once a topology is loaded: absent MACs are generated
    /// (locally administered, deterministic).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "02:4e:0a:00:00:01"))]
    pub mac: Option<MacAddr>,
    /// The paper's free-form `type` attribute (a NIC model such as `virtio`).
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub binding: InterfaceBinding,
    /// Set when this interface is an entry point that needs a public Home Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<EntryPoint>,
    /// A private address the user pins for this interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Ipv4))]
    pub address: Option<Ipv4Addr>,
}

impl NetworkInterface {
    pub fn new(name: InterfaceName) -> Self {
        NetworkInterface {
            name,
            mac: None,
            kind: String::new(),
            binding: InterfaceBinding::Unspecified,
            entry_point: None,
            address: None,
        }
    }
}

/// How an interface attaches on the host (the paper's `interface_binding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InterfaceBinding {
    /// Not stated: Neptune chooses (a bridge for virtual links).
    #[default]
    Unspecified,
    /// `HIF`: a host interface, attached to the host's physical network.
    Hif,
    /// `bridge`: attached to a host bridge that carries the virtual link.
    Bridge,
}

impl InterfaceBinding {
    pub fn xml_name(self) -> Option<&'static str> {
        match self {
            InterfaceBinding::Unspecified => None,
            InterfaceBinding::Hif => Some("HIF"),
            InterfaceBinding::Bridge => Some("bridge"),
        }
    }

    pub fn from_xml_name(name: &str) -> Option<Self> {
        match name {
            "HIF" | "hif" => Some(InterfaceBinding::Hif),
            "bridge" => Some(InterfaceBinding::Bridge),
            _ => None,
        }
    }
}

/// An entry point: the interface gets a public Home Address from the home
/// datacenter's pool, kept for the VI's whole life, even across migrations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EntryPoint {
    /// A Home Address the user pins (must lie in the home datacenter's pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Ipv4))]
    pub home_address: Option<Ipv4Addr>,
}

/// The guest operating system. The password is write-only: it is read from
/// designs and handed to the deployment, never shown back.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "OperatingSystemInput")]
pub struct OperatingSystem {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Secret,
}

/// The JSON form of [`OperatingSystem`] in the OpenAPI document: a design
/// carries the password, an answer only says whether one is set.
#[cfg(feature = "openapi")]
#[derive(Debug, utoipa::ToSchema)]
#[schema(as = OperatingSystem)]
#[allow(dead_code)] // a schema, never built
pub struct OperatingSystemSchema {
    name: String,
    /// The OS user made in the guest.
    username: String,
    /// Kept only as its SHA-512-crypt hash; a value already in crypt(3)
    /// form is kept as given.
    #[schema(write_only)]
    password: Option<String>,
    /// In answers: whether a password is set.
    #[schema(read_only)]
    password_set: Option<bool>,
}

/// The accepted JSON input: `password_set` (as written by the output) is
/// accepted and ignored, so a document read back keeps validating.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatingSystemInput {
    #[serde(default)]
    name: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: Secret,
    #[serde(default, rename = "password_set")]
    _password_set: Option<bool>,
}

impl From<OperatingSystemInput> for OperatingSystem {
    fn from(i: OperatingSystemInput) -> Self {
        OperatingSystem {
            name: i.name,
            username: i.username,
            password: i.password,
        }
    }
}

impl Serialize for OperatingSystem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("OperatingSystem", 3)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("username", &self.username)?;
        // Whether a password is set, never the password.
        st.serialize_field("password_set", &!self.password.is_empty())?;
        st.end()
    }
}

/// The software of a node: its template and what runs on it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SoftwareConfiguration {
    /// The template (image) the VM is made from; empty means the Manager's default.
    #[serde(default)]
    pub template: String,
    /// The port of the SSH server, when one should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub software: Vec<Software>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Software {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub version: String,
}

/// A virtual link between interfaces of different nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VirtualLink {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "lan0"))]
    pub id: LinkId,
    #[serde(rename = "type")]
    pub kind: LinkKind,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub bandwidth: Mbps,
    pub endpoints: Vec<Endpoint>,
    /// A private subnet the user pins for this link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "10.1.0.0/24"))]
    pub subnet: Option<Ipv4Net>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// Exactly two end points.
    PointToPoint,
    /// A shared segment with two or more end points.
    Lan,
}

impl LinkKind {
    pub fn xml_name(self) -> &'static str {
        match self {
            LinkKind::PointToPoint => "point_to_point",
            LinkKind::Lan => "lan",
        }
    }

    pub fn from_xml_name(name: &str) -> Option<Self> {
        match name {
            "point_to_point" => Some(LinkKind::PointToPoint),
            "lan" => Some(LinkKind::Lan),
            _ => None,
        }
    }
}

/// One end of a virtual link: an interface of a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub node: NodeId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub interface: InterfaceName,
}

/// Totals of a topology, as `neptune topology check` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Summary {
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "paper-fig3"))]
    pub id: TopologyId,
    pub nodes: usize,
    pub links: usize,
    pub entry_points: usize,
    pub vcpus: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub ram: Mib,
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub disk: Mib,
    /// The sum of the bandwidths of all virtual links.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub bandwidth: Mbps,
}

impl Topology {
    pub fn node(&self, id: &NodeId) -> Option<&VirtualNode> {
        self.nodes.iter().find(|n| &n.id == id)
    }

    /// Every entry point as (node, interface).
    pub fn entry_points(&self) -> impl Iterator<Item = (&VirtualNode, &NetworkInterface)> {
        self.nodes
            .iter()
            .flat_map(|n| n.interfaces.iter().map(move |i| (n, i)))
            .filter(|(_, i)| i.entry_point.is_some())
    }

    pub fn summary(&self) -> Summary {
        Summary {
            id: self.id.clone(),
            nodes: self.nodes.len(),
            links: self.links.len(),
            entry_points: self.entry_points().count(),
            vcpus: self.nodes.iter().map(|n| u64::from(n.vcpus())).sum(),
            ram: self
                .nodes
                .iter()
                .fold(Mib::ZERO, |a, n| a.saturating_add(n.ram)),
            disk: self
                .nodes
                .iter()
                .fold(Mib::ZERO, |a, n| a.saturating_add(n.disk)),
            bandwidth: self
                .links
                .iter()
                .fold(Mbps(0), |a, l| a.saturating_add(l.bandwidth)),
        }
    }
}
