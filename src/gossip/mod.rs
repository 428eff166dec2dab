//! Membership and failure detection: SWIM with the Lifeguard extensions,
//! speaking memberlist's wire protocol.
//!
//! - [`core::Swim`] is the protocol as a sans-IO state machine: `core/`
//!   holds the node's state and entry points (`mod.rs`), the probe cycle
//!   (`probe/`), the member table and alive/suspect/dead/refute
//!   (`members/`), push/pull (`push_pull.rs`) and what is sent (`send.rs`);
//!   [`lifeguard`] and [`broadcast`] are the Lifeguard timers and the
//!   piggyback queue it uses;
//! - [`node::Node`] adds what Serf keeps on top (roster, coordinates,
//!   reconnecting, reaping), still without I/O;
//! - [`driver`] connects a node to an [`Env`](crate::env::Env): sockets, timers, tasks;
//! - [`wire`] is memberlist's message format (its vocabulary in `wire/mod.rs`,
//!   writing it in `encode.rs`, reading it in `decode.rs`); [`config`] its
//!   tuning presets;
//! - [`roster`] keeps the Serf-style member list (alive, leaving, left,
//!   failed) that the agent shows, and [`tags`] encodes node metadata as Serf does.

pub mod broadcast;
pub mod config;
pub mod core;
pub mod driver;
pub mod event;
pub mod hash;
pub mod keyring;
pub mod lifeguard;
pub mod lzw;
pub mod memo;
pub mod node;
pub mod roster;
pub mod tags;
#[cfg(test)]
pub(crate) mod testkit;
pub mod wire;

pub use self::config::{Config, Coordinates, GossipOptions, SwimError};
pub use self::core::{LocalNode, Output, StreamId, StreamRequest, Swim};
pub use self::driver::{Gossip, GossipError, GossipStats};
pub use self::event::{EventKind, MemberEvent, NodeInfo, PingComplete};
pub use self::keyring::Encryption;
pub use self::node::{KnownMembers, Node};
pub use self::roster::{Member, MemberStatus, Roster};
