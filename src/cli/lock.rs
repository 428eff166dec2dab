//! `cairn lock` (as `consul lock`): runs a child program while holding a
//! lock, or a slot of a semaphore (`-n`), on a KV prefix; kills the child
//! when the lock is lost; gives the lock back and destroys its session
//! when the child ends or on SIGINT/SIGTERM.
//!
//! The lock itself is [`super::lock_kv`]. The child runs in a process
//! group of its own (unless it reads a terminal through `-pass-stdin`), so
//! killing it kills what it started too: a lost lock leaves nothing
//! running that believes it still holds it.

use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::http::{HttpArgs, ServerArgs};
use super::lock_kv::{self as proto, Agent, Cleanup, Options};
use crate::env::TokioEnv;
use crate::format::parse_duration;
use crate::http_client as client;

/// How long a child has between SIGTERM and SIGKILL (Consul's
/// `lockKillGracePeriod`).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// `cairn lock`.
#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Holders at once; above 1 the lock is a semaphore.
    #[arg(short = 'n', default_value_t = 1, allow_negative_numbers = true)]
    limit: i64,
    /// The session's name (default: from the child command and prefix).
    #[arg(long = "name", default_value = "")]
    name: String,
    /// Give the child this process's standard input.
    #[arg(long = "pass-stdin")]
    pass_stdin: bool,
    /// Run the child through $SHELL -c (default true; -shell=false runs it
    /// directly).
    #[arg(long = "shell", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    shell: bool,
    /// Give up if the lock is not held within this long, like "10s"
    /// (default: wait for ever).
    #[arg(long = "timeout")]
    timeout: Option<String>,
    /// The old name of -timeout.
    #[arg(long = "try")]
    try_for: Option<String>,
    /// Failed reads of the lock (agent unreachable, 5xx) to ride out, a
    /// second apart, before the lock counts as lost.
    #[arg(long = "monitor-retry", default_value_t = 3)]
    monitor_retry: u32,
    /// Exit 2 when the child fails (default: 0 whatever the child does, as
    /// Consul).
    #[arg(long = "child-exit-code")]
    child_exit_code: bool,
    /// Say each step.
    #[arg(long = "verbose")]
    verbose: bool,
    /// The session's TTL; it is renewed every half TTL ("0": none).
    #[arg(long = "session-ttl", default_value = "15s")]
    session_ttl: String,
    /// The session's lock-delay (default: the servers', 15s): how long the
    /// lock stays free of new holders after this session is lost.
    #[arg(long = "lock-delay")]
    lock_delay: Option<String>,
    /// The KV prefix, then the child command.
    #[arg(trailing_var_arg = true, value_name = "PREFIX CHILD")]
    args: Vec<String>,
}

/// The checked command line.
struct Plan {
    opts: Options,
    child: Vec<String>,
    name: String,
    ttl: Duration,
    /// The TTL as written, `""` for none.
    ttl_text: String,
    /// The lock-delay as written, `""` for the servers' default.
    lock_delay: String,
}

/// Checks the flags as Consul does, with its messages.
fn plan(a: &LockArgs) -> anyhow::Result<Plan> {
    let limit = u32::try_from(a.limit)
        .ok()
        .filter(|l| *l > 0)
        .ok_or_else(|| anyhow::anyhow!("Lock holder limit must be positive"))?;
    let [prefix, child @ ..] = a.args.as_slice() else {
        anyhow::bail!("Key prefix and child command must be specified");
    };
    if child.is_empty() {
        anyhow::bail!("Key prefix and child command must be specified");
    }
    let prefix = prefix.trim_start_matches('/').to_string();
    let duration =
        |flag: &str, v: &str| parse_duration(v).map_err(|e| anyhow::anyhow!("-{flag}: {e}"));
    let give_up_after = match (&a.timeout, &a.try_for) {
        (Some(t), _) => Some(duration("timeout", t)?),
        (None, Some(t)) => Some(duration("try", t)?),
        (None, None) => None,
    }
    .filter(|d| !d.is_zero());
    let ttl = duration("session-ttl", &a.session_ttl)?;
    let name = if a.name.is_empty() {
        format!("Consul lock for '{}' at '{prefix}'", child.join(" "))
    } else {
        a.name.clone()
    };
    Ok(Plan {
        opts: Options {
            prefix,
            limit,
            give_up_after,
            monitor_retries: a.monitor_retry,
        },
        child: child.to_vec(),
        name,
        ttl,
        ttl_text: if ttl.is_zero() {
            String::new()
        } else {
            a.session_ttl.trim().to_string()
        },
        lock_delay: match a.lock_delay.as_deref() {
            Some(d) => {
                duration("lock-delay", d)?;
                d.trim().to_string()
            }
            None => String::new(),
        },
    })
}

