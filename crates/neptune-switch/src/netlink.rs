//! A small rtnetlink client: the few messages the kernel and userspace data
//! planes need (links, routes with lightweight-tunnel encap, policy rules),
//! built by hand. Available crates do not cover `encap ip` routes across
//! versions, and the messages are short.
//!
//! Every request asks for an acknowledgement and waits for it, so errors are
//! reported per call with the kernel's errno.

use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;

use socket2::{Domain, Protocol, Socket, Type};

const NETLINK_ROUTE: i32 = 0;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;

const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_COLLECT_METADATA: u16 = 25;
const IFLA_VXLAN_GPE: u16 = 27;
const IFLA_IPTUN_COLLECT_METADATA: u16 = 19;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RTA_ENCAP_TYPE: u16 = 21;
const RTA_ENCAP: u16 = 22;
const LWTUNNEL_ENCAP_IP: u16 = 2;
const LWTUNNEL_IP_ID: u16 = 1;
const LWTUNNEL_IP_DST: u16 = 2;
const LWTUNNEL_IP_SRC: u16 = 3;

const RTN_UNICAST: u8 = 1;
const RTN_BLACKHOLE: u8 = 6;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_NOWHERE: u8 = 255;
/// `rtm_protocol` of every route this switch installs (shows as `proto 78`).
pub const RTPROT_NEPTUNE: u8 = 78;

const FRA_DST: u16 = 1;
const FRA_SRC: u16 = 2;
const FRA_IIFNAME: u16 = 3;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_IP_PROTO: u16 = 22;
const FRA_DPORT_RANGE: u16 = 24;
const FR_ACT_TO_TBL: u8 = 1;
const FR_ACT_BLACKHOLE: u8 = 6;

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;
/// The local routing table.
pub const TABLE_LOCAL: u32 = 255;

/// A netlink failure.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Socket I/O.
    #[error("netlink I/O")]
    Io(#[from] std::io::Error),
    /// The kernel refused the request.
    #[error("kernel refused {what}: errno {errno} ({})", std::io::Error::from_raw_os_error(*.errno))]
    Kernel {
        /// The request.
        what: &'static str,
        /// Positive errno.
        errno: i32,
    },
    /// Interface name unknown.
    #[error("no interface named {0:?}")]
    NoSuchLink(String),
    /// A reply that does not parse.
    #[error("malformed netlink reply")]
    Malformed,
}

impl NetlinkError {
    /// The kernel's errno, if the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Builder of one netlink message (also used by [`crate::nftables`]).
pub(crate) struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16) -> Self {
        Msg::bare(kind, flags | NLM_F_ACK)
    }
    /// A request with exactly `flags` (plus `NLM_F_REQUEST`): the batch
    /// delimiters of nfnetlink must not ask for an acknowledgement.
    pub(crate) fn bare(kind: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set in finish
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Msg {
            buf,
            nests: Vec::new(),
        }
    }
    pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }
    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }
    pub(crate) fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }
    fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }
    fn addr(&mut self, kind: u16, a: Ipv4Addr) -> &mut Self {
        self.attr(kind, &a.octets())
    }
    pub(crate) fn string(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }
    pub(crate) fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self
    }
    pub(crate) fn end(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }
    pub(crate) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn rtmsg(dst_len: u8, protocol: u8, scope: u8, kind: u8) -> [u8; 12] {
    // family, dst_len, src_len, tos, table (RT_TABLE_UNSPEC: use RTA_TABLE), protocol, scope, type, flags
    [AF_INET, dst_len, 0, 0, 0, protocol, scope, kind, 0, 0, 0, 0]
}

fn rulehdr(dst_len: u8, src_len: u8, action: u8) -> [u8; 12] {
    [AF_INET, dst_len, src_len, 0, 0, 0, 0, action, 0, 0, 0, 0]
}

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Out of a device, optionally via a gateway.
    Device {
        /// Interface index.
        oif: u32,
        /// Next hop.
        via: Option<Ipv4Addr>,
    },
    /// Into a lightweight tunnel through an `external` tunnel device.
    Encap {
        /// Tunnel device index.
        oif: u32,
        /// Tunnel id (VXLAN VNI).
        id: u64,
        /// Remote tunnel endpoint.
        dst: Ipv4Addr,
        /// Local tunnel endpoint.
        src: Ipv4Addr,
    },
    /// Dropped silently.
    Blackhole,
}

/// A policy rule selector and action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// Priority.
    pub priority: u32,
    /// Source /32.
    pub from: Option<(Ipv4Addr, u8)>,
    /// Destination /32.
    pub to: Option<(Ipv4Addr, u8)>,
    /// Input interface name.
    pub iif: Option<String>,
    /// IP protocol.
    pub ip_proto: Option<u8>,
    /// Destination port.
    pub dport: Option<u16>,
    /// Table to look up; `None`: blackhole.
    pub table: Option<u32>,
}

