//! Names, addresses and ports of the three-region network, in one place.
//!
//! ```text
//!  root namespace                                   namespace tg-rI (I = 1..3)
//!  tgbr0 10.77.0.1/24 ── veth tg-rI-h ─────────────── eth0 10.77.0.(10+I)/24
//!  link proxy on 10.77.0.1:                          tollgate serve: API :8080, admin :9090,
//!    TCP 17070+J → 10.77.0.(10+J):7070 (Raft)                        Raft :7070, gossip :7946/udp
//!    UDP 17946+J → 10.77.0.(10+J):7946 (gossip)
//! ```
//! Node J advertises the proxy's addresses as its own Raft and gossip addresses, so every inter-node
//! packet crosses the proxy, which tells the sending region by the source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub const REGIONS: u64 = 3;
pub const API_PORT: u16 = 8080;
pub const ADMIN_PORT: u16 = 9090;
pub const RAFT_PORT: u16 = 7070;
pub const GOSSIP_PORT: u16 = 7946;
pub const PROXY_RAFT_BASE: u16 = 17070;
pub const PROXY_GOSSIP_BASE: u16 = 17946;

/// Names and subnet, so tests can build a second, non-clashing network next to a running one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Namespaces are `{prefix}{i}`; host-side veths `{prefix}{i}-h`.
    pub prefix: String,
    pub bridge: String,
    /// The first three octets of the /24.
    pub subnet: [u8; 3],
}

impl Default for Layout {
    fn default() -> Self {
        Layout { prefix: "tg-r".into(), bridge: "tgbr0".into(), subnet: [10, 77, 0] }
    }
}

impl Layout {
    pub fn namespace(&self, node: u64) -> String {
        format!("{}{node}", self.prefix)
    }

    pub fn host_veth(&self, node: u64) -> String {
        format!("{}{node}-h", self.prefix)
    }

    /// The veth end moved into the namespace (renamed `eth0` there).
    pub fn peer_veth(&self, node: u64) -> String {
        format!("{}{node}-n", self.prefix)
    }

    fn ip(&self, last: u8) -> IpAddr {
        let [a, b, c] = self.subnet;
        IpAddr::V4(Ipv4Addr::new(a, b, c, last))
    }

    /// The bridge's address in the root namespace (where the proxy listens and clients come from).
    pub fn bridge_ip(&self) -> IpAddr {
        self.ip(1)
    }

    pub fn node_ip(&self, node: u64) -> IpAddr {
        self.ip(10 + node as u8)
    }

    pub fn proxy_raft(&self, node: u64) -> SocketAddr {
        SocketAddr::new(self.bridge_ip(), PROXY_RAFT_BASE + node as u16)
    }

    pub fn proxy_gossip(&self, node: u64) -> SocketAddr {
        SocketAddr::new(self.bridge_ip(), PROXY_GOSSIP_BASE + node as u16)
    }

    pub fn api_url(&self, node: u64) -> String {
        format!("http://{}:{API_PORT}", self.node_ip(node))
    }

    pub fn admin_url(&self, node: u64) -> String {
        format!("http://{}:{ADMIN_PORT}", self.node_ip(node))
    }

    pub fn nodes(&self) -> impl Iterator<Item = u64> {
        1..=REGIONS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_documented_plan() {
        let layout = Layout::default();
        assert_eq!(layout.node_ip(2).to_string(), "10.77.0.12");
        assert_eq!(layout.proxy_raft(3).to_string(), "10.77.0.1:17073");
        assert_eq!(layout.proxy_gossip(1).to_string(), "10.77.0.1:17947");
        assert_eq!(layout.api_url(1), "http://10.77.0.11:8080");
        assert_eq!(layout.namespace(3), "tg-r3");
    }
}
