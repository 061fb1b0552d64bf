//! Typed model of what a Redis node says about the cluster, and the pure
//! parsers that build it from `CLUSTER NODES`, `CLUSTER INFO` and
//! `INFO replication` text.
//!
//! Parsing is kept apart from the network so that it can be unit-tested on
//! real server output, and so that the planner works on types, not strings.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// Flags of a `CLUSTER NODES` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub myself: bool,
    pub master: bool,
    pub replica: bool,
    /// `fail?`: this node suspects the node is down.
    pub pfail: bool,
    /// `fail`: a majority of primaries agreed the node is down.
    pub fail: bool,
    pub handshake: bool,
    pub noaddr: bool,
    pub nofailover: bool,
}

/// One line of `CLUSTER NODES`: how the answering node sees one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    /// `None` when the address is unknown (`noaddr`, `:0@0`, or the node's
    /// own line before it learnt its IP).
    pub addr: Option<SocketAddr>,
    pub flags: Flags,
    /// The primary's id, for a replica.
    pub master_id: Option<String>,
    pub config_epoch: u64,
    /// The cluster-bus link to that node is connected.
    pub link_connected: bool,
    /// Owned slots as inclusive ranges, ascending.
    pub slots: Vec<(u16, u16)>,
    /// `[slot->-id]`: this node migrates `slot` to `id` (only on the `myself` line).
    pub migrating: Vec<(u16, String)>,
    /// `[slot-<-id]`: this node imports `slot` from `id` (only on the `myself` line).
    pub importing: Vec<(u16, String)>,
}

impl NodeLine {
    pub fn slot_count(&self) -> u32 {
        self.slots
            .iter()
            .map(|&(a, b)| u32::from(b) - u32::from(a) + 1)
            .sum()
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    /// Every owned slot, ascending.
    pub fn slot_list(&self) -> Vec<u16> {
        self.slots.iter().flat_map(|&(a, b)| a..=b).collect()
    }
}

/// The useful fields of `CLUSTER INFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    pub state_ok: bool,
    pub slots_assigned: u32,
    pub known_nodes: u32,
    pub current_epoch: u64,
    pub my_epoch: u64,
}

/// The useful fields of `INFO replication`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplInfo {
    /// `role:master`.
    pub is_master: bool,
    /// A replica's link to its primary is up and the initial sync is done.
    pub link_up: bool,
    /// Replicas connected to this primary.
    pub connected_replicas: u32,
    /// Replication offset: `master_repl_offset` (how far its replication
    /// stream went; on a replica the primary's stream as applied, as
    /// `slave_repl_offset` also says: the larger is kept). Among replicas of
    /// a lost primary, the highest holds the most of its writes.
    pub offset: u64,
}

/// Parses the full `CLUSTER NODES` reply.
pub fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let node = parse_node_line(line).map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?;
        if !seen.insert(node.id.clone()) {
            return Err(format!("line {}: node id {} listed twice", n + 1, node.id));
        }
        out.push(node);
    }
    if out.is_empty() {
        return Err("empty reply".into());
    }
    Ok(out)
}

