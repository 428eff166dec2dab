//! `cairn members`: the member table, as `consul members` prints it.

use std::collections::BTreeMap;

use clap::Args;
use serde::Deserialize;

use super::http::HttpArgs;
use crate::env::TokioEnv;
use crate::http_client as client;

/// `cairn members`.
#[derive(Args, Debug)]
pub(crate) struct MembersArgs {
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    /// Show every tag instead of the summary columns.
    #[arg(long = "detailed")]
    pub(crate) detailed: bool,
    /// Only members whose status matches this regular expression.
    #[arg(long = "status")]
    pub(crate) status: Option<String>,
    /// The WAN pool: every datacenter's servers.
    #[arg(long = "wan")]
    pub(crate) wan: bool,
}

/// The fields of `/v1/agent/members` the table shows.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MemberRow {
    pub name: String,
    pub addr: String,
    pub port: u16,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub status: u8,
}

fn status_word(code: u8) -> &'static str {
    match code {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    }
}

fn address(m: &MemberRow) -> String {
    if m.addr.contains(':') {
        format!("[{}]:{}", m.addr, m.port)
    } else {
        format!("{}:{}", m.addr, m.port)
    }
}

/// Formats the table: summary columns, or every tag with `detailed`.
pub(crate) fn table(mut rows: Vec<MemberRow>, detailed: bool) -> String {
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let mut lines: Vec<Vec<String>> = Vec::new();
    if detailed {
        lines.push(
            ["Node", "Address", "Status", "Tags"]
                .map(String::from)
                .to_vec(),
        );
        for m in &rows {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            lines.push(vec![
                m.name.clone(),
                address(m),
                status_word(m.status).into(),
                tags.join(","),
            ]);
        }
    } else {
        lines.push(
            [
                "Node",
                "Address",
                "Status",
                "Type",
                "Build",
                "Protocol",
                "DC",
                "Partition",
                "Segment",
            ]
            .map(String::from)
            .to_vec(),
        );
        for m in &rows {
            let tag = |k: &str| m.tags.get(k).cloned().unwrap_or_default();
            let (kind, segment) = match tag("role").as_str() {
                "consul" => ("server", "<all>"),
                "node" => ("client", "<default>"),
                _ => ("unknown", "<default>"),
            };
            let build = tag("build").split(':').next().unwrap_or("").to_string();
            lines.push(vec![
                m.name.clone(),
                address(m),
                status_word(m.status).into(),
                kind.into(),
                build,
                tag("vsn"),
                tag("dc"),
                "default".into(),
                segment.into(),
            ]);
        }
    }
    columnize(&lines)
}

fn columnize(lines: &[Vec<String>]) -> String {
    let cols = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            lines
                .iter()
                .filter_map(|l| l.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in lines {
        let mut line = String::new();
        for (c, cell) in l.iter().enumerate() {
            if c + 1 == l.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(super) async fn run(args: MembersArgs) -> anyhow::Result<()> {
    let filter = match &args.status {
        Some(re) => Some(regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
            anyhow::anyhow!("-status {re:?} is not a valid regular expression: {e}")
        })?),
        None => None,
    };
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &args.http.addr()).await?;
    let path = if args.wan {
        "/v1/agent/members?wan"
    } else {
        "/v1/agent/members"
    };
    let rows: Vec<MemberRow> = client::get_json(&env, addr, path).await?;
    let rows: Vec<MemberRow> = rows
        .into_iter()
        .filter(|m| {
            filter
                .as_ref()
                .is_none_or(|f| f.is_match(status_word(m.status)))
        })
        .collect();
    if rows.is_empty() && filter.is_some() {
        // Consul exits 2 when the filter leaves nothing.
        std::process::exit(2);
    }
    print!("{}", table(rows, args.detailed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, role: &str, status: u8) -> MemberRow {
        MemberRow {
            name: name.into(),
            addr: "127.0.0.1".into(),
            port: 8301,
            tags: [
                ("role", role),
                ("dc", "dc1"),
                ("vsn", "2"),
                ("build", "0.1.0:cairn"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            status,
        }
    }

    #[test]
    fn table_matches_consul_layout() {
        let t = table(vec![row("web-2", "node", 4), row("db", "consul", 1)], false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "Node   Address         Status  Type    Build  Protocol  DC   Partition  Segment"
        );
        assert_eq!(
            lines[1],
            "db     127.0.0.1:8301  alive   server  0.1.0  2         dc1  default    <all>"
        );
        assert!(lines[2].starts_with("web-2  127.0.0.1:8301  failed  client"));
        let d = table(vec![row("a", "node", 3)], true);
        assert!(d
            .lines()
            .nth(1)
            .unwrap()
            .contains("left    build=0.1.0:cairn,dc=dc1,role=node,vsn=2"));
    }
}