/// Runs `cairn lock`: the exit code is 0 (with -child-exit-code, 2 when
/// the child failed), 1 when the lock could not be had or given back.
pub async fn run(a: LockArgs) -> anyhow::Result<ExitCode> {
    let p = plan(&a)?;
    let say = |m: &str| {
        if a.verbose {
            println!("{m}");
        }
    };
    // From here on, SIGINT and SIGTERM are ours to handle.
    let mut shutdown = Shutdown::listen();
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &a.http.addr()).await?;
    let agent = Agent::new(env, addr, a.server.write_query());
    agent
        .node_name()
        .await
        .map_err(|e| anyhow::anyhow!("Error querying Consul agent: {e}"))?;
    if p.opts.limit == 1 {
        say(&format!("Setting up lock at path: {}", p.opts.lock_key()));
    } else {
        say(&format!(
            "Setting up semaphore (limit {}) at prefix: {}",
            p.opts.limit, p.opts.prefix
        ));
    }
    say("Attempting lock acquisition");
    let session = agent
        .create_session(&p.name, &p.ttl_text, p.opts.behavior(), &p.lock_delay)
        .await
        .map_err(|e| anyhow::anyhow!("Lock acquisition failed: failed to create session: {e}"))?;
    let renewal = proto::keep_alive(agent.clone(), session.clone(), p.ttl);
    let acquired = tokio::select! {
        r = proto::acquire(&agent, &p.opts, &session) => r,
        _ = shutdown.recv() => {
            // The acquisition may have been half done: give back whatever
            // it took, so no lock-delay follows.
            let _ = proto::release(&agent, &p.opts, &session).await;
            Ok(false)
        }
    };
    match acquired {
        Ok(true) => {}
        Ok(false) => {
            let why = anyhow::anyhow!("Shutdown triggered or timeout during lock acquisition");
            return end_session(&agent, &session, &renewal, why).await;
        }
        Err(e) => {
            let why = anyhow::anyhow!("Lock acquisition failed: {e}");
            return end_session(&agent, &session, &renewal, why).await;
        }
    }
    let (monitor, lost) = proto::monitor(agent.clone(), p.opts.clone(), session.clone());
    let code = if shutdown.triggered() {
        eprintln!("Shutdown triggered during lock acquisition");
        0
    } else {
        run_child(&a, &p, &mut shutdown, lost).await
    };
    monitor.abort();
    if let Err(e) = proto::release(&agent, &p.opts, &session).await {
        let why = anyhow::anyhow!("Lock release failed: {e}");
        return end_session(&agent, &session, &renewal, why).await;
    }
    renewal.abort();
    if let Err(e) = agent.destroy_session(&session).await {
        eprintln!("Session {session} not destroyed (it expires with its TTL): {e}");
    }
    match proto::cleanup(&agent, &p.opts).await {
        Ok(Cleanup::Removed) => say("Cleanup succeeded"),
        Ok(Cleanup::InUse) => say("Cleanup aborted, lock in use"),
        Err(e) => anyhow::bail!("Lock cleanup failed: {e}"),
    }
    Ok(ExitCode::from(if a.child_exit_code { code } else { 0 }))
}

