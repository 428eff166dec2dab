//! `cairn kv get|put|delete|export|import`, with Consul's flags, output,
//! export format and exit codes.

use std::io::Read;

use bytes::Bytes;
use clap::{Args, Subcommand};
use serde::Deserialize;

use super::http::{percent_encode, HttpArgs, ServerArgs};
use crate::env::TokioEnv;
use crate::http_client::{self as client, ClientError};

/// `cairn kv`.
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(subcommand)]
    cmd: KvCmd,
}

#[derive(Subcommand, Debug)]
enum KvCmd {
    /// Print a key's value (or, with -recurse or -keys, a prefix's).
    Get(GetArgs),
    /// Write a value: the argument, `-` for standard input, `@FILE` for a file.
    Put(PutArgs),
    /// Delete a key (or, with -recurse, a prefix).
    Delete(DeleteArgs),
    /// Print every key under a prefix as JSON, for `kv import`.
    Export(ExportArgs),
    /// Write the keys of a `kv export` (the argument, `-` for standard
    /// input, `@FILE` for a file); nothing is written unless all is valid.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
struct ExportArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// The prefix (default: everything).
    #[arg(default_value = "")]
    prefix: String,
}

#[derive(Args, Debug)]
struct ImportArgs {
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// Put every imported key under this prefix (joined with a `/`).
    #[arg(long = "prefix", default_value = "")]
    prefix: String,
    /// The export's JSON (`-`: standard input; `@FILE`: the file's contents).
    data: Option<String>,
}

/// One key of `kv export`'s output, Consul's format.
#[derive(Debug, serde::Serialize, Deserialize)]
struct Exported {
    key: String,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    value: String,
}

#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Every key under the prefix, as `key:value` lines.
    #[arg(long = "recurse")]
    recurse: bool,
    /// Only the keys under the prefix.
    #[arg(long = "keys")]
    keys: bool,
    /// With -keys: list keys only up to this separator.
    #[arg(long = "separator")]
    separator: Option<String>,
    /// The key or prefix.
    #[arg(default_value = "")]
    key: String,
}

#[derive(Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Write only if the key's ModifyIndex is -modify-index (0: only if absent).
    #[arg(long = "cas")]
    cas: bool,
    /// The ModifyIndex -cas expects.
    #[arg(long = "modify-index")]
    modify_index: Option<u64>,
    /// Opaque flags to store with the value.
    #[arg(long = "flags")]
    flags: Option<u64>,
    /// The key.
    key: String,
    /// The value (`-`: standard input; `@FILE`: the file's contents).
    value: Option<String>,
}

#[derive(Args, Debug)]
struct DeleteArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Delete every key under the prefix.
    #[arg(long = "recurse")]
    recurse: bool,
    /// The key or prefix.
    key: String,
}

fn path_of(key: &str) -> String {
    let key = key.trim_start_matches('/');
    let segments: Vec<String> = key.split('/').map(percent_encode).collect();
    format!("/v1/kv/{}", segments.join("/"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    key: String,
    #[serde(default)]
    flags: u64,
    value: Option<String>,
}

/// The argument, standard input (`-`) or a file (`@FILE`).
fn read_input(v: &str) -> anyhow::Result<Vec<u8>> {
    Ok(match v {
        "-" => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b)?;
            b
        }
        v if v.starts_with('@') => {
            std::fs::read(&v[1..]).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", &v[1..]))?
        }
        v => v.as_bytes().to_vec(),
    })
}

/// `prefix` and `key` joined by one `/`, as Consul's `kv import -prefix`
/// joins them; unlike Consul's `path.Join`, a folder key keeps its
/// trailing `/` (Consul's own bug, hashicorp/consul#10906).
fn join_prefix(prefix: &str, key: &str) -> String {
    let prefix = prefix.trim_start_matches('/');
    if prefix.is_empty() {
        return key.to_string();
    }
    format!(
        "{}/{}",
        prefix.trim_end_matches('/'),
        key.trim_start_matches('/')
    )
}

/// The keys of an export, checked: every key named, every value base64.
fn parse_import(data: &[u8], prefix: &str) -> anyhow::Result<Vec<(String, u64, Vec<u8>)>> {
    use base64::Engine;
    // `null` is an empty export, as Go reads it.
    let entries: Option<Vec<Exported>> = serde_json::from_slice(data).map_err(|e| {
        anyhow::anyhow!("Error! the import is not a kv export (a JSON list of {{\"key\", \"flags\", \"value\"}}): {e}")
    })?;
    entries
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            if e.key.is_empty() {
                anyhow::bail!("Error! entry {i} has no key");
            }
            let value = base64::engine::general_purpose::STANDARD
                .decode(&e.value)
                .map_err(|err| {
                    anyhow::anyhow!("Error! entry {i} ({}): value is not base64: {err}", e.key)
                })?;
            Ok((join_prefix(prefix, &e.key), e.flags, value))
        })
        .collect()
}

