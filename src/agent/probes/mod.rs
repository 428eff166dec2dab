//! The checks the agent runs itself: one try of a probe ([`probe_once`])
//! for each kind Consul has (HTTP, TCP, UDP, gRPC, H2PING, script), and
//! alias checks ([`alias`]). The local state schedules them
//! ([`run_probes`](super::local::run_probes)) and keeps their results.
//!
//! Network probes connect through the [`Env`] seam; scripts are real
//! processes, which the simulator never enables.

pub mod alias;
mod grpc;
mod http;
pub mod spec;
mod tls;
mod udp;

use std::time::Duration;

pub use self::spec::{AliasTarget, HttpTarget, Probe, Target, TlsOptions};
use crate::env::Env;
use crate::state::Health;

/// Most of a script's output kept as the check's output (Consul's 4 KiB).
const MAX_OUTPUT: usize = 4096;

/// One try of `probe`: the check's new status and output. Each kind keeps
/// to the probe's timeout.
pub async fn probe_once<E: Env>(env: &E, probe: &Probe) -> (Health, String) {
    match &probe.target {
        Target::Http(t) => http::check(env, t, probe.timeout).await,
        Target::Tcp(target) => tcp(env, target, probe.timeout).await,
        Target::Udp(target) => udp::check(env, target, probe.timeout).await,
        Target::Grpc { target, tls } => grpc::check(env, target, tls.as_ref(), probe.timeout).await,
        Target::H2Ping { addr, tls } => grpc::ping(env, addr, tls.as_ref(), probe.timeout).await,
        Target::Script(args) => run_script(env, args, probe.timeout).await,
    }
}

async fn tcp<E: Env>(env: &E, target: &str, timeout: Duration) -> (Health, String) {
    let attempt = async {
        let (host, port) =
            crate::format::split_host_port(target, 0).map_err(std::io::Error::other)?;
        let addrs = env.resolve(&host, port).await?;
        let addr = addrs
            .into_iter()
            .next()
            .ok_or_else(|| std::io::Error::other("resolves to no address"))?;
        env.connect_tcp(addr).await.map(drop)
    };
    match crate::env::timeout(env, timeout, attempt).await {
        Ok(Ok(())) => (Health::Passing, format!("TCP connect {target}: Success")),
        Ok(Err(e)) => (Health::Critical, format!("dial tcp {target}: {e}")),
        Err(_) => (
            Health::Critical,
            format!("dial tcp {target}: timed out after {timeout:?}"),
        ),
    }
}

/// Runs a script check's program once. Scripts are real processes, outside
/// the [`Env`] seam: the simulator never enables them.
async fn run_script<E: Env>(env: &E, args: &[String], timeout: Duration) -> (Health, String) {
    let Some((program, rest)) = args.split_first() else {
        return (Health::Critical, "no program to run".into());
    };
    let child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // A timed-out script is killed when its future is dropped.
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return (Health::Critical, format!("cannot run {program:?}: {e}")),
    };
    match crate::env::timeout(env, timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let text: String = text.chars().take(MAX_OUTPUT).collect();
            let status = match out.status.code() {
                Some(0) => Health::Passing,
                Some(1) => Health::Warning,
                _ => Health::Critical,
            };
            (status, text)
        }
        Ok(Err(e)) => (Health::Critical, format!("running {program:?}: {e}")),
        Err(_) => (
            Health::Critical,
            format!("Timed out ({timeout:?}) running check"),
        ),
    }
}
