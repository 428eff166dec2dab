//! `cairn acl auth-method`, `cairn acl binding-rule`, `cairn login` and
//! `cairn logout`, with Consul's flags and output.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::acl_io::{call, s, show, show_list, Output};
use super::http::HttpArgs;

#[derive(Subcommand, Debug)]
pub(super) enum MethodCmd {
    /// Create an auth method.
    Create(MethodWrite),
    /// Change an auth method.
    Update(MethodWrite),
    /// List auth methods.
    List(Output),
    /// Show an auth method (`-name`).
    Read(NameArgs),
    /// Delete an auth method, its binding rules and its tokens.
    Delete(NameArgs),
}

#[derive(Args, Debug)]
pub(super) struct NameArgs {
    #[command(flatten)]
    out: Output,
    /// Its name.
    #[arg(long = "name")]
    name: String,
}

#[derive(Args, Debug)]
pub(super) struct MethodWrite {
    #[command(flatten)]
    out: Output,
    /// Its name.
    #[arg(long = "name")]
    name: String,
    /// Its type (`jwt`).
    #[arg(long = "type", default_value = "jwt")]
    method_type: String,
    /// Shown instead of the name.
    #[arg(long = "display-name")]
    display_name: Option<String>,
    /// What it is for.
    #[arg(long = "description")]
    description: Option<String>,
    /// Tokens it makes expire after this long (`1h`).
    #[arg(long = "max-token-ttl")]
    max_token_ttl: Option<String>,
    /// `local` or `global`.
    #[arg(long = "token-locality")]
    token_locality: Option<String>,
    /// The config as JSON: text, or `@file`.
    #[arg(long = "config")]
    config: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(super) enum RuleCmd {
    /// Create a binding rule.
    Create(RuleWrite),
    /// List binding rules (`-method` for one auth method's).
    List(RuleList),
    /// Show a binding rule (`-id`).
    Read(IdArgs),
    /// Delete a binding rule (`-id`).
    Delete(IdArgs),
}

#[derive(Args, Debug)]
pub(super) struct RuleWrite {
    #[command(flatten)]
    out: Output,
    /// The auth method it belongs to.
    #[arg(long = "method")]
    method: String,
    /// What it is for.
    #[arg(long = "description")]
    description: Option<String>,
    /// When it applies: a filter over `value.*` and `list.*`.
    #[arg(long = "selector")]
    selector: Option<String>,
    /// `service`, `node`, `role`, `policy` or `templated-policy`.
    #[arg(long = "bind-type")]
    bind_type: String,
    /// What it binds, with `${value.x}` from the claims.
    #[arg(long = "bind-name")]
    bind_name: String,
    /// For `templated-policy`: `name=<value>`.
    #[arg(long = "bind-vars")]
    bind_vars: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct RuleList {
    #[command(flatten)]
    out: Output,
    /// Only this auth method's.
    #[arg(long = "method")]
    method: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct IdArgs {
    #[command(flatten)]
    out: Output,
    /// Its ID.
    #[arg(long = "id")]
    id: String,
}

/// `cairn login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// The auth method.
    #[arg(long = "method")]
    method: String,
    /// The file holding the bearer token (a JWT).
    #[arg(long = "bearer-token-file")]
    bearer_token_file: std::path::PathBuf,
    /// Where to write the new token's secret (readable only by you).
    #[arg(long = "token-sink-file")]
    token_sink_file: std::path::PathBuf,
    /// `key=value` shown in the token's description (repeatable).
    #[arg(long = "meta")]
    meta: Vec<String>,
}

/// `cairn logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    #[command(flatten)]
    http: HttpArgs,
}

fn method_body(w: &MethodWrite) -> anyhow::Result<Value> {
    let mut body = json!({"Name": w.name, "Type": w.method_type});
    let mut set = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    };
    set("DisplayName", &w.display_name);
    set("Description", &w.description);
    set("MaxTokenTTL", &w.max_token_ttl);
    set("TokenLocality", &w.token_locality);
    if let Some(c) = &w.config {
        let text = match c.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the config file {path}: {e}"))?,
            None => c.clone(),
        };
        body["Config"] =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("-config is not JSON: {e}"))?;
    }
    Ok(body)
}

