//! A server as gossip describes it: the tags every server adds to its
//! agent's, and reading them back from any member.

use std::net::SocketAddr;

use crate::gossip::tags::Tags;
use crate::gossip::{Member, MemberStatus};

/// The role tag servers gossip (Consul's value, so Consul tools agree).
pub const SERVER_ROLE: &str = "consul";

/// A server, as gossip describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMember {
    /// Node name.
    pub name: String,
    /// Raft ID (from the node ID).
    pub raft_id: u64,
    /// RPC address.
    pub rpc: SocketAddr,
    /// Datacenter.
    pub dc: String,
    /// Its `bootstrap_expect` (0: none).
    pub expect: u32,
    /// Gossip status.
    pub status: MemberStatus,
}

/// The tags a server adds to an agent's: role, RPC port, and expect.
pub fn server_tags(tags: &mut Tags, rpc_port: u16, expect: u32) {
    tags.insert("role".into(), SERVER_ROLE.into());
    tags.insert("port".into(), rpc_port.to_string());
    tags.insert("raft_vsn".into(), "3".into());
    if expect > 0 {
        tags.insert("expect".into(), expect.to_string());
    }
}

/// The server a member is, if it is one and says enough to be reached.
pub fn server_of(m: &Member) -> Option<ServerMember> {
    let tags = m.tags();
    if tags.get("role").map(String::as_str) != Some(SERVER_ROLE) {
        return None;
    }
    let port: u16 = tags.get("port")?.parse().ok()?;
    Some(ServerMember {
        name: m.name.clone(),
        raft_id: raft_id(tags.get("id")?)?,
        rpc: SocketAddr::new(m.addr.ip(), port),
        dc: tags.get("dc").cloned().unwrap_or_default(),
        expect: tags.get("expect").and_then(|e| e.parse().ok()).unwrap_or(0),
        status: m.status,
    })
}

/// A server's Raft ID: the first 64 bits of its node ID (a UUID), so every
/// server derives every other's from gossip alone.
pub fn raft_id(node_id: &str) -> Option<u64> {
    let b = crate::format::parse_uuid(node_id)?;
    let mut head = [0u8; 8];
    head.copy_from_slice(&b[..8]);
    Some(u64::from_be_bytes(head))
}

/// A Raft ID as operators see it when no node ID is known for it: 16 hex
/// digits, the start of the node ID it came from.
pub fn format_raft_id(id: u64) -> String {
    format!("{id:016x}")
}

/// The servers of datacenter `dc` among `members`, each with the name the
/// WAN pool gives it (`<node>.<dc>`).
pub fn wan_servers<'a>(
    members: &'a [Member],
    dc: &'a str,
) -> impl Iterator<Item = (String, &'a Member)> + 'a {
    members
        .iter()
        .filter(move |m| server_of(m).is_some_and(|sm| sm.dc == dc))
        .map(move |m| (format!("{}.{dc}", m.name), m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::tags;
    use crate::time::Instant;

    fn member(name: &str, tags: &[(&str, &str)]) -> Member {
        let tags: Tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Member {
            name: name.into(),
            addr: "10.0.0.7:8301".parse().unwrap(),
            meta: tags::encode(&tags).unwrap(),
            status: MemberStatus::Alive,
            suspect: false,
            incarnation: 1,
            vsn: [1, 5, 2, 2, 5, 4],
            since: Instant::ZERO,
        }
    }

    #[test]
    fn servers_are_recognised_from_their_tags() {
        let id = "5f0cbb5c-2a43-4a5e-bd27-8f3d2b0e1a67";
        let m = member(
            "s1",
            &[
                ("role", "consul"),
                ("dc", "dc1"),
                ("port", "8300"),
                ("id", id),
                ("expect", "3"),
            ],
        );
        let s = server_of(&m).unwrap();
        assert_eq!(s.rpc, "10.0.0.7:8300".parse().unwrap());
        assert_eq!(s.expect, 3);
        assert_eq!(s.raft_id, 0x5f0c_bb5c_2a43_4a5e);
        assert_eq!(raft_id(id), Some(s.raft_id));
        // A client, a server without a port, and one with a bad ID.
        assert!(server_of(&member("c", &[("role", "node"), ("id", id)])).is_none());
        assert!(server_of(&member("s", &[("role", "consul"), ("id", id)])).is_none());
        assert!(server_of(&member(
            "s",
            &[("role", "consul"), ("port", "1"), ("id", "nope")]
        ))
        .is_none());
    }

    #[test]
    fn server_tags_say_role_port_and_expect() {
        let mut t = Tags::new();
        server_tags(&mut t, 8300, 3);
        assert_eq!(t["role"], "consul");
        assert_eq!(t["port"], "8300");
        assert_eq!(t["expect"], "3");
        let mut t = Tags::new();
        server_tags(&mut t, 9, 0);
        assert!(!t.contains_key("expect"));
    }
}