/// An rtnetlink socket.
#[derive(Debug)]
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a NETLINK_ROUTE socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(NETLINK_ROUTE)),
        )?;
        sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: vec![0u8; 65536],
        })
    }

    fn request(&mut self, what: &'static str, msg: Msg) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        (&self.sock).write_all(&bytes)?;
        loop {
            let n = (&self.sock).read(&mut self.buf)?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(
                    self.buf[off..off + 4]
                        .try_into()
                        .map_err(|_| NetlinkError::Malformed)?,
                );
                let len = usize::try_from(len).map_err(|_| NetlinkError::Malformed)?;
                if len < 16 || off + len > n {
                    return Err(NetlinkError::Malformed);
                }
                let kind = u16::from_ne_bytes([self.buf[off + 4], self.buf[off + 5]]);
                let rseq = u32::from_ne_bytes(
                    self.buf[off + 8..off + 12]
                        .try_into()
                        .map_err(|_| NetlinkError::Malformed)?,
                );
                if kind == NLMSG_ERROR && rseq == seq {
                    if len < 20 {
                        return Err(NetlinkError::Malformed);
                    }
                    let err = i32::from_ne_bytes(
                        self.buf[off + 16..off + 20]
                            .try_into()
                            .map_err(|_| NetlinkError::Malformed)?,
                    );
                    return if err == 0 {
                        Ok(())
                    } else {
                        Err(NetlinkError::Kernel { what, errno: -err })
                    };
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Index of an interface by name.
    pub fn index(name: &str) -> Result<u32, NetlinkError> {
        nix::net::if_::if_nametoindex(name).map_err(|_| NetlinkError::NoSuchLink(name.to_owned()))
    }

    /// Creates a `vxlan gpe external` device bound to `local:port` (no error if it exists).
    pub fn add_vxlan_gpe(
        &mut self,
        name: &str,
        local: Ipv4Addr,
        port: u16,
    ) -> Result<(), NetlinkError> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.raw(&ifinfo(0, 0, 0)).string(IFLA_IFNAME, name);
        m.begin(IFLA_LINKINFO)
            .string(IFLA_INFO_KIND, "vxlan")
            .begin(IFLA_INFO_DATA);
        // GPE refuses learning, which the kernel turns on unless told.
        m.addr(IFLA_VXLAN_LOCAL, local)
            .attr(IFLA_VXLAN_LEARNING, &[0])
            .attr(IFLA_VXLAN_PORT, &port.to_be_bytes())
            .attr(IFLA_VXLAN_COLLECT_METADATA, &[1])
            .attr(IFLA_VXLAN_GPE, &[]);
        m.end().end();
        exists_ok(self.request("vxlan-gpe link creation", m))
    }

    /// Creates an `ipip external` device (needs the ipip module).
    pub fn add_ipip_external(&mut self, name: &str) -> Result<(), NetlinkError> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.raw(&ifinfo(0, 0, 0)).string(IFLA_IFNAME, name);
        m.begin(IFLA_LINKINFO)
            .string(IFLA_INFO_KIND, "ipip")
            .begin(IFLA_INFO_DATA);
        m.attr(IFLA_IPTUN_COLLECT_METADATA, &[]);
        m.end().end();
        exists_ok(self.request("ipip link creation", m))
    }

    /// Sets a link up, optionally with an MTU.
    pub fn set_up(&mut self, index: u32, mtu: Option<u32>) -> Result<(), NetlinkError> {
        let idx = i32::try_from(index).map_err(|_| NetlinkError::Malformed)?;
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.raw(&ifinfo(idx, IFF_UP, IFF_UP));
        if let Some(mtu) = mtu {
            m.u32(IFLA_MTU, mtu);
        }
        self.request("link up", m)
    }

    /// Adds or atomically replaces the route to `dst/len` in `table`.
    pub fn replace_route(
        &mut self,
        table: u32,
        dst: Ipv4Addr,
        len: u8,
        target: &RouteTarget,
    ) -> Result<(), NetlinkError> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE);
        match target {
            RouteTarget::Device { oif, via } => {
                let scope = if via.is_some() {
                    RT_SCOPE_UNIVERSE
                } else {
                    RT_SCOPE_LINK
                };
                m.raw(&rtmsg(len, RTPROT_NEPTUNE, scope, RTN_UNICAST));
                m.u32(RTA_TABLE, table)
                    .addr(RTA_DST, dst)
                    .u32(RTA_OIF, *oif);
                if let Some(gw) = via {
                    m.addr(RTA_GATEWAY, *gw);
                }
            }
            RouteTarget::Encap {
                oif,
                id,
                dst: remote,
                src,
            } => {
                m.raw(&rtmsg(len, RTPROT_NEPTUNE, RT_SCOPE_LINK, RTN_UNICAST));
                m.u32(RTA_TABLE, table)
                    .addr(RTA_DST, dst)
                    .u32(RTA_OIF, *oif);
                m.attr(RTA_ENCAP_TYPE, &LWTUNNEL_ENCAP_IP.to_ne_bytes());
                m.begin(RTA_ENCAP)
                    .attr(LWTUNNEL_IP_ID, &id.to_be_bytes())
                    .addr(LWTUNNEL_IP_DST, *remote)
                    .addr(LWTUNNEL_IP_SRC, *src)
                    .end();
            }
            RouteTarget::Blackhole => {
                m.raw(&rtmsg(
                    len,
                    RTPROT_NEPTUNE,
                    RT_SCOPE_UNIVERSE,
                    RTN_BLACKHOLE,
                ));
                m.u32(RTA_TABLE, table).addr(RTA_DST, dst);
            }
        }
        self.request("route replace", m)
    }

    /// Deletes the route to `dst/len` in `table`; absent is fine.
    pub fn delete_route(&mut self, table: u32, dst: Ipv4Addr, len: u8) -> Result<(), NetlinkError> {
        let mut m = Msg::new(RTM_DELROUTE, 0);
        m.raw(&rtmsg(len, 0, RT_SCOPE_NOWHERE, 0));
        m.u32(RTA_TABLE, table).addr(RTA_DST, dst);
        match self.request("route delete", m) {
            Err(e) if matches!(e.errno(), Some(libc::ESRCH) | Some(libc::ENOENT)) => Ok(()),
            other => other,
        }
    }

    /// Adds a policy rule (an identical existing rule is fine).
    pub fn add_rule(&mut self, rule: &Rule) -> Result<(), NetlinkError> {
        self.ensure_rule(rule).map(drop)
    }

    /// Adds a policy rule unless an identical one exists; says whether it
    /// was missing.
    pub fn ensure_rule(&mut self, rule: &Rule) -> Result<bool, NetlinkError> {
        let m = rule_msg(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, rule);
        match self.request("rule add", m) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the rule matching `rule`'s selectors; absent is fine.
    pub fn delete_rule(&mut self, rule: &Rule) -> Result<(), NetlinkError> {
        let m = rule_msg(RTM_DELRULE, 0, rule);
        match self.request("rule delete", m) {
            Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
            other => other,
        }
    }

    /// Deletes every rule at `priority` (optionally only those looking up `table`).
    pub fn delete_rules(&mut self, priority: u32, table: Option<u32>) -> Result<(), NetlinkError> {
        // One rule per round trip until none is left. Bounded only against a
        // kernel that acknowledged without deleting; far above the rules one
        // priority holds (one per peer at most).
        for _ in 0..1 << 20 {
            let mut m = Msg::new(RTM_DELRULE, 0);
            m.raw(&rulehdr(0, 0, 0));
            m.u32(FRA_PRIORITY, priority);
            if let Some(t) = table {
                m.u32(FRA_TABLE, t);
            }
            match self.request("rule delete", m) {
                Ok(()) => continue,
                Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::ESRCH)) => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn rule_msg(kind: u16, flags: u16, rule: &Rule) -> Msg {
    let mut m = Msg::new(kind, flags);
    let action = if rule.table.is_some() {
        FR_ACT_TO_TBL
    } else {
        FR_ACT_BLACKHOLE
    };
    let dl = rule.to.map(|t| t.1).unwrap_or(0);
    let sl = rule.from.map(|f| f.1).unwrap_or(0);
    m.raw(&rulehdr(dl, sl, action));
    m.u32(FRA_PRIORITY, rule.priority);
    if let Some((a, _)) = rule.from {
        m.addr(FRA_SRC, a);
    }
    if let Some((a, _)) = rule.to {
        m.addr(FRA_DST, a);
    }
    if let Some(iif) = &rule.iif {
        m.string(FRA_IIFNAME, iif);
    }
    if let Some(p) = rule.ip_proto {
        m.attr(FRA_IP_PROTO, &[p]);
    }
    if let Some(p) = rule.dport {
        let mut range = [0u8; 4];
        range[0..2].copy_from_slice(&p.to_ne_bytes());
        range[2..4].copy_from_slice(&p.to_ne_bytes());
        m.attr(FRA_DPORT_RANGE, &range);
    }
    if let Some(t) = rule.table {
        m.u32(FRA_TABLE, t);
    }
    m
}

fn exists_ok(r: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match r {
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Writes an IPv4 sysctl of one interface (`/proc/sys/net/ipv4/conf/DEV/NAME`).
pub fn set_ipv4_conf(dev: &str, name: &str, value: &str) -> std::io::Result<()> {
    if !crate::state::valid_ifname(dev) && dev != "all" {
        return Err(std::io::Error::other("invalid interface name"));
    }
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{dev}/{name}"), value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_aligned_and_nested_lengths_set() {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE);
        m.raw(&rtmsg(32, RTPROT_NEPTUNE, RT_SCOPE_LINK, RTN_UNICAST));
        m.begin(RTA_ENCAP)
            .attr(LWTUNNEL_IP_ID, &7u64.to_be_bytes())
            .addr(LWTUNNEL_IP_DST, Ipv4Addr::new(1, 2, 3, 4))
            .end();
        m.string(FRA_IIFNAME, "abc");
        let b = m.finish(9);
        assert_eq!(b.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        // nested attribute: 4 + (4 + 8) + (4 + 4) = 24
        assert_eq!(u16::from_ne_bytes([b[28], b[29]]), 24);
    }
}
