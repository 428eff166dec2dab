//! `cairn acl`: bootstrap the ACL system, and manage tokens, policies and
//! roles, with Consul's subcommands, flags and output.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::acl_io::{call, s, show, show_list, Output};
use super::http::HttpArgs;

/// `cairn acl` and its subcommands.
#[derive(Args, Debug)]
pub struct AclArgs {
    #[command(subcommand)]
    cmd: AclCmd,
}

#[derive(Subcommand, Debug)]
enum AclCmd {
    /// Make the first management token (once per cluster).
    Bootstrap(Output),
    /// Create, list, read, update and delete tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Create, list, read, update and delete policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Create, list, read and delete roles.
    #[command(subcommand)]
    Role(RoleCmd),
    /// Create, list, read, update and delete auth methods.
    #[command(subcommand, name = "auth-method")]
    AuthMethod(super::acl_auth::MethodCmd),
    /// Create, list, read and delete binding rules.
    #[command(subcommand, name = "binding-rule")]
    BindingRule(super::acl_auth::RuleCmd),
    /// List, read and preview the built-in policy templates.
    #[command(subcommand, name = "templated-policy")]
    TemplatedPolicy(TemplateCmd),
    /// Replace one of the agent's tokens (default, agent, dns).
    SetAgentToken(SetAgentToken),
    /// One-time join tokens for a `cairn agent -secure` cluster.
    #[command(subcommand, name = "join-token")]
    JoinToken(JoinTokenCmd),
}

#[derive(Subcommand, Debug)]
enum JoinTokenCmd {
    /// Make a join token that admits one agent (`-server`: one server).
    Create(JoinTokenArgs),
}

#[derive(Args, Debug)]
struct JoinTokenArgs {
    #[command(flatten)]
    out: Output,
    /// How long it is good for (a Go duration; default 1h).
    #[arg(long = "ttl")]
    ttl: Option<String>,
    /// It admits a server (else a client agent).
    #[arg(long = "server")]
    server: bool,
}

#[derive(Subcommand, Debug)]
enum TemplateCmd {
    /// List the templates.
    List(Output),
    /// Show a template (`-name`).
    Read(TemplateArgs),
    /// Show the policy a template makes with `-var name:<value>`.
    Preview(TemplateArgs),
}

#[derive(Args, Debug)]
struct TemplateArgs {
    #[command(flatten)]
    out: Output,
    /// The template, e.g. `builtin/service`.
    #[arg(long = "name")]
    name: String,
    /// A variable, `name:<value>`.
    #[arg(long = "var")]
    vars: Vec<String>,
}

/// Identities and templated policies, for tokens and roles.
#[derive(Args, Debug)]
struct IdentityArgs {
    /// A service identity, `<service>[:<dc>,...]` (repeatable).
    #[arg(long = "service-identity")]
    service_identities: Vec<String>,
    /// A node identity, `<node>:<dc>` (repeatable).
    #[arg(long = "node-identity")]
    node_identities: Vec<String>,
    /// A templated policy by name (with `-var`).
    #[arg(long = "templated-policy")]
    templated_policy: Option<String>,
    /// The templated policy's variable, `name:<value>`.
    #[arg(long = "var")]
    vars: Vec<String>,
}

impl IdentityArgs {
    /// The identities as Consul's JSON fields, added to `body`.
    fn add_to(&self, body: &mut Value) -> anyhow::Result<()> {
        let mut services = Vec::new();
        for s in &self.service_identities {
            let (name, dcs) = s.split_once(':').unwrap_or((s, ""));
            let dcs: Vec<&str> = dcs.split(',').filter(|d| !d.is_empty()).collect();
            services.push(json!({"ServiceName": name, "Datacenters": dcs}));
        }
        let mut nodes = Vec::new();
        for n in &self.node_identities {
            let (name, dc) = n.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("-node-identity {n:?} must be <node>:<datacenter>")
            })?;
            nodes.push(json!({"NodeName": name, "Datacenter": dc}));
        }
        if !services.is_empty() {
            body["ServiceIdentities"] = json!(services);
        }
        if !nodes.is_empty() {
            body["NodeIdentities"] = json!(nodes);
        }
        if let Some(t) = &self.templated_policy {
            let mut tp = json!({"TemplateName": t});
            if let Some(name) = var_name(&self.vars)? {
                tp["TemplateVariables"] = json!({"Name": name});
            }
            body["TemplatedPolicies"] = json!([tp]);
        } else if !self.vars.is_empty() {
            anyhow::bail!("-var needs -templated-policy");
        }
        Ok(())
    }
}