/// Stops renewing the session and destroys it (releasing or deleting its
/// keys), then fails with `why`.
async fn end_session(
    agent: &Agent,
    session: &str,
    renewal: &tokio::task::JoinHandle<()>,
    why: anyhow::Error,
) -> anyhow::Result<ExitCode> {
    renewal.abort();
    let _ = agent.destroy_session(session).await;
    Err(why)
}

/// Runs the child while the lock holds: its exit code as the command
/// reports it (2 when it failed, else 0).
async fn run_child(
    a: &LockArgs,
    p: &Plan,
    shutdown: &mut Shutdown,
    mut lost: tokio::sync::oneshot::Receiver<()>,
) -> u8 {
    let say = |m: &str| {
        if a.verbose {
            println!("{m}");
        }
    };
    say("Starting handler");
    let mut child = match Child::start(&p.child, a.shell, a.pass_stdin) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error starting handler: {e}");
            return 2;
        }
    };
    tokio::select! {
        status = child.process.wait() => {
            say("Child terminated, releasing lock");
            return match status {
                Ok(s) if s.success() => 0,
                Ok(s) => {
                    eprintln!("Error running handler: {s}");
                    2
                }
                Err(e) => {
                    eprintln!("Error running handler: {e}");
                    2
                }
            };
        }
        sig = shutdown.recv() => {
            say("Shutdown triggered, killing child");
            // Passed on first, as Consul forwards signals to its child.
            if let Err(e) = child.signal(sig) {
                eprintln!("Warning, could not forward signal: {e}");
            }
        }
        _ = &mut lost => say("Lock lost, killing child"),
    }
    if let Err(e) = child.kill(a.verbose).await {
        eprintln!("{e}");
    }
    0
}

/// A signal this command handles.
#[derive(Debug, Clone, Copy)]
enum Sig {
    Interrupt,
    Terminate,
}

/// The first SIGINT or SIGTERM (Consul's shutdown channel).
struct Shutdown {
    rx: tokio::sync::mpsc::UnboundedReceiver<Sig>,
    seen: Option<Sig>,
}

impl Shutdown {
    fn listen() -> Shutdown {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let int = tx.clone();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if int.send(Sig::Interrupt).is_err() {
                    return;
                }
            }
        });
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(Sig::Terminate).is_err() {
                        return;
                    }
                }
            });
        }
        Shutdown { rx, seen: None }
    }

    /// Waits for the first signal (at once if it came already).
    async fn recv(&mut self) -> Sig {
        if let Some(s) = self.seen {
            return s;
        }
        match self.rx.recv().await {
            Some(s) => {
                self.seen = Some(s);
                s
            }
            None => std::future::pending().await,
        }
    }

    /// Whether a signal has come.
    fn triggered(&mut self) -> bool {
        if let Ok(s) = self.rx.try_recv() {
            self.seen = Some(s);
        }
        self.seen.is_some()
    }
}

/// The running child.
struct Child {
    process: tokio::process::Child,
    /// Signals go to its whole process group.
    group: bool,
}

