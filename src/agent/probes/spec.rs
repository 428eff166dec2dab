//! What a probed check tries, as its definition gives it. Plain data, kept
//! apart from the code that runs the probes so that the local state (which
//! holds these) and the probes (which read them) each depend only on this.

use std::collections::BTreeMap;
use std::time::Duration;

/// What an HTTP, TCP, UDP, gRPC, H2PING or script check does, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What to try.
    pub target: Target,
    /// Pause between tries.
    pub interval: Duration,
    /// How long one try may take.
    pub timeout: Duration,
}

/// The thing a probe tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP request: 2xx passes, 429 warns, anything else is critical.
    Http(HttpTarget),
    /// Connect to this `host:port`.
    Tcp(String),
    /// Send a datagram to this `host:port`: a reply or silence passes, an
    /// ICMP error (nothing listens there) is critical.
    Udp(String),
    /// `grpc.health.v1.Health/Check` at `host:port` or `host:port/service`:
    /// SERVING passes, anything else is critical.
    Grpc {
        /// `host:port[/service]`, as the definition's `GRPC` gives it.
        target: String,
        /// Over TLS (`GRPCUseTLS`), and how; `None`: plain HTTP/2.
        tls: Option<TlsOptions>,
    },
    /// An HTTP/2 PING to this `host:port`: the PONG passes.
    H2Ping {
        /// `host:port`.
        addr: String,
        /// Over TLS (`H2PingUseTLS`, Consul's default), and how.
        tls: Option<TlsOptions>,
    },
    /// Run this program with these arguments: exit 0 passes, 1 warns,
    /// anything else (or no exit within the timeout) is critical.
    Script(Vec<String>),
}

impl Target {
    /// The check type Consul reports for it (`Type` in the check's JSON).
    pub fn check_type(&self) -> &'static str {
        match self {
            Target::Http(_) => "http",
            Target::Tcp(_) => "tcp",
            Target::Udp(_) => "udp",
            Target::Grpc { .. } => "grpc",
            Target::H2Ping { .. } => "h2ping",
            Target::Script(_) => "script",
        }
    }
}

/// An HTTP check's request (Consul's `HTTP`, `Method`, `Header`, `Body`,
/// `DisableRedirects`, `TLSServerName`, `TLSSkipVerify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpTarget {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Method (`GET` when empty).
    pub method: String,
    /// Request headers; a `Host` here is sent as the host.
    pub header: BTreeMap<String, Vec<String>>,
    /// Request body.
    pub body: String,
    /// Take a redirect as the answer instead of following it.
    pub disable_redirects: bool,
    /// For `https://`.
    pub tls: TlsOptions,
}

/// How a check's TLS connection checks the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// The name to expect (and send as SNI); empty: the host dialled.
    pub server_name: String,
    /// Accept any certificate (Consul's `TLSSkipVerify`).
    pub skip_verify: bool,
}

/// What an alias check mirrors (Consul's `AliasNode`, `AliasService`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AliasTarget {
    /// The node; empty: this agent's own services and checks.
    pub node: String,
    /// The service instance's ID; empty: the node's own checks only.
    pub service: String,
}