/// The `name` of `-var name:<value>` (the only variable templates take).
fn var_name(vars: &[String]) -> anyhow::Result<Option<String>> {
    let mut name = None;
    for v in vars {
        match v.split_once(':') {
            Some(("name", value)) => name = Some(value.to_string()),
            _ => anyhow::bail!("-var {v:?} must be name:<value>"),
        }
    }
    Ok(name)
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create a token.
    Create(TokenWrite),
    /// Change a token's description, policies or roles.
    Update(TokenWrite),
    /// List tokens.
    List(Output),
    /// Show a token (`-id`, or `-self` for the one in use).
    Read(ReadArgs),
    /// Delete a token.
    Delete(ReadArgs),
}

#[derive(Args, Debug)]
struct TokenWrite {
    #[command(flatten)]
    out: Output,
    /// The token's accessor ID (update; create: chosen if not given).
    #[arg(long = "id", alias = "accessor")]
    id: Option<String>,
    /// The secret (create; chosen if not given).
    #[arg(long = "secret")]
    secret: Option<String>,
    /// What the token is for.
    #[arg(long = "description")]
    description: Option<String>,
    /// A policy by name (repeatable).
    #[arg(long = "policy-name")]
    policy_names: Vec<String>,
    /// A policy by ID (repeatable).
    #[arg(long = "policy-id")]
    policy_ids: Vec<String>,
    /// A role by name (repeatable).
    #[arg(long = "role-name")]
    role_names: Vec<String>,
    /// A role by ID (repeatable).
    #[arg(long = "role-id")]
    role_ids: Vec<String>,
    /// Valid in this datacenter only.
    #[arg(long = "local")]
    local: bool,
    /// Expire after this long (`1h`, `30m`).
    #[arg(long = "expires-ttl")]
    expires_ttl: Option<String>,
    #[command(flatten)]
    identities: IdentityArgs,
}

#[derive(Args, Debug)]
struct ReadArgs {
    #[command(flatten)]
    out: Output,
    /// The ID (for tokens, the accessor ID).
    #[arg(long = "id")]
    id: Option<String>,
    /// By name (policies and roles).
    #[arg(long = "name")]
    name: Option<String>,
    /// The token in use (tokens).
    #[arg(long = "self")]
    me: bool,
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Create a policy.
    Create(PolicyWrite),
    /// Replace a policy's rules or description.
    Update(PolicyWrite),
    /// List policies.
    List(Output),
    /// Show a policy (`-id` or `-name`).
    Read(ReadArgs),
    /// Delete a policy (`-id` or `-name`).
    Delete(ReadArgs),
}

#[derive(Args, Debug)]
struct PolicyWrite {
    #[command(flatten)]
    out: Output,
    /// The policy's ID (update).
    #[arg(long = "id")]
    id: Option<String>,
    /// Its name.
    #[arg(long = "name")]
    name: Option<String>,
    /// What it is for.
    #[arg(long = "description")]
    description: Option<String>,
    /// The rules: text, `@file`, or `-` for standard input.
    #[arg(long = "rules")]
    rules: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RoleCmd {
    /// Create a role.
    Create(RoleWrite),
    /// List roles.
    List(Output),
    /// Show a role (`-id` or `-name`).
    Read(ReadArgs),
    /// Delete a role (`-id` or `-name`).
    Delete(ReadArgs),
}

#[derive(Args, Debug)]
struct RoleWrite {
    #[command(flatten)]
    out: Output,
    /// Its name.
    #[arg(long = "name")]
    name: String,
    /// What it is for.
    #[arg(long = "description")]
    description: Option<String>,
    /// A policy by name (repeatable).
    #[arg(long = "policy-name")]
    policy_names: Vec<String>,
    /// A policy by ID (repeatable).
    #[arg(long = "policy-id")]
    policy_ids: Vec<String>,
    #[command(flatten)]
    identities: IdentityArgs,
}

#[derive(Args, Debug)]
struct SetAgentToken {
    #[command(flatten)]
    http: HttpArgs,
    /// Which token: default, agent or dns.
    kind: String,
    /// The secret.
    token: String,
}

fn links(names: &[String], ids: &[String]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({ "Name": n }))
            .chain(ids.iter().map(|i| json!({ "ID": i })))
            .collect(),
    )
}

