//! `cairn catalog datacenters|nodes|services`, printed as Consul prints them.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde::Deserialize;

use super::http::HttpArgs;
use crate::env::TokioEnv;
use crate::http_client as client;

/// `cairn catalog`.
#[derive(Args, Debug)]
pub struct CatalogArgs {
    #[command(subcommand)]
    cmd: CatalogCmd,
}

#[derive(Subcommand, Debug)]
enum CatalogCmd {
    /// List the known datacenters.
    Datacenters(HttpArgs),
    /// List the nodes in the catalog.
    Nodes(NodesArgs),
    /// List the services in the catalog.
    Services(ServicesArgs),
}

#[derive(Args, Debug)]
struct NodesArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Only the nodes that provide this service.
    #[arg(long = "service")]
    service: Option<String>,
}

#[derive(Args, Debug)]
struct ServicesArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Show each service's tags.
    #[arg(long = "tags")]
    tags: bool,
    /// Only the services of this node.
    #[arg(long = "node")]
    node: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeRow {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    datacenter: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServices {
    services: BTreeMap<String, ServiceRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceRow {
    service: String,
    tags: Vec<String>,
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
                .collect();
            line.join("  ").trim_end().to_owned() + "\n"
        })
        .collect()
}

/// Runs `cairn catalog ...`.
pub async fn run(args: CatalogArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    match args.cmd {
        CatalogCmd::Datacenters(h) => {
            let addr = client::parse_addr(&env, &h.addr()).await?;
            let dcs: Vec<String> = client::get_json(&env, addr, "/v1/catalog/datacenters").await?;
            for d in dcs {
                println!("{d}");
            }
        }
        CatalogCmd::Nodes(n) => {
            let addr = client::parse_addr(&env, &n.http.addr()).await?;
            let path = match &n.service {
                Some(s) => format!("/v1/catalog/service/{}", super::http::percent_encode(s)),
                None => "/v1/catalog/nodes".into(),
            };
            let nodes: Vec<NodeRow> = client::get_json(&env, addr, &path).await?;
            if nodes.is_empty() {
                anyhow::bail!("No nodes match the given query.");
            }
            let mut rows = vec![vec![
                "Node".into(),
                "ID".into(),
                "Address".into(),
                "DC".into(),
            ]];
            let mut seen = std::collections::BTreeSet::new();
            for n in nodes.into_iter().filter(|n| seen.insert(n.node.clone())) {
                let short = n.id.split('-').next().unwrap_or("").to_owned();
                rows.push(vec![n.node, short, n.address, n.datacenter]);
            }
            print!("{}", table(&rows));
        }
        CatalogCmd::Services(sv) => {
            let addr = client::parse_addr(&env, &sv.http.addr()).await?;
            let services: BTreeMap<String, Vec<String>> = match &sv.node {
                Some(node) => {
                    let path = format!("/v1/catalog/node/{}", super::http::percent_encode(node));
                    let n: Option<NodeServices> = client::get_json(&env, addr, &path).await?;
                    let n = n.ok_or_else(|| anyhow::anyhow!("No node found with name {node:?}"))?;
                    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for s in n.services.into_values() {
                        out.entry(s.service).or_default().extend(s.tags);
                    }
                    out
                }
                None => client::get_json(&env, addr, "/v1/catalog/services").await?,
            };
            if sv.tags {
                let rows: Vec<Vec<String>> = services
                    .into_iter()
                    .map(|(name, mut tags)| {
                        tags.sort();
                        tags.dedup();
                        vec![name, tags.join(",")]
                    })
                    .collect();
                print!("{}", table(&rows));
            } else {
                for name in services.keys() {
                    println!("{name}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["Node".to_string(), "ID".to_string()],
            vec!["a-long-name".to_string(), "1".to_string()],
        ];
        assert_eq!(super::table(&rows), "Node         ID\na-long-name  1\n");
    }
}
