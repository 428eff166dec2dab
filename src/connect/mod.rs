//! Connect, Consul's service segmentation: a built-in CA that gives every
//! service a certificate naming it by SPIFFE ID, intentions that say which
//! service may connect to which, and a sidecar proxy that carries a
//! service's traffic over mutual TLS and enforces the intentions.
//!
//! [`ca`] and [`intention`] are pure; the servers keep the roots and the
//! intentions in the replicated state, and the proxy ([`proxy`]) runs on
//! the [`Env`](crate::env::Env), so it works on real sockets and in the
//! simulator alike.

pub mod ca;
pub mod intention;
pub mod proxy;
pub mod suggest;
pub mod tls;
