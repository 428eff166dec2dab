//! cairn: a service mesh control plane whose networked parts run unchanged on
//! real sockets and inside a deterministic simulator.
//!
//! Everything that touches the network or a clock goes through [`env::Env`];
//! protocol logic lives in sans-IO cores ([`gossip::Swim`]) that are driven by
//! thin adapters.

#![warn(missing_docs)]

pub mod acl;
pub mod agent;
pub mod api;
pub mod archive;
pub mod buggify;
pub mod cli;
pub mod connect;
pub mod consensus;
pub mod coordinate;
pub mod dns;
pub mod env;
pub mod format;
pub mod gossip;
pub mod http_client;
pub mod msgpack;
pub mod pki;
pub mod rpc;
pub mod server;
pub mod sig;
pub mod splitmix;
pub mod state;
pub mod telemetry;
pub mod time;
