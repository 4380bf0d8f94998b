//! The tunnel guard of the kernel data plane, in nf_tables, programmed over
//! nfnetlink by hand (like [`crate::netlink`]: a few short messages, no
//! `nft` binary needed).
//!
//! The kernel's VXLAN socket listens on every local address, and the
//! `external` device decapsulates whatever reaches it; policy rules can only
//! name the addresses they know. The guard instead asks the routing table
//! whether the destination is local, so an address added at any time is
//! covered:
//!
//! ```text
//! table ip neptune_<device> {
//!     set peers { type ipv4_addr; flags constant; elements = { PEER, ... } }
//!     counter refused { }
//!     chain guard {
//!         type filter hook prerouting priority filter; policy accept;
//!         ip daddr CARE_OF meta l4proto udp udp dport 4790 ip saddr @peers accept
//!         meta l4proto udp udp dport 4790 fib daddr type local counter name "refused" drop
//!         (the same for `type broadcast` and `type multicast`)
//!     }
//! }
//! ```
//!
//! (`meta l4proto ipip` and no port for an `ipip` device.) The peers are a
//! set, not a rule each: every packet the switch routes crosses the chain,
//! and a set lookup costs the same for 2 peers or 2000. The table is
//! replaced whole, in one transaction, at every start, and again whenever
//! the reconcile loop finds that nf_tables changed since it last looked
//! (the ruleset's generation moved: someone may have deleted or edited the
//! table), keeping the count of refused packets.

use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::netlink::{Msg, NetlinkError};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLMSG_ERROR: u16 = 2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const AF_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_GETOBJ: u16 = 19;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

const NF_INET_PRE_ROUTING: u32 = 0;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_OBJECT_COUNTER: u32 = 1;
/// Its contents never change while a rule uses it (the table is replaced whole).
const NFT_SET_CONSTANT: u32 = 0x2;
/// `ipv4_addr`, so that `nft list` shows addresses.
const NFT_TYPE_IPADDR: u32 = 7;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_META_L4PROTO: u32 = 16;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const RTN_BROADCAST: u32 = 3;
const RTN_MULTICAST: u32 = 5;

const CHAIN: &str = "guard";
const COUNTER: &str = "refused";
const PEERS: &str = "peers";
/// Names the set within the transaction that creates it.
const PEERS_SET_ID: u32 = 1;
/// Elements per message: a nested attribute's length is 16 bits.
const ELEMENTS_PER_MESSAGE: usize = 1024;

/// What the guard lets through: tunnel packets (protocol `proto`, UDP
/// destination port `dport` if any) from a peer to the care-of address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelGuard {
    /// nf_tables table owned by this switch.
    pub table: String,
    /// This switch's care-of address.
    pub care_of: Ipv4Addr,
    /// Peer switches.
    pub peers: Vec<Ipv4Addr>,
    /// IP protocol of the tunnel (17 for VXLAN-GPE, 4 for IP-in-IP).
    pub proto: u8,
    /// UDP destination port (VXLAN-GPE).
    pub dport: Option<u16>,
}

impl TunnelGuard {
    /// The table name for a tunnel device (`neptune_<device>`, `-` and `.` as `_`).
    pub fn table_for(device: &str) -> String {
        format!("neptune_{}", device.replace(['-', '.'], "_"))
    }

