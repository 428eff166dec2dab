//! cairn's network model, one for both engines.
//!
//! [`Model`] decides, without I/O, what happens to every datagram and every
//! stream's bytes between two nodes: latency, jitter, loss, duplication,
//! reordering, bandwidth, partitions (one-way too), clogs and slowness. The
//! protocol engine asks it directly from its event queue; the full engine's
//! [`Network`] turns it into sockets for the real agents. So a latency or a
//! fault in a scenario means the same thing on either engine.
//!
//! [`topology`] is where the nodes are: datacenters on measured geography
//! or map coordinates, and the latency and loss that placement implies;
//! the model realizes it link by link.

pub mod fabric;
pub mod model;
pub mod topology;

use std::net::{IpAddr, Ipv4Addr};

pub use fabric::{Counters, Network, SimTcpListener, SimTcpStream, SimUdpSocket};
pub use model::{Arrivals, Bits, Link, Model, Override};

/// Makes this thread remember what its nodes encode while the value lives
/// (see `cairn::gossip::memo`): every node of a run is on one thread, so
/// what one compresses, another decompresses by lookup, and a state sent
/// by node after node is encoded once. The bytes are the same; a test
/// holds that every output is too.
pub struct CodecMemo(bool);

impl CodecMemo {
    /// Turns the memory on for this thread.
    pub fn on() -> CodecMemo {
        CodecMemo(cairn::gossip::memo::enable(true))
    }
}

impl Drop for CodecMemo {
    fn drop(&mut self) {
        cairn::gossip::memo::enable(self.0);
    }
}

/// The address of node `i` on either engine: 10.0.0.1 onwards.
pub fn ip_of(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0001u32 + i as u32))
}

/// The node at `ip`, of `n`.
pub fn index_of(ip: IpAddr, n: usize) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let i = u32::from(v4).checked_sub(0x0a00_0001)? as usize;
            (i < n).then_some(i)
        }
        IpAddr::V6(_) => None,
    }
}