/// A join token on stdout (to pipe or copy), and how to use it on
/// stderr.
fn print_join_token(v: &Value) {
    println!("{}", s(&v["JoinToken"]));
    let server = v["Server"].as_bool().unwrap_or(false);
    eprintln!(
        "(admits one {} until {}; start it with: cairn agent -secure -data-dir <dir>{} -join-token <token>)",
        if server { "server" } else { "client agent" },
        s(&v["ExpirationTime"]),
        if server { " -server" } else { "" },
    );
}

/// Runs `cairn acl`.
pub async fn run(a: AclArgs) -> anyhow::Result<()> {
    match a.cmd {
        AclCmd::Bootstrap(out) => {
            let t = call(&out.http, "PUT", "/v1/acl/bootstrap", None).await?;
            show(&out, &t, print_token)
        }
        AclCmd::Token(cmd) => token(cmd).await,
        AclCmd::Policy(cmd) => policy(cmd).await,
        AclCmd::Role(cmd) => role(cmd).await,
        AclCmd::TemplatedPolicy(cmd) => templated_policy(cmd).await,
        AclCmd::AuthMethod(cmd) => super::acl_auth::method(cmd).await,
        AclCmd::BindingRule(cmd) => super::acl_auth::rule(cmd).await,
        AclCmd::JoinToken(JoinTokenCmd::Create(j)) => {
            let body = json!({ "TTL": j.ttl.unwrap_or_default(), "Server": j.server });
            let v = call(&j.out.http, "PUT", "/v1/acl/join-token", Some(body)).await?;
            show(&j.out, &v, print_join_token)
        }
        AclCmd::SetAgentToken(s) => {
            let path = format!("/v1/agent/token/{}", s.kind);
            call(&s.http, "PUT", &path, Some(json!({ "Token": s.token }))).await?;
            println!("ACL token {:?} set successfully", s.kind);
            Ok(())
        }
    }
}

async fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create(w) => {
            let mut body = token_body(&w)?;
            if let Some(id) = &w.id {
                body["AccessorID"] = json!(id);
            }
            if let Some(s) = &w.secret {
                body["SecretID"] = json!(s);
            }
            let t = call(&w.out.http, "PUT", "/v1/acl/token", Some(body)).await?;
            show(&w.out, &t, print_token)
        }
        TokenCmd::Update(w) => {
            let id =
                w.id.clone()
                    .ok_or_else(|| anyhow::anyhow!("token update needs -id (the accessor ID)"))?;
            let body = token_body(&w)?;
            let t = call(
                &w.out.http,
                "PUT",
                &format!("/v1/acl/token/{id}"),
                Some(body),
            )
            .await?;
            show(&w.out, &t, print_token)
        }
        TokenCmd::List(out) => {
            let v = call(&out.http, "GET", "/v1/acl/tokens", None).await?;
            show_list(&out, &v, print_token)
        }
        TokenCmd::Read(r) => {
            let path = match (&r.id, r.me) {
                (_, true) => "/v1/acl/token/self".to_string(),
                (Some(id), false) => format!("/v1/acl/token/{id}"),
                (None, false) => anyhow::bail!("token read needs -id or -self"),
            };
            let t = call(&r.out.http, "GET", &path, None).await?;
            show(&r.out, &t, print_token)
        }
        TokenCmd::Delete(r) => {
            let id =
                r.id.ok_or_else(|| anyhow::anyhow!("token delete needs -id (the accessor ID)"))?;
            call(&r.out.http, "DELETE", &format!("/v1/acl/token/{id}"), None).await?;
            println!("Token {id:?} deleted successfully");
            Ok(())
        }
    }
}

fn token_body(w: &TokenWrite) -> anyhow::Result<Value> {
    let mut body = json!({
        "Description": w.description.clone().unwrap_or_default(),
        "Policies": links(&w.policy_names, &w.policy_ids),
        "Roles": links(&w.role_names, &w.role_ids),
        "Local": w.local,
    });
    if let Some(ttl) = &w.expires_ttl {
        body["ExpirationTTL"] = json!(ttl);
    }
    w.identities.add_to(&mut body)?;
    Ok(body)
}

