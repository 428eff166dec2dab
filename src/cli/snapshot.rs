//! `cairn snapshot save|restore|inspect`, as Consul's commands: save the
//! servers' state to a file in Consul's archive format, restore it, and
//! describe an archive without a running agent.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};

use super::http::HttpArgs;
use crate::env::TokioEnv;
use crate::http_client as client;

/// `cairn snapshot`.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    cmd: SnapshotCmd,
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
    /// Save the servers' state to FILE.
    Save {
        #[command(flatten)]
        http: HttpArgs,
        /// Let any server answer, not only the leader.
        #[arg(long = "stale")]
        stale: bool,
        /// Where to write the archive.
        file: PathBuf,
    },
    /// Restore the servers' state from FILE (every server takes it).
    Restore {
        #[command(flatten)]
        http: HttpArgs,
        /// The archive.
        file: PathBuf,
    },
    /// Describe the archive in FILE.
    Inspect {
        /// The archive.
        file: PathBuf,
    },
}

/// Runs `cairn snapshot`.
pub async fn run(a: SnapshotArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    match a.cmd {
        SnapshotCmd::Save { http, stale, file } => {
            let addr = client::parse_addr(&env, &http.addr()).await?;
            let path = if stale {
                "/v1/snapshot?stale"
            } else {
                "/v1/snapshot"
            };
            let archive = client::request(&env, addr, "GET", path).await?;
            // Checked before it is kept: a file that says "saved" must
            // restore.
            let (meta, _) = crate::archive::read(&archive)
                .context("the agent sent a snapshot that does not verify")?;
            crate::agent::files::write_atomically(&file, &archive)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!("Saved and verified snapshot to index {}", meta.index);
        }
        SnapshotCmd::Restore { http, file } => {
            let archive = read_file(&file)?;
            // Refused here, naming the problem, before the servers see it.
            crate::archive::read(&archive).with_context(|| {
                format!("{} is not a snapshot that can be restored", file.display())
            })?;
            let addr = client::parse_addr(&env, &http.addr()).await?;
            client::request_with(&env, addr, "PUT", "/v1/snapshot", Bytes::from(archive)).await?;
            println!("Restored snapshot");
        }
        SnapshotCmd::Inspect { file } => {
            let archive = read_file(&file)?;
            let (meta, state) = crate::archive::read(&archive)
                .with_context(|| format!("cannot read {}", file.display()))?;
            print!("{}", describe(&meta, &state));
        }
    }
    Ok(())
}

fn read_file(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

/// What `inspect` prints: the metadata, then how many records of each
/// kind the state holds.
fn describe(meta: &crate::archive::SnapshotMeta, state: &[u8]) -> String {
    let mut out = format!(
        " ID           {}\n Size         {}\n Index        {}\n Term         {}\n Version      {}\n",
        meta.id, meta.size, meta.index, meta.term, meta.version
    );
    let Ok(serde_json::Value::Object(tables)) = serde_json::from_slice(state) else {
        out.push_str("\n (the state is not in a form this version reads)\n");
        return out;
    };
    let mut rows = vec![vec!["Type".to_string(), "Count".into()]];
    for (name, value) in &tables {
        let count = match value {
            serde_json::Value::Array(a) => a.len(),
            serde_json::Value::Object(o) => o.len(),
            _ => continue,
        };
        rows.push(vec![name.clone(), count.to_string()]);
    }
    out.push('\n');
    out.push_str(&super::catalog::table(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_counts_each_table() {
        let meta = crate::archive::SnapshotMeta {
            id: "2-9-1".into(),
            index: 9,
            term: 2,
            version: 1,
            size: 3,
            ..Default::default()
        };
        let text = describe(&meta, br#"{"format":1,"kv":[{},{}],"nodes":[{}]}"#);
        assert!(text.contains(" Index        9\n"), "{text}");
        assert!(text.contains("kv     2\n"), "{text}");
        assert!(text.contains("nodes  1\n"), "{text}");
    }
}