fn parse_node_line(line: &str) -> Result<NodeLine, String> {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    if f.len() < 8 {
        return Err(format!("expected at least 8 fields, got {}", f.len()));
    }
    let id = f[0];
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad node id {id:?}"));
    }
    let mut flags = Flags::default();
    for fl in f[2].split(',') {
        match fl {
            "myself" => flags.myself = true,
            "master" => flags.master = true,
            "slave" | "replica" => flags.replica = true,
            "fail?" => flags.pfail = true,
            "fail" => flags.fail = true,
            "handshake" => flags.handshake = true,
            "noaddr" => flags.noaddr = true,
            "nofailover" => flags.nofailover = true,
            _ => {} // noflags, and flags newer servers may add
        }
    }
    let master_id = match f[3] {
        "-" => None,
        m => Some(m.to_owned()),
    };
    let config_epoch = f[6]
        .parse::<u64>()
        .map_err(|_| format!("bad config epoch {:?}", f[6]))?;
    let mut node = NodeLine {
        id: id.to_owned(),
        addr: if flags.noaddr { None } else { parse_addr(f[1]) },
        flags,
        master_id,
        config_epoch,
        link_connected: f[7] == "connected",
        slots: Vec::new(),
        migrating: Vec::new(),
        importing: Vec::new(),
    };
    for tok in &f[8..] {
        if let Some(inner) = tok.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if let Some((slot, to)) = inner.split_once("->-") {
                node.migrating.push((parse_slot(slot)?, to.to_owned()));
            } else if let Some((slot, from)) = inner.split_once("-<-") {
                node.importing.push((parse_slot(slot)?, from.to_owned()));
            } else {
                return Err(format!("bad open-slot marker {tok:?}"));
            }
        } else if let Some((a, b)) = tok.split_once('-') {
            let (a, b) = (parse_slot(a)?, parse_slot(b)?);
            if a > b {
                return Err(format!("bad slot range {tok:?}"));
            }
            node.slots.push((a, b));
        } else {
            let s = parse_slot(tok)?;
            node.slots.push((s, s));
        }
    }
    node.slots.sort_unstable();
    Ok(node)
}

fn parse_slot(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(v) if v < SLOTS => Ok(v),
        _ => Err(format!("bad slot {s:?}")),
    }
}