/// Runs `cairn acl auth-method`.
pub(super) async fn method(cmd: MethodCmd) -> anyhow::Result<()> {
    match cmd {
        MethodCmd::Create(w) => {
            let m = call(
                &w.out.http,
                "PUT",
                "/v1/acl/auth-method",
                Some(method_body(&w)?),
            )
            .await?;
            show(&w.out, &m, print_method)
        }
        MethodCmd::Update(w) => {
            let path = format!("/v1/acl/auth-method/{}", w.name);
            let m = call(&w.out.http, "PUT", &path, Some(method_body(&w)?)).await?;
            show(&w.out, &m, print_method)
        }
        MethodCmd::List(out) => {
            let v = call(&out.http, "GET", "/v1/acl/auth-methods", None).await?;
            show_list(&out, &v, print_method)
        }
        MethodCmd::Read(n) => {
            let path = format!("/v1/acl/auth-method/{}", n.name);
            let m = call(&n.out.http, "GET", &path, None).await?;
            show(&n.out, &m, print_method)
        }
        MethodCmd::Delete(n) => {
            let path = format!("/v1/acl/auth-method/{}", n.name);
            call(&n.out.http, "DELETE", &path, None).await?;
            println!("Auth-method {:?} deleted successfully", n.name);
            Ok(())
        }
    }
}

/// Runs `cairn acl binding-rule`.
pub(super) async fn rule(cmd: RuleCmd) -> anyhow::Result<()> {
    match cmd {
        RuleCmd::Create(w) => {
            let mut body = json!({
                "AuthMethod": w.method,
                "Description": w.description.clone().unwrap_or_default(),
                "Selector": w.selector.clone().unwrap_or_default(),
                "BindType": w.bind_type,
                "BindName": w.bind_name,
            });
            if let Some(vars) = &w.bind_vars {
                let name = vars
                    .strip_prefix("name=")
                    .ok_or_else(|| anyhow::anyhow!("-bind-vars {vars:?} must be name=<value>"))?;
                body["BindVars"] = json!({ "Name": name });
            }
            let r = call(&w.out.http, "PUT", "/v1/acl/binding-rule", Some(body)).await?;
            show(&w.out, &r, print_rule)
        }
        RuleCmd::List(l) => {
            let path = match &l.method {
                Some(m) => format!("/v1/acl/binding-rules?authmethod={m}"),
                None => "/v1/acl/binding-rules".into(),
            };
            let v = call(&l.out.http, "GET", &path, None).await?;
            show_list(&l.out, &v, print_rule)
        }
        RuleCmd::Read(i) => {
            let path = format!("/v1/acl/binding-rule/{}", i.id);
            let r = call(&i.out.http, "GET", &path, None).await?;
            show(&i.out, &r, print_rule)
        }
        RuleCmd::Delete(i) => {
            let path = format!("/v1/acl/binding-rule/{}", i.id);
            call(&i.out.http, "DELETE", &path, None).await?;
            println!("Binding rule {:?} deleted successfully", i.id);
            Ok(())
        }
    }
}

/// Runs `cairn login`: the new token's secret goes to the sink file,
/// readable only by its owner.
pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    let bearer = std::fs::read_to_string(&a.bearer_token_file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the bearer token file {}: {e}",
            a.bearer_token_file.display()
        )
    })?;
    let mut meta = serde_json::Map::new();
    for m in &a.meta {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("-meta {m:?} must be key=value"))?;
        meta.insert(k.to_string(), json!(v));
    }
    let body = json!({"AuthMethod": a.method, "BearerToken": bearer.trim(), "Meta": meta});
    let t = call(&a.http, "POST", "/v1/acl/login", Some(body)).await?;
    let secret = s(&t["SecretID"]).to_string();
    crate::agent::files::write_private(&a.token_sink_file, secret.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "logged in, but cannot write the token to {}: {e}",
            a.token_sink_file.display()
        )
    })?;
    Ok(())
}

/// Runs `cairn logout`: deletes the token in use, if a login made it.
pub async fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    call(&a.http, "POST", "/v1/acl/logout", None).await?;
    Ok(())
}

/// An auth method as `consul acl auth-method read` prints it.
fn print_method(m: &Value) {
    println!("Name:          {}", s(&m["Name"]));
    println!("Type:          {}", s(&m["Type"]));
    println!("DisplayName:   {}", s(&m["DisplayName"]));
    println!("Description:   {}", s(&m["Description"]));
    if let Some(ttl) = m["MaxTokenTTL"].as_str() {
        println!("MaxTokenTTL:   {ttl}");
    }
    if let Some(l) = m["TokenLocality"].as_str().filter(|l| !l.is_empty()) {
        println!("TokenLocality: {l}");
    }
    if !m["Config"].is_null() {
        println!("Config:");
        println!(
            "{}",
            serde_json::to_string_pretty(&m["Config"]).unwrap_or_default()
        );
    }
}

/// A binding rule as `consul acl binding-rule read` prints it.
fn print_rule(r: &Value) {
    println!("ID:           {}", s(&r["ID"]));
    println!("AuthMethod:   {}", s(&r["AuthMethod"]));
    println!("Description:  {}", s(&r["Description"]));
    println!("BindType:     {}", s(&r["BindType"]));
    println!("BindName:     {}", s(&r["BindName"]));
    if let Some(name) = r["BindVars"]["name"].as_str() {
        println!("BindVars:     name={name}");
    }
    println!("Selector:     {}", s(&r["Selector"]));
}
