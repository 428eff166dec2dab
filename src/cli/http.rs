//! What every command that talks to an agent's HTTP API shares: where the
//! agent is, the token, and how a path segment is written.

use std::path::PathBuf;

use clap::Args;

use crate::http_client as client;

/// The agent to talk to, and the ACL token to send.
#[derive(Args, Debug)]
pub(crate) struct HttpArgs {
    /// Agent HTTP address (default: $CAIRN_HTTP_ADDR, $CONSUL_HTTP_ADDR, or http://127.0.0.1:8500).
    #[arg(long = "http-addr")]
    http_addr: Option<String>,
    /// ACL token for the requests (default: $CAIRN_HTTP_TOKEN, $CONSUL_HTTP_TOKEN).
    #[arg(long = "token")]
    token: Option<String>,
    /// File holding the ACL token (default: $CONSUL_HTTP_TOKEN_FILE).
    #[arg(long = "token-file")]
    token_file: Option<PathBuf>,
}

impl HttpArgs {
    /// The agent's address. Every command asks for it before its first
    /// request, so this is also where the command's token is set for the
    /// requests to come.
    pub(crate) fn addr(&self) -> String {
        client::set_token(self.token());
        self.http_addr
            .clone()
            .or_else(|| std::env::var("CAIRN_HTTP_ADDR").ok())
            .or_else(|| std::env::var("CONSUL_HTTP_ADDR").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8500".into())
    }
}

impl HttpArgs {
    /// The ACL token: `-token`, `-token-file`, then the environment.
    pub(crate) fn token(&self) -> Option<String> {
        let from_file = |p: &std::path::Path| match std::fs::read_to_string(p) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                eprintln!("cannot read the token file {}: {e}", p.display());
                None
            }
        };
        self.token
            .clone()
            .or_else(|| self.token_file.as_deref().and_then(from_file))
            .or_else(|| std::env::var("CAIRN_HTTP_TOKEN").ok())
            .or_else(|| std::env::var("CONSUL_HTTP_TOKEN").ok())
            .or_else(|| {
                std::env::var_os("CONSUL_HTTP_TOKEN_FILE")
                    .and_then(|p| from_file(std::path::Path::new(&p)))
            })
            .filter(|t| !t.is_empty())
    }
}

/// `s` as one URL path segment.
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Consul's "server" flags: which datacenter's servers answer, and whether
/// any server may answer a read (`-stale`), for the commands that have them
/// in Consul (`kv export|import`, `lock`).
#[derive(Args, Debug, Default)]
pub(crate) struct ServerArgs {
    /// Datacenter to ask (default: the agent's own).
    #[arg(long = "datacenter")]
    datacenter: Option<String>,
    /// Let any server answer reads, not only the leader.
    #[arg(long = "stale")]
    stale: bool,
}

impl ServerArgs {
    /// The query parameters for a read (`dc`, `stale`), each followed by
    /// `&`, to put after a path's `?`.
    pub(crate) fn read_query(&self) -> String {
        let mut q = self.write_query();
        if self.stale {
            q.push_str("stale&");
        }
        q
    }

    /// The query parameter for a write (`dc`), followed by `&`, or nothing.
    pub(crate) fn write_query(&self) -> String {
        match self.datacenter.as_deref().filter(|d| !d.is_empty()) {
            Some(dc) => format!("dc={}&", percent_encode(dc)),
            None => String::new(),
        }
    }
}