    /// Installs the guard, replacing whatever the table held, atomically;
    /// its counter of refused packets starts at `refused`.
    pub fn install(&self, refused: Refused) -> Result<(), NetlinkError> {
        let mut msgs = vec![
            table_msg(NFT_MSG_NEWTABLE, NLM_F_CREATE, &self.table),
            table_msg(NFT_MSG_DELTABLE, 0, &self.table),
            table_msg(NFT_MSG_NEWTABLE, NLM_F_CREATE, &self.table),
        ];
        let mut obj = nft_msg(NFT_MSG_NEWOBJ, NLM_F_CREATE);
        obj.string(NFTA_OBJ_TABLE, &self.table)
            .string(NFTA_OBJ_NAME, COUNTER)
            .attr(NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes())
            .begin(NFTA_OBJ_DATA | NLA_F_NESTED)
            .attr(NFTA_COUNTER_BYTES, &refused.bytes.to_be_bytes())
            .attr(NFTA_COUNTER_PACKETS, &refused.packets.to_be_bytes())
            .end();
        msgs.push(obj);
        let mut chain = nft_msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        chain
            .string(NFTA_CHAIN_TABLE, &self.table)
            .string(NFTA_CHAIN_NAME, CHAIN)
            .begin(NFTA_CHAIN_HOOK | NLA_F_NESTED)
            .attr(NFTA_HOOK_HOOKNUM, &NF_INET_PRE_ROUTING.to_be_bytes())
            .attr(NFTA_HOOK_PRIORITY, &0u32.to_be_bytes())
            .end()
            .attr(NFTA_CHAIN_POLICY, &NF_ACCEPT.to_be_bytes())
            .string(NFTA_CHAIN_TYPE, "filter");
        msgs.push(chain);
        let mut set = nft_msg(NFT_MSG_NEWSET, NLM_F_CREATE);
        set.string(NFTA_SET_TABLE, &self.table)
            .string(NFTA_SET_NAME, PEERS)
            .attr(NFTA_SET_FLAGS, &NFT_SET_CONSTANT.to_be_bytes())
            .attr(NFTA_SET_KEY_TYPE, &NFT_TYPE_IPADDR.to_be_bytes())
            .attr(NFTA_SET_KEY_LEN, &4u32.to_be_bytes())
            .attr(NFTA_SET_ID, &PEERS_SET_ID.to_be_bytes());
        msgs.push(set);
        for chunk in self.peers.chunks(ELEMENTS_PER_MESSAGE) {
            let mut elems = nft_msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE);
            elems
                .string(NFTA_SET_ELEM_LIST_TABLE, &self.table)
                .string(NFTA_SET_ELEM_LIST_SET, PEERS)
                .attr(NFTA_SET_ELEM_LIST_SET_ID, &PEERS_SET_ID.to_be_bytes())
                .begin(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
            for peer in chunk {
                elems
                    .begin(NFTA_LIST_ELEM | NLA_F_NESTED)
                    .begin(NFTA_SET_ELEM_KEY | NLA_F_NESTED)
                    .attr(NFTA_DATA_VALUE, &peer.octets())
                    .end()
                    .end();
            }
            elems.end();
            msgs.push(elems);
        }
        let mut e = Exprs::default();
        e.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4)
            .cmp(&self.care_of.octets());
        self.tunnel_match(&mut e);
        e.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4)
            .lookup(PEERS, PEERS_SET_ID)
            .verdict(NF_ACCEPT);
        msgs.push(self.rule(e));
        // The wildcard socket also takes broadcasts and multicasts.
        for kind in [RTN_LOCAL, RTN_BROADCAST, RTN_MULTICAST] {
            let mut e = Exprs::default();
            self.tunnel_match(&mut e);
            e.fib_daddr_type().cmp(&kind.to_ne_bytes());
            e.counter(COUNTER).verdict(NF_DROP);
            msgs.push(self.rule(e));
        }
        transact(msgs, true).map(drop)
    }

    /// Tunnel packets refused so far (counted from the value given to
    /// [`TunnelGuard::install`]).
    pub fn refused(&self) -> Result<Refused, NetlinkError> {
        let mut get = nft_msg(NFT_MSG_GETOBJ, 0);
        get.string(NFTA_OBJ_TABLE, &self.table)
            .string(NFTA_OBJ_NAME, COUNTER)
            .attr(NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes());
        // A query is not transactional: nfnetlink refuses it inside a batch.
        let replies = transact(vec![get], false)?;
        replies
            .iter()
            .find_map(|m| {
                let data = find_attr(m, NFTA_OBJ_DATA)?;
                let number =
                    |kind| Some(u64::from_be_bytes(find_attr(data, kind)?.try_into().ok()?));
                Some(Refused {
                    packets: number(NFTA_COUNTER_PACKETS)?,
                    bytes: number(NFTA_COUNTER_BYTES)?,
                })
            })
            .ok_or(NetlinkError::Malformed)
    }

    fn tunnel_match(&self, e: &mut Exprs) {
        e.meta_l4proto().cmp(&[self.proto]);
        if let Some(port) = self.dport {
            e.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)
                .cmp(&port.to_be_bytes());
        }
    }

    fn rule(&self, exprs: Exprs) -> Msg {
        let mut m = nft_msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        m.string(NFTA_RULE_TABLE, &self.table)
            .string(NFTA_RULE_CHAIN, CHAIN)
            .begin(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED);
        for (name, data) in &exprs.0 {
            m.begin(NFTA_LIST_ELEM | NLA_F_NESTED)
                .string(NFTA_EXPR_NAME, name)
                .begin(NFTA_EXPR_DATA | NLA_F_NESTED)
                .raw(data)
                .end()
                .end();
        }
        m.end();
        m
    }
}