async fn templated_policy(cmd: TemplateCmd) -> anyhow::Result<()> {
    match cmd {
        TemplateCmd::List(out) => {
            let v = call(&out.http, "GET", "/v1/acl/templated-policies", None).await?;
            if out.format == "json" {
                return show(&out, &v, print_template);
            }
            for name in v.as_object().into_iter().flat_map(|m| m.keys()) {
                println!("{name}");
            }
            Ok(())
        }
        TemplateCmd::Read(a) => {
            let path = format!("/v1/acl/templated-policy/name/{}", a.name);
            let v = call(&a.out.http, "GET", &path, None).await?;
            show(&a.out, &v, print_template)
        }
        TemplateCmd::Preview(a) => {
            let path = format!("/v1/acl/templated-policy/preview/{}", a.name);
            let body = var_name(&a.vars)?.map(|n| json!({ "Name": n }));
            let v = call(&a.out.http, "POST", &path, body).await?;
            show(&a.out, &v, print_policy)
        }
    }
}

/// The rules of `-rules`: the text, a file's (`@file`), or standard
/// input's (`-`).
fn rules_of(arg: &str) -> anyhow::Result<String> {
    if arg == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        return Ok(s);
    }
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the rules file {path}: {e}")),
        None => Ok(arg.to_string()),
    }
}

/// The ID of the policy or role named `name` (`kind`: `policy`, `role`).
async fn id_by_name(http: &HttpArgs, kind: &str, r: &ReadArgs) -> anyhow::Result<String> {
    if let Some(id) = &r.id {
        return Ok(id.clone());
    }
    let Some(name) = &r.name else {
        anyhow::bail!("{kind} needs -id or -name");
    };
    let v = call(http, "GET", &format!("/v1/acl/{kind}/name/{name}"), None).await?;
    Ok(v["ID"].as_str().unwrap_or_default().to_string())
}

/// Shows the policy or role (`kind`) that `-id` or `-name` names.
async fn read_named(kind: &str, r: &ReadArgs, pretty: fn(&Value)) -> anyhow::Result<()> {
    let id = id_by_name(&r.out.http, kind, r).await?;
    let v = call(&r.out.http, "GET", &format!("/v1/acl/{kind}/{id}"), None).await?;
    show(&r.out, &v, pretty)
}

/// Deletes the policy or role (`kind`, `title` in messages) that `-id`
/// or `-name` names.
async fn delete_named(kind: &str, title: &str, r: &ReadArgs) -> anyhow::Result<()> {
    let id = id_by_name(&r.out.http, kind, r).await?;
    call(&r.out.http, "DELETE", &format!("/v1/acl/{kind}/{id}"), None).await?;
    println!("{title} {id:?} deleted successfully");
    Ok(())
}

async fn policy(cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Create(w) => {
            let name = w
                .name
                .clone()
                .ok_or_else(|| anyhow::anyhow!("policy create needs -name"))?;
            let rules = rules_of(w.rules.as_deref().unwrap_or(""))?;
            let body = json!({
                "Name": name,
                "Description": w.description.clone().unwrap_or_default(),
                "Rules": rules,
            });
            let p = call(&w.out.http, "PUT", "/v1/acl/policy", Some(body)).await?;
            show(&w.out, &p, print_policy)
        }
        PolicyCmd::Update(w) => {
            let id =
                w.id.clone()
                    .ok_or_else(|| anyhow::anyhow!("policy update needs -id"))?;
            let old = call(&w.out.http, "GET", &format!("/v1/acl/policy/{id}"), None).await?;
            let rules = match &w.rules {
                Some(r) => rules_of(r)?,
                None => old["Rules"].as_str().unwrap_or_default().to_string(),
            };
            let body = json!({
                "Name": w.name.clone().unwrap_or_else(|| old["Name"].as_str().unwrap_or_default().to_string()),
                "Description": w.description.clone().unwrap_or_else(|| old["Description"].as_str().unwrap_or_default().to_string()),
                "Rules": rules,
            });
            let p = call(
                &w.out.http,
                "PUT",
                &format!("/v1/acl/policy/{id}"),
                Some(body),
            )
            .await?;
            show(&w.out, &p, print_policy)
        }
        PolicyCmd::List(out) => {
            let v = call(&out.http, "GET", "/v1/acl/policies", None).await?;
            show_list(&out, &v, print_policy)
        }
        PolicyCmd::Read(r) => read_named("policy", &r, print_policy).await,
        PolicyCmd::Delete(r) => delete_named("policy", "Policy", &r).await,
    }
}