/// `ip:port@cport[,hostname]`; IPv6 addresses come without brackets.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let s = s.split(',').next()?;
    let s = s.split('@').next()?;
    let (ip, port) = s.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = ip.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    if port == 0 {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

/// Parses `CLUSTER INFO`.
pub fn parse_cluster_info(text: &str) -> ClusterInfo {
    let mut ci = ClusterInfo::default();
    for (k, v) in kv_lines(text) {
        match k {
            "cluster_state" => ci.state_ok = v == "ok",
            "cluster_slots_assigned" => ci.slots_assigned = v.parse().unwrap_or(0),
            "cluster_known_nodes" => ci.known_nodes = v.parse().unwrap_or(0),
            "cluster_current_epoch" => ci.current_epoch = v.parse().unwrap_or(0),
            "cluster_my_epoch" => ci.my_epoch = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    ci
}

/// Parses `INFO replication`.
pub fn parse_replication(text: &str) -> ReplInfo {
    let mut r = ReplInfo::default();
    let mut sync_in_progress = false;
    let mut link_up = false;
    for (k, v) in kv_lines(text) {
        match k {
            "role" => r.is_master = v == "master",
            "master_link_status" => link_up = v == "up",
            "master_sync_in_progress" => sync_in_progress = v != "0",
            "connected_slaves" => r.connected_replicas = v.parse().unwrap_or(0),
            "master_repl_offset" | "slave_repl_offset" => {
                r.offset = r.offset.max(v.parse().unwrap_or(0))
            }
            _ => {}
        }
    }
    r.link_up = !r.is_master && link_up && !sync_in_progress;
    r
}

fn kv_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
}

/// Collapses ascending slots into inclusive ranges.
pub fn to_ranges(slots: &[u16]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &s in slots {
        match out.last_mut() {
            Some((_, end)) if s == *end + 1 => *end = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// `0-5,9,12-13`: compact text for logs.
pub fn fmt_ranges(ranges: &[(u16, u16)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from redis-server 7.0.15 (127.9.0.1's view) with two open
    // slots, plus a failed node line in the format the server prints.
    const NODES: &str = "\
6ee0662f346ae3664c1a5d6987a47fd19ae9e40e 127.9.0.3:6379@16379 master - 0 1795488274051 3 connected
830995fbd23ac0d95b29c5b5fbc00083fb1fc9aa 127.9.0.2:6379@16379 master - 0 1795488273548 1 connected 8001-16383
8edeb106dceb5ae7ee96afd228c90d9c6776fd4d 127.9.0.4:6379@16379 slave ab69dcacf45e411d3affb5748b0f05d08df96e4d 0 1795488273851 0 connected
ab69dcacf45e411d3affb5748b0f05d08df96e4d 127.9.0.1:6379@16379 myself,master - 0 1795488273000 0 connected 0-8000 [7->-830995fbd23ac0d95b29c5b5fbc00083fb1fc9aa] [100->-6ee0662f346ae3664c1a5d6987a47fd19ae9e40e]
d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607 :0@0 master,fail,noaddr - 1700000000000 1700000000000 4 disconnected
e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718 127.9.0.6:6379@16379,redis-6 handshake - 0 0 0 connected
";

    // 127.9.0.3's view of the same moment: the importing side.
    const IMPORTING: &str = "\
8edeb106dceb5ae7ee96afd228c90d9c6776fd4d 127.9.0.4:6379@16379 slave ab69dcacf45e411d3affb5748b0f05d08df96e4d 0 1795488273856 0 connected
6ee0662f346ae3664c1a5d6987a47fd19ae9e40e 127.9.0.3:6379@16379 myself,master - 0 1795488273000 3 connected [100-<-ab69dcacf45e411d3affb5748b0f05d08df96e4d]
830995fbd23ac0d95b29c5b5fbc00083fb1fc9aa 127.9.0.2:6379@16379 master - 0 1795488273857 1 connected 8001-16383
ab69dcacf45e411d3affb5748b0f05d08df96e4d 127.9.0.1:6379@16379 master - 0 1795488273856 0 connected 0-8000
";

    #[test]
    fn parses_real_cluster_nodes() {
        let v = parse_cluster_nodes(NODES).unwrap();
        assert_eq!(v.len(), 6);
        let me = &v[3];
        assert!(me.flags.myself && me.flags.master && !me.flags.replica);
        assert_eq!(me.id, "ab69dcacf45e411d3affb5748b0f05d08df96e4d");
        assert_eq!(me.addr, Some("127.9.0.1:6379".parse().unwrap()));
        assert_eq!(me.slots, vec![(0, 8000)]);
        assert_eq!(me.slot_count(), 8001);
        assert_eq!(
            me.migrating,
            vec![
                (7, "830995fbd23ac0d95b29c5b5fbc00083fb1fc9aa".into()),
                (100, "6ee0662f346ae3664c1a5d6987a47fd19ae9e40e".into())
            ]
        );
        assert!(me.importing.is_empty());
        assert_eq!(v[1].config_epoch, 1);
        assert_eq!(v[1].slots, vec![(8001, 16383)]);
        assert!(v[0].slots.is_empty() && v[0].flags.master);
        assert!(v[2].flags.replica);
        assert_eq!(v[2].master_id.as_deref(), Some(me.id.as_str()));
        assert!(v[4].flags.fail && v[4].flags.noaddr && v[4].addr.is_none());
        assert!(!v[4].link_connected);
        assert!(v[5].flags.handshake);
        assert_eq!(v[5].addr, Some("127.9.0.6:6379".parse().unwrap()));

        let v = parse_cluster_nodes(IMPORTING).unwrap();
        let me = v.iter().find(|l| l.flags.myself).unwrap();
        assert_eq!(
            me.importing,
            vec![(100, "ab69dcacf45e411d3affb5748b0f05d08df96e4d".into())]
        );
        assert!(me.slots.is_empty());
    }

    #[test]
    fn parses_single_slots_and_unknown_own_address() {
        let t = "6ec2ae1dbab4d0b3b4a1ea21b4e9a3b8df6a4a5c :6379@16379 myself,master - 0 0 0 connected 5 7-9 100\n";
        let v = parse_cluster_nodes(t).unwrap();
        assert_eq!(v[0].addr, None);
        assert_eq!(v[0].slots, vec![(5, 5), (7, 9), (100, 100)]);
        assert_eq!(v[0].slot_list(), vec![5, 7, 8, 9, 100]);
        assert!(v[0].owns(8) && !v[0].owns(6));
    }

    #[test]
    fn parses_ipv6_addresses() {
        let t = "6ec2ae1dbab4d0b3b4a1ea21b4e9a3b8df6a4a5c ::1:6379@16379 myself,master - 0 0 0 connected\n";
        let v = parse_cluster_nodes(t).unwrap();
        assert_eq!(v[0].addr, Some("[::1]:6379".parse().unwrap()));
    }

    #[test]
    fn rejects_garbage() {
        let err = |text: &str| parse_cluster_nodes(text).unwrap_err();
        assert_eq!(err(""), "empty reply");
        assert_eq!(
            err("hello world"),
            r#"line 1: expected at least 8 fields, got 2: "hello world""#
        );
        let bad_slot = "6ec2ae1dbab4d0b3b4a1ea21b4e9a3b8df6a4a5c 127.0.0.1:1@2 master - 0 0 0 connected 16384\n";
        assert_eq!(
            err(bad_slot),
            format!("line 1: bad slot \"16384\": {:?}", bad_slot.trim_end())
        );
        let reversed =
            "6ec2ae1dbab4d0b3b4a1ea21b4e9a3b8df6a4a5c 127.0.0.1:1@2 master - 0 0 0 connected 9-3\n";
        assert_eq!(
            err(reversed),
            format!("line 1: bad slot range \"9-3\": {:?}", reversed.trim_end())
        );
        let dup = "6ec2ae1dbab4d0b3b4a1ea21b4e9a3b8df6a4a5c 127.0.0.1:1@2 master - 0 0 0 connected\n\
                   6ec2ae1dbab4d0b3b4a1ea21b4e9a3b8df6a4a5c 127.0.0.1:1@2 master - 0 0 0 connected\n";
        assert_eq!(
            err(dup),
            "line 2: node id 6ec2ae1dbab4d0b3b4a1ea21b4e9a3b8df6a4a5c listed twice"
        );
    }

    #[test]
    fn parses_cluster_info() {
        let t = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n\
                 cluster_known_nodes:6\r\ncluster_size:3\r\ncluster_current_epoch:7\r\ncluster_my_epoch:2\r\n";
        let ci = parse_cluster_info(t);
        assert_eq!(
            ci,
            ClusterInfo {
                state_ok: true,
                slots_assigned: 16384,
                known_nodes: 6,
                current_epoch: 7,
                my_epoch: 2
            }
        );
        assert!(!parse_cluster_info("cluster_state:fail\r\n").state_ok);
    }

    #[test]
    fn parses_replication_info() {
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:127.1.0.1\r\nmaster_port:6379\r\n\
                       master_link_status:up\r\nmaster_sync_in_progress:0\r\n\
                       slave_repl_offset:4242\r\nmaster_repl_offset:4242\r\n";
        assert!(parse_replication(replica).link_up);
        let r = parse_replication(
            "role:slave\r\nmaster_link_status:down\r\nslave_repl_offset:1234\r\n",
        );
        assert_eq!(r.offset, 1234);
        assert_eq!(parse_replication(replica).offset, 4242);
        let syncing = "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:1\r\n";
        assert!(!parse_replication(syncing).link_up);
        let down = "role:slave\r\nmaster_link_status:down\r\n";
        assert!(!parse_replication(down).link_up);
        let master = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n";
        let m = parse_replication(master);
        assert!(m.is_master && !m.link_up);
        assert_eq!(m.connected_replicas, 2);
    }

    #[test]
    fn ranges_round_trip() {
        let r = to_ranges(&[0, 1, 2, 5, 7, 8]);
        assert_eq!(r, vec![(0, 2), (5, 5), (7, 8)]);
        assert_eq!(fmt_ranges(&r), "0-2,5,7-8");
        assert!(to_ranges(&[]).is_empty());
    }
}