impl Child {
    /// Starts `args` (through `$SHELL -c`, as Consul's `ExecScript`, when
    /// `shell`), with `CONSUL_LOCK_HELD=true` in its environment.
    fn start(args: &[String], shell: bool, pass_stdin: bool) -> std::io::Result<Child> {
        let mut cmd = if shell {
            let mut c = tokio::process::Command::new(shell_program());
            c.arg(if cfg!(windows) { "/C" } else { "-c" })
                .arg(args.join(" "));
            c
        } else {
            let (program, rest) = args.split_first().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no child command")
            })?;
            let mut c = tokio::process::Command::new(program);
            c.args(rest);
            c
        };
        cmd.env("CONSUL_LOCK_HELD", "true").stdin(if pass_stdin {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        });
        // A child reading a terminal must stay in the terminal's
        // foreground group, or reading would stop it (SIGTTIN).
        let group = !(pass_stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()));
        #[cfg(unix)]
        if group {
            cmd.process_group(0);
        }
        Ok(Child {
            process: cmd.spawn()?,
            group,
        })
    }

    /// Sends `sig` to the child (and its group).
    fn signal(&mut self, sig: Sig) -> std::io::Result<()> {
        self.send(match sig {
            Sig::Interrupt => Signal::Interrupt,
            Sig::Terminate => Signal::Terminate,
        })
    }

    #[cfg(unix)]
    fn send(&mut self, sig: Signal) -> std::io::Result<()> {
        use rustix::process::{kill_process, kill_process_group, Pid, Signal as S};
        let Some(pid) = self
            .process
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(Pid::from_raw)
        else {
            return Ok(()); // Reaped already: nothing left to signal.
        };
        let s = match sig {
            Signal::Interrupt => S::INT,
            Signal::Terminate => S::TERM,
            Signal::Kill => S::KILL,
        };
        let sent = if self.group {
            kill_process_group(pid, s)
        } else {
            kill_process(pid, s)
        };
        match sent {
            // Gone already: what the signal was for.
            Err(e) if e == rustix::io::Errno::SRCH => Ok(()),
            r => r.map_err(std::io::Error::from),
        }
    }

    #[cfg(not(unix))]
    fn send(&mut self, _sig: Signal) -> std::io::Result<()> {
        // No SIGTERM here: every signal is a hard kill, as in Consul.
        self.process.start_kill()
    }

    /// SIGTERM, then SIGKILL if the child is still there after the grace
    /// period (Consul's `killChild`).
    async fn kill(&mut self, verbose: bool) -> Result<(), String> {
        let pid = self.process.id().unwrap_or_default();
        if verbose {
            println!("Terminating child pid {pid}");
        }
        self.send(Signal::Terminate)
            .map_err(|e| format!("Failed to terminate {pid}: {e}"))?;
        if tokio::time::timeout(KILL_GRACE, self.process.wait())
            .await
            .is_ok()
        {
            if verbose {
                println!("Child terminated");
            }
            return Ok(());
        }
        if verbose {
            println!("Child did not exit after grace period of {KILL_GRACE:?}");
            println!("Killing child pid {pid}");
        }
        self.send(Signal::Kill)
            .map_err(|e| format!("Failed to kill {pid}: {e}"))?;
        let _ = self.process.wait().await;
        Ok(())
    }
}

/// The signals sent to a child.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Interrupt,
    Terminate,
    Kill,
}

/// `$SHELL`, else `/bin/sh` (`cmd` on Windows), as Consul picks it.
fn shell_program() -> String {
    std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            if cfg!(windows) {
                "cmd".into()
            } else {
                "/bin/sh".into()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: LockArgs,
    }

    fn args(v: &[&str]) -> LockArgs {
        T::try_parse_from(std::iter::once("lock").chain(v.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn flags_are_checked_as_consul_checks_them() {
        let e = |v: &[&str]| plan(&args(v)).err().unwrap().to_string();
        assert!(e(&["-n", "0", "p", "true"]).contains("must be positive"));
        assert!(e(&["p"]).contains("Key prefix and child command"));
        assert!(e(&["--timeout=soon", "p", "true"]).contains("-timeout"));
        let p = plan(&args(&["-n=2", "--try=2s", "/svc/", "echo", "-x", "--y"])).unwrap();
        assert_eq!(p.opts.prefix, "svc/");
        assert_eq!(p.opts.limit, 2);
        assert_eq!(p.opts.give_up_after, Some(Duration::from_secs(2)));
        assert_eq!(p.child, ["echo", "-x", "--y"]);
        assert_eq!(p.name, "Consul lock for 'echo -x --y' at 'svc/'");
        assert_eq!(p.ttl, Duration::from_secs(15));
        let a = args(&["--shell=false", "--name=n", "p", "c"]);
        assert!(!a.shell);
        assert_eq!(plan(&a).unwrap().name, "n");
        assert!(args(&["--shell", "p", "c"]).shell);
    }
}