async fn role(cmd: RoleCmd) -> anyhow::Result<()> {
    match cmd {
        RoleCmd::Create(w) => {
            let mut body = json!({
                "Name": w.name,
                "Description": w.description.clone().unwrap_or_default(),
                "Policies": links(&w.policy_names, &w.policy_ids),
            });
            w.identities.add_to(&mut body)?;
            let r = call(&w.out.http, "PUT", "/v1/acl/role", Some(body)).await?;
            show(&w.out, &r, print_role)
        }
        RoleCmd::List(out) => {
            let v = call(&out.http, "GET", "/v1/acl/roles", None).await?;
            show_list(&out, &v, print_role)
        }
        RoleCmd::Read(r) => read_named("role", &r, print_role).await,
        RoleCmd::Delete(r) => delete_named("role", "Role", &r).await,
    }
}

fn print_links(title: &str, v: &Value) {
    let items = v.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return;
    }
    println!("{title}:");
    for l in &items {
        println!("   {} - {}", s(&l["ID"]), s(&l["Name"]));
    }
}

/// A token as `consul acl token read` prints it.
fn print_token(t: &Value) {
    println!("AccessorID:       {}", s(&t["AccessorID"]));
    println!("SecretID:         {}", s(&t["SecretID"]));
    println!("Description:      {}", s(&t["Description"]));
    println!(
        "Local:            {}",
        t["Local"].as_bool().unwrap_or(false)
    );
    println!("Create Time:      {}", s(&t["CreateTime"]));
    if let Some(at) = t["ExpirationTime"].as_str() {
        println!("Expiration Time:  {at}");
    }
    print_links("Policies", &t["Policies"]);
    print_links("Roles", &t["Roles"]);
    print_identities(t);
}

fn dcs_of(v: &Value) -> String {
    let dcs: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if dcs.is_empty() {
        "all".into()
    } else {
        dcs.join(", ")
    }
}

/// Identities and templated policies, as Consul prints them.
fn print_identities(v: &Value) {
    if let Some(list) = v["ServiceIdentities"].as_array() {
        println!("Service Identities:");
        for i in list {
            let dcs = dcs_of(&i["Datacenters"]);
            println!("   {} (Datacenters: {dcs})", s(&i["ServiceName"]));
        }
    }
    if let Some(list) = v["NodeIdentities"].as_array() {
        println!("Node Identities:");
        for i in list {
            let (node, dc) = (s(&i["NodeName"]), s(&i["Datacenter"]));
            println!("   {node} (Datacenter: {dc})");
        }
    }
    if let Some(list) = v["TemplatedPolicies"].as_array() {
        println!("Templated Policies:");
        for t in list {
            println!("   {}", s(&t["TemplateName"]));
            if let Some(name) = t["TemplateVariables"]["name"].as_str() {
                println!("      Name: {name}");
            }
            println!("      Datacenters: {}", dcs_of(&t["Datacenters"]));
        }
    }
}

/// A template as `consul acl templated-policy read` prints it.
fn print_template(t: &Value) {
    println!("Name:            {}", s(&t["TemplateName"]));
    if !s(&t["Schema"]).is_empty() {
        println!("Input variables:");
        println!("   Name: String - Required - The name of the service or node.");
    }
    println!("Template:");
    println!("{}", s(&t["Template"]));
}

/// A policy as `consul acl policy read` prints it.
fn print_policy(p: &Value) {
    println!("ID:           {}", s(&p["ID"]));
    println!("Name:         {}", s(&p["Name"]));
    println!("Description:  {}", s(&p["Description"]));
    println!("Rules:");
    println!("{}", s(&p["Rules"]));
}

/// A role as `consul acl role read` prints it.
fn print_role(r: &Value) {
    println!("ID:           {}", s(&r["ID"]));
    println!("Name:         {}", s(&r["Name"]));
    println!("Description:  {}", s(&r["Description"]));
    print_links("Policies", &r["Policies"]);
    print_identities(r);
}
