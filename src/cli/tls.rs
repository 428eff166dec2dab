//! `cairn tls ca create` and `cairn tls cert create -server|-client`: a CA
//! for the agents and certificates signed by it, written where Consul's
//! commands write them (`consul-agent-ca.pem`, `dc1-server-consul-0.pem`,
//! ...), into the current directory or `-dir`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Subcommand};

use crate::agent::tls::{create_ca, create_cert, CertSpec, Pair, Role};

/// `cairn tls` subcommands.
#[derive(Args, Debug)]
pub struct TlsArgs {
    #[command(subcommand)]
    cmd: TlsCmd,
}

#[derive(Subcommand, Debug)]
enum TlsCmd {
    /// The certificate authority.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// Agent certificates.
    Cert {
        #[command(subcommand)]
        cmd: CertCmd,
    },
}

#[derive(Subcommand, Debug)]
enum CaCmd {
    /// Make a CA: `<domain>-agent-ca.pem` and `<domain>-agent-ca-key.pem`.
    Create(CaCreate),
}

#[derive(Subcommand, Debug)]
enum CertCmd {
    /// Make a server or client certificate signed by the CA.
    Create(CertCreate),
}

#[derive(Args, Debug)]
struct CaCreate {
    /// The domain the agents answer for.
    #[arg(long = "domain", default_value = "consul")]
    domain: String,
    /// Days the CA is valid.
    #[arg(long = "days", default_value_t = 1825)]
    days: u32,
    /// Where to write the files.
    #[arg(long = "dir", default_value = ".")]
    dir: PathBuf,
}

#[derive(Args, Debug)]
struct CertCreate {
    /// A server certificate (`server.<dc>.<domain>`).
    #[arg(long = "server")]
    server: bool,
    /// A client certificate (`client.<dc>.<domain>`).
    #[arg(long = "client")]
    client: bool,
    /// The datacenter.
    #[arg(long = "dc", default_value = "dc1")]
    dc: String,
    /// The domain.
    #[arg(long = "domain", default_value = "consul")]
    domain: String,
    /// Days the certificate is valid.
    #[arg(long = "days", default_value_t = 365)]
    days: u32,
    /// The CA certificate (default: `<domain>-agent-ca.pem` in `-dir`).
    #[arg(long = "ca")]
    ca: Option<PathBuf>,
    /// The CA key (default: `<domain>-agent-ca-key.pem` in `-dir`).
    #[arg(long = "key")]
    key: Option<PathBuf>,
    /// Another DNS name for the certificate (repeatable).
    #[arg(long = "additional-dnsname")]
    additional_dnsname: Vec<String>,
    /// Another IP address for the certificate (repeatable).
    #[arg(long = "additional-ipaddress")]
    additional_ipaddress: Vec<std::net::IpAddr>,
    /// Where to write (and by default find the CA).
    #[arg(long = "dir", default_value = ".")]
    dir: PathBuf,
}

fn write_new(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let _ = private;
    let mut f = o
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    println!("==> Saved {}", path.display());
    Ok(())
}

/// Runs `cairn tls ...`.
pub fn run(a: TlsArgs) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match a.cmd {
        TlsCmd::Ca {
            cmd: CaCmd::Create(c),
        } => {
            let ca = create_ca(&c.domain, c.days, now)?;
            let stem = format!("{}-agent-ca", c.domain);
            write_new(&c.dir.join(format!("{stem}.pem")), &ca.cert_pem, false)?;
            write_new(&c.dir.join(format!("{stem}-key.pem")), &ca.key_pem, true)
        }
        TlsCmd::Cert {
            cmd: CertCmd::Create(c),
        } => {
            let role = match (c.server, c.client) {
                (true, false) => Role::Server,
                (false, true) => Role::Client,
                _ => anyhow::bail!("give one of -server or -client"),
            };
            let stem = format!("{}-agent-ca", c.domain);
            let ca_file = c.ca.unwrap_or_else(|| c.dir.join(format!("{stem}.pem")));
            let key_file = c
                .key
                .unwrap_or_else(|| c.dir.join(format!("{stem}-key.pem")));
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read {}: {e} (make a CA first: cairn tls ca create)",
                        p.display()
                    )
                })
            };
            let ca = Pair {
                cert_pem: read(&ca_file)?,
                key_pem: read(&key_file)?,
            };
            let spec = CertSpec {
                role,
                dc: c.dc.clone(),
                domain: c.domain.clone(),
                extra_dns: c.additional_dnsname,
                extra_ips: c.additional_ipaddress,
                days: c.days,
            };
            let cert = create_cert(&ca, &spec, now)?;
            let kind = if role == Role::Server {
                "server"
            } else {
                "client"
            };
            // The first free index, as Consul numbers them.
            let mut n = 0;
            let stem = loop {
                let stem = format!("{}-{kind}-{}-{n}", c.dc, c.domain);
                if !c.dir.join(format!("{stem}.pem")).exists() {
                    break stem;
                }
                n += 1;
            };
            write_new(&c.dir.join(format!("{stem}.pem")), &cert.cert_pem, false)?;
            write_new(&c.dir.join(format!("{stem}-key.pem")), &cert.key_pem, true)
        }
    }
}