/// The generation of this network namespace's nf_tables ruleset: it moves
/// with every committed change, anyone's.
pub fn generation() -> Result<u32, NetlinkError> {
    let replies = transact(vec![nft_msg(NFT_MSG_GETGEN, 0)], false)?;
    replies
        .iter()
        .find_map(|m| {
            Some(u32::from_be_bytes(
                find_attr(m, NFTA_GEN_ID)?.try_into().ok()?,
            ))
        })
        .ok_or(NetlinkError::Malformed)
}

/// What the guard's counter holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    /// Packets refused.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The expressions of one rule: name and encoded attributes.
#[derive(Debug, Default)]
struct Exprs(Vec<(&'static str, Vec<u8>)>);

/// Encodes attributes (4-byte aligned) outside a message.
fn attrs(list: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, data) in list {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out
}

impl Exprs {
    fn push(&mut self, name: &'static str, list: &[(u16, &[u8])]) -> &mut Self {
        self.0.push((name, attrs(list)));
        self
    }
    fn payload(&mut self, base: u32, offset: u32, len: u32) -> &mut Self {
        self.push(
            "payload",
            &[
                (1, &NFT_REG_1.to_be_bytes()),
                (2, &base.to_be_bytes()),
                (3, &offset.to_be_bytes()),
                (4, &len.to_be_bytes()),
            ],
        )
    }
    fn meta_l4proto(&mut self) -> &mut Self {
        self.push(
            "meta",
            &[
                (1, &NFT_REG_1.to_be_bytes()),
                (2, &NFT_META_L4PROTO.to_be_bytes()),
            ],
        )
    }
    fn fib_daddr_type(&mut self) -> &mut Self {
        self.push(
            "fib",
            &[
                (1, &NFT_REG_1.to_be_bytes()),
                (2, &NFT_FIB_RESULT_ADDRTYPE.to_be_bytes()),
                (3, &NFTA_FIB_F_DADDR.to_be_bytes()),
            ],
        )
    }
    fn cmp(&mut self, value: &[u8]) -> &mut Self {
        let data = attrs(&[(NFTA_DATA_VALUE, value)]);
        self.push(
            "cmp",
            &[
                (1, &NFT_REG_1.to_be_bytes()),
                (2, &NFT_CMP_EQ.to_be_bytes()),
                (3 | NLA_F_NESTED, &data),
            ],
        )
    }
    fn lookup(&mut self, set: &str, set_id: u32) -> &mut Self {
        let mut n = set.as_bytes().to_vec();
        n.push(0);
        self.push(
            "lookup",
            &[
                (NFTA_LOOKUP_SET, &n),
                (NFTA_LOOKUP_SREG, &NFT_REG_1.to_be_bytes()),
                (NFTA_LOOKUP_SET_ID, &set_id.to_be_bytes()),
            ],
        )
    }
    fn counter(&mut self, name: &str) -> &mut Self {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        self.push("objref", &[(1, &NFT_OBJECT_COUNTER.to_be_bytes()), (2, &n)])
    }
    fn verdict(&mut self, code: u32) -> &mut Self {
        let verdict = attrs(&[(NFTA_VERDICT_CODE, &code.to_be_bytes())]);
        let data = attrs(&[(NFTA_DATA_VERDICT | NLA_F_NESTED, &verdict)]);
        self.push(
            "immediate",
            &[
                (1, &NFT_REG_VERDICT.to_be_bytes()),
                (2 | NLA_F_NESTED, &data),
            ],
        )
    }
}

fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let r = res_id.to_be_bytes();
    [family, 0, r[0], r[1]]
}

fn nft_msg(kind: u16, flags: u16) -> Msg {
    let mut m = Msg::bare((NFNL_SUBSYS_NFTABLES << 8) | kind, flags | NLM_F_ACK);
    m.raw(&nfgenmsg(NFPROTO_IPV4, 0));
    m
}

fn table_msg(kind: u16, flags: u16, table: &str) -> Msg {
    let mut m = nft_msg(kind, flags);
    m.string(NFTA_TABLE_NAME, table);
    m
}

/// Sends `msgs`, in one batch (one transaction) if `batch`, and waits for
/// every acknowledgement; returns the other messages the kernel answered
/// with (their attributes, after the nfgenmsg header).
fn transact(msgs: Vec<Msg>, batch: bool) -> Result<Vec<Vec<u8>>, NetlinkError> {
    let sock = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(NETLINK_NETFILTER)),
    )?;
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut bytes = Vec::new();
    if batch {
        let mut begin = Msg::bare(NFNL_MSG_BATCH_BEGIN, 0);
        begin.raw(&nfgenmsg(AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
        bytes.extend(begin.finish(1));
    }
    let mut pending = Vec::new();
    for (i, m) in msgs.into_iter().enumerate() {
        let seq = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(2);
        bytes.extend(m.finish(seq));
        pending.push(seq);
    }
    if batch {
        let mut end = Msg::bare(NFNL_MSG_BATCH_END, 0);
        end.raw(&nfgenmsg(AF_UNSPEC, NFNL_SUBSYS_NFTABLES));
        let last = u32::try_from(pending.len())
            .unwrap_or(u32::MAX)
            .saturating_add(2);
        bytes.extend(end.finish(last));
    }
    (&sock).write_all(&bytes)?;

    let mut replies = Vec::new();
    let mut first_err = None;
    let mut buf = vec![0u8; 65536];
    while !pending.is_empty() {
        let n = (&sock).read(&mut buf)?;
        let mut off = 0;
        while off + 16 <= n {
            let word = |at: usize| -> Result<[u8; 4], NetlinkError> {
                buf.get(at..at + 4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(NetlinkError::Malformed)
            };
            let len = usize::try_from(u32::from_ne_bytes(word(off)?))
                .map_err(|_| NetlinkError::Malformed)?;
            if len < 16 || off + len > n {
                return Err(NetlinkError::Malformed);
            }
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            let seq = u32::from_ne_bytes(word(off + 8)?);
            if kind == NLMSG_ERROR {
                let err = i32::from_ne_bytes(word(off + 16)?);
                let ours = pending.contains(&seq);
                pending.retain(|s| *s != seq);
                if err != 0 {
                    let e = NetlinkError::Kernel {
                        what: "nf_tables transaction",
                        errno: -err,
                    };
                    // An error about the batch itself acknowledges nothing else.
                    if !ours {
                        return Err(e);
                    }
                    first_err.get_or_insert(e);
                }
            } else if len >= 20 {
                replies.push(buf[off + 20..off + len].to_vec());
            }
            off += (len + 3) & !3;
        }
    }
    first_err.map_or(Ok(replies), Err)
}

/// The payload of the first attribute of type `kind` in `data`.
fn find_attr(data: &[u8], kind: u16) -> Option<&[u8]> {
    let mut off = 0;
    while off + 4 <= data.len() {
        let len = usize::from(u16::from_ne_bytes([data[off], data[off + 1]]));
        let k = u16::from_ne_bytes([data[off + 2], data[off + 3]]) & 0x3fff;
        if len < 4 || off + len > data.len() {
            return None;
        }
        if k == kind {
            return data.get(off + 4..off + len);
        }
        off += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_found_in_nested_replies_and_bad_lengths_refused() {
        let inner = attrs(&[
            (NFTA_COUNTER_BYTES, &9u64.to_be_bytes()),
            (NFTA_COUNTER_PACKETS, &3u64.to_be_bytes()),
        ]);
        let outer = attrs(&[
            (NFTA_OBJ_NAME, b"refused\0"),
            (NFTA_OBJ_DATA | NLA_F_NESTED, &inner),
        ]);
        let data = find_attr(&outer, NFTA_OBJ_DATA).unwrap();
        assert_eq!(
            find_attr(data, NFTA_COUNTER_PACKETS),
            Some(&3u64.to_be_bytes()[..])
        );
        assert_eq!(find_attr(&outer, 9), None);
        // A length running past the buffer, or shorter than a header.
        assert_eq!(find_attr(&[200, 0, 4, 0, 1, 2], 4), None);
        assert_eq!(find_attr(&[2, 0, 4, 0], 4), None);
        assert_eq!(TunnelGuard::table_for("nsw-gpe0"), "neptune_nsw_gpe0");
    }
}