/// Runs `cairn kv ...`.
pub async fn run(args: KvArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    match args.cmd {
        KvCmd::Get(g) => {
            let addr = client::parse_addr(&env, &g.http.addr()).await?;
            let path = path_of(&g.key);
            let missing = |e: ClientError| match e {
                ClientError::Status { status: 404, .. } => {
                    anyhow::anyhow!("Error! No key exists at: {}", g.key)
                }
                other => other.into(),
            };
            if g.keys {
                let mut q = format!("{path}?keys");
                if let Some(sep) = &g.separator {
                    q += &format!("&separator={}", percent_encode(sep));
                }
                let keys: Vec<String> = match client::get_json(&env, addr, &q).await {
                    Err(ClientError::Status { status: 404, .. }) => Vec::new(),
                    r => r?,
                };
                for k in keys {
                    println!("{k}");
                }
            } else if g.recurse {
                let entries: Vec<Entry> =
                    match client::get_json(&env, addr, &format!("{path}?recurse")).await {
                        Err(ClientError::Status { status: 404, .. }) => Vec::new(),
                        r => r?,
                    };
                use base64::Engine;
                for e in entries {
                    let v = e
                        .value
                        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                        .unwrap_or_default();
                    println!("{}:{}", e.key, String::from_utf8_lossy(&v));
                }
            } else {
                if g.key.is_empty() {
                    anyhow::bail!("Missing KEY argument");
                }
                let raw = client::request(&env, addr, "GET", &format!("{path}?raw"))
                    .await
                    .map_err(missing)?;
                println!("{}", String::from_utf8_lossy(&raw));
            }
        }
        KvCmd::Put(p) => {
            let addr = client::parse_addr(&env, &p.http.addr()).await?;
            let value: Vec<u8> = match p.value.as_deref() {
                None => Vec::new(),
                Some(v) => read_input(v)?,
            };
            let mut params = Vec::new();
            if p.cas {
                let index = p
                    .modify_index
                    .ok_or_else(|| anyhow::anyhow!("Must specify -modify-index with -cas!"))?;
                params.push(format!("cas={index}"));
            }
            if let Some(f) = p.flags {
                params.push(format!("flags={f}"));
            }
            let mut path = path_of(&p.key);
            if !params.is_empty() {
                path = format!("{path}?{}", params.join("&"));
            }
            let body = client::request_with(&env, addr, "PUT", &path, Bytes::from(value)).await?;
            if body.as_ref() != b"true" && body.as_ref() != b"true\n" {
                anyhow::bail!("Error! Did not write to {}: CAS failed", p.key);
            }
            println!("Success! Data written to: {}", p.key);
        }
        KvCmd::Delete(d) => {
            let addr = client::parse_addr(&env, &d.http.addr()).await?;
            let mut path = path_of(&d.key);
            if d.recurse {
                path += "?recurse";
            }
            client::request(&env, addr, "DELETE", &path).await?;
            println!("Success! Deleted key: {}", d.key);
        }
        KvCmd::Export(x) => export(&env, x).await?,
        KvCmd::Import(m) => import(&env, m).await?,
    }
    Ok(())
}

/// `cairn kv export`: every key under the prefix as Consul's JSON list,
/// tab-indented as Consul prints it.
async fn export(env: &TokioEnv, x: ExportArgs) -> anyhow::Result<()> {
    let addr = client::parse_addr(env, &x.http.addr()).await?;
    let q = format!("{}?{}recurse", path_of(&x.prefix), x.server.read_query());
    let entries: Vec<Entry> = match client::get_json(env, addr, &q).await {
        Err(ClientError::Status { status: 404, .. }) => Vec::new(),
        r => r.map_err(|e| anyhow::anyhow!("Error querying Consul agent: {e}"))?,
    };
    // The API's values are already the export's base64.
    let out: Vec<Exported> = entries
        .into_iter()
        .map(|e| Exported {
            key: e.key,
            flags: e.flags,
            value: e.value.unwrap_or_default(),
        })
        .collect();
    let mut text = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut text,
        serde_json::ser::PrettyFormatter::with_indent(b"\t"),
    );
    serde::Serialize::serialize(&out, &mut ser)?;
    println!("{}", String::from_utf8_lossy(&text));
    Ok(())
}

/// `cairn kv import`: checks the whole export first, then PUTs its keys
/// one by one, naming each as it is written.
async fn import(env: &TokioEnv, m: ImportArgs) -> anyhow::Result<()> {
    let data = match m.data.as_deref() {
        None => anyhow::bail!("Error! Missing DATA argument"),
        Some("") => anyhow::bail!("Error! Empty DATA argument"),
        Some(d) => read_input(d)?,
    };
    let entries = parse_import(&data, &m.prefix)?;
    let addr = client::parse_addr(env, &m.http.addr()).await?;
    let dc = m.server.write_query();
    for (key, flags, value) in entries {
        let path = format!("{}?{dc}flags={flags}", path_of(&key));
        client::request_with(env, addr, "PUT", &path, Bytes::from(value))
            .await
            .map_err(|e| anyhow::anyhow!("Error! Failed writing data for key {key}: {e}"))?;
        println!("Imported: {key}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_prefix_joins_with_one_slash_and_keeps_folders() {
        assert_eq!(join_prefix("", "a/b"), "a/b");
        assert_eq!(join_prefix("copy", "a/b"), "copy/a/b");
        assert_eq!(join_prefix("copy/", "a/b"), "copy/a/b");
        assert_eq!(join_prefix("/copy/", "/dir/"), "copy/dir/");
        let got = parse_import(br#"[{"key": "k", "flags": 3, "value": "AP8="}]"#, "p").unwrap();
        assert_eq!(got, [("p/k".to_string(), 3, vec![0, 255])]);
        assert!(parse_import(b"null", "").unwrap().is_empty());
    }
}
