//! `cairn keygen` and `cairn keyring`: make a gossip encryption key, and
//! install, use, remove and list keys over a running cluster, as Consul's
//! commands of those names do.
//!
//! A rotation is three steps, each waited on until every member has it
//! (`-list` shows how many members hold each key):
//! `keyring -install NEW`, `keyring -use NEW`, `keyring -remove OLD`.

use bytes::Bytes;
use clap::Args;

use super::http::HttpArgs;
use crate::agent::keyring::KeyringStatus;
use crate::env::TokioEnv;
use crate::http_client as client;

/// `cairn keyring` flags (one operation).
#[derive(Args, Debug)]
pub struct KeyringArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// List each pool's keys and how many members hold each.
    #[arg(long = "list")]
    list: bool,
    /// Install a key on every member.
    #[arg(long = "install", value_name = "KEY")]
    install: Option<String>,
    /// Make an installed key the primary one on every member.
    #[arg(long = "use", value_name = "KEY")]
    use_key: Option<String>,
    /// Remove a key (not the primary) from every member.
    #[arg(long = "remove", value_name = "KEY")]
    remove: Option<String>,
}

/// Prints a new random 32-byte key, base64-encoded, for `encrypt`.
pub fn keygen() -> anyhow::Result<()> {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    println!("{}", crate::gossip::keyring::encode_key(&key));
    Ok(())
}

/// Runs `cairn keyring`.
pub async fn run(a: KeyringArgs) -> anyhow::Result<()> {
    let ops: Vec<(&str, &str, &String)> = [
        ("POST", "Installing", a.install.as_ref()),
        ("PUT", "Changing primary key to", a.use_key.as_ref()),
        ("DELETE", "Removing", a.remove.as_ref()),
    ]
    .into_iter()
    .filter_map(|(m, what, k)| Some((m, what, k?)))
    .collect();
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &a.http.addr()).await?;
    match (a.list, ops.as_slice()) {
        (true, []) => {
            let pools: Vec<KeyringStatus> =
                client::get_json(&env, addr, "/v1/operator/keyring").await?;
            for p in pools {
                let pool = if p.wan { "WAN" } else { "LAN" };
                println!("==> {pool} gossip pool ({}):", p.datacenter);
                for (key, n) in &p.keys {
                    let primary = p.primary_keys.get(key).copied().unwrap_or(0);
                    println!(
                        "  {key}  [{n}/{}]{}",
                        p.num_nodes,
                        if primary > 0 {
                            format!(" primary on {primary}")
                        } else {
                            String::new()
                        }
                    );
                }
            }
            Ok(())
        }
        (false, [(method, what, key)]) => {
            println!("==> {what} gossip encryption key {key}...");
            let body = serde_json::json!({ "Key": key }).to_string();
            client::request_with(
                &env,
                addr,
                method,
                "/v1/operator/keyring",
                Bytes::from(body),
            )
            .await?;
            println!("==> Done; it spreads to every member through gossip (see keyring -list)");
            Ok(())
        }
        _ => anyhow::bail!(
            "give exactly one of -list, -install KEY, -use KEY, -remove KEY (keys are base64; cairn keygen makes one)"
        ),
    }
}
