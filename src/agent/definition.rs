//! Service and check definitions, as the HTTP API's register endpoints,
//! config files (`service`, `services`, `check`, `checks`) and the CLI give
//! them. Consul decodes field names case-insensitively and takes snake_case
//! aliases (`service_id` for `ServiceID`), so `Name`, `name` and `NAME` are
//! one field; [`normalize_keys`] rewrites a document's keys to Consul's
//! canonical spelling before decoding. The keys of user-defined maps
//! (`Meta`, `NodeMeta`, `TaggedAddresses`) are data, not field names, and
//! are left as they are.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::local::{Kind, NewCheck};
use super::probes::{AliasTarget, HttpTarget, Probe, Target, TlsOptions};
use crate::format::parse_duration;
use crate::state::{Check, Health, Service, ServiceAddress, Weights};

/// Every field name cairn decodes from a request body or a definition, in
/// Consul's spelling. Only names whose spelling cannot be derived from
/// snake_case (`ID`, `HTTP`, ...) strictly need listing, but listing every
/// one keeps the rewrite a lookup.
const FIELDS: &[&str] = &[
    "Address",
    "AliasNode",
    "AliasService",
    "Body",
    "DisableRedirects",
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "H2PingUseTLS",
    "Header",
    "Method",
    "TLSServerName",
    "TLSSkipVerify",
    "UDP",
    "Args",
    "Behavior",
    "Check",
    "CheckID",
    "Checks",
    "Datacenter",
    "DeregisterCriticalServiceAfter",
    "EnableTagOverride",
    "HTTP",
    "ID",
    "Interval",
    "KV",
    "Key",
    "Kind",
    "LockDelay",
    "Meta",
    "Name",
    "Node",
    "NodeChecks",
    "NodeMeta",
    "Notes",
    "Output",
    "Passing",
    "Port",
    "Service",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "Session",
    "SkipNodeUpdate",
    "Status",
    "TCP",
    "TTL",
    "TaggedAddresses",
    "Tags",
    "Timeout",
    "Type",
    "Verb",
    "Value",
    "Warning",
    "Weights",
    "Flags",
    "Index",
    "Zone",
    "Region",
    "Locality",
    "Native",
    "SidecarService",
    "Connect",
    "Proxy",
    "DestinationServiceName",
    "DestinationServiceID",
    "LocalServiceAddress",
    "LocalServicePort",
    "Upstreams",
    "DestinationName",
    "LocalBindAddress",
    "LocalBindPort",
];

/// Fields whose value is a map of the user's own keys.
const USER_MAPS: &[&str] = &["Meta", "NodeMeta", "TaggedAddresses", "Header"];

/// `key` in Consul's spelling, if it names a known field.
fn canonical(key: &str) -> Option<&'static str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let k = squash(key);
    FIELDS.iter().copied().find(|f| squash(f) == k)
}

/// `v` with every known field name in Consul's spelling.
pub fn normalize_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let name = canonical(&k).map_or(k, str::to_owned);
                let v = match v {
                    // The user's keys stay as they are; the values may be
                    // objects of known fields (a service's tagged addresses).
                    Value::Object(m) if USER_MAPS.contains(&name.as_str()) => {
                        Value::Object(m.into_iter().map(|(k, v)| (k, normalize_keys(v))).collect())
                    }
                    v => normalize_keys(v),
                };
                out.insert(name, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_keys).collect()),
        other => other,
    }
}

/// Decodes `v`, whatever the spelling of its field names.
pub fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, serde_json::Error> {
    serde_json::from_value(normalize_keys(v))
}

/// Where a definition came from, which decides whether it may run scripts
/// (Consul's `enable_script_checks` covers both, `enable_local_script_checks`
/// only config files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptPolicy {
    /// Scripts allowed from the HTTP API.
    pub api: bool,
    /// Scripts allowed from the agent's config files.
    pub config: bool,
}

/// A check definition, as `/v1/agent/check/register`, a service's
/// `Check`/`Checks` and config files give it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CheckDef {
    /// Check ID (defaults to the name, or `service:<id>` in a service).
    #[serde(rename = "ID", alias = "CheckID")]
    pub id: String,
    /// Human name.
    pub name: String,
    /// Free text for people.
    pub notes: String,
    /// Initial status (critical unless given).
    pub status: Option<Health>,
    /// The local service the check belongs to.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// TTL check: how long an update holds.
    #[serde(rename = "TTL")]
    #[serde(deserialize_with = "go_duration")]
    pub ttl: Option<String>,
    /// HTTP check: the URL to GET.
    #[serde(rename = "HTTP")]
    pub http: Option<String>,
    /// HTTP check: the method (`GET` unless given).
    pub method: String,
    /// HTTP check: request headers, each with its values.
    pub header: BTreeMap<String, Vec<String>>,
    /// HTTP check: the request body.
    pub body: String,
    /// HTTP check: take a redirect as the answer instead of following it.
    pub disable_redirects: bool,
    /// TCP check: the `host:port` to connect to.
    #[serde(rename = "TCP")]
    pub tcp: Option<String>,
    /// UDP check: the `host:port` to send a datagram to.
    #[serde(rename = "UDP")]
    pub udp: Option<String>,
    /// gRPC check: `host:port` or `host:port/service`.
    #[serde(rename = "GRPC")]
    pub grpc: Option<String>,
    /// gRPC check over TLS.
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    /// H2PING check: the `host:port` to send an HTTP/2 PING to.
    #[serde(rename = "H2PING")]
    pub h2ping: Option<String>,
    /// H2PING check over TLS (Consul's default when `H2PING` is given).
    #[serde(rename = "H2PingUseTLS")]
    pub h2ping_use_tls: Option<bool>,
    /// Alias check: the node whose checks it mirrors (none: this agent).
    pub alias_node: String,
    /// Alias check: the service instance (ID) whose checks it mirrors.
    pub alias_service: String,
    /// TLS checks: the server name to expect (none: the host dialled).
    #[serde(rename = "TLSServerName")]
    pub tls_server_name: String,
    /// TLS checks: accept any certificate.
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: bool,
    /// Script check: the program and its arguments.
    pub args: Option<Vec<String>>,
    /// Pause between probes.
    #[serde(deserialize_with = "go_duration")]
    pub interval: Option<String>,
    /// How long one probe may take.
    #[serde(deserialize_with = "go_duration")]
    pub timeout: Option<String>,
    /// Deregister the service after being critical this long.
    #[serde(deserialize_with = "go_duration")]
    pub deregister_critical_service_after: Option<String>,
}

/// A duration field as Consul's JSON decoder takes it: a Go duration string
/// (`"10s"`), or a number of nanoseconds (as Go's `time.Duration` encodes).
fn go_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Nanos(f64),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => None,
        Some(Raw::Text(s)) => Some(s),
        Some(Raw::Nanos(n)) if n.is_finite() && n >= 0.0 => Some(format!("{}ns", n as u64)),
        Some(Raw::Nanos(n)) => {
            return Err(serde::de::Error::custom(format!(
                "a duration cannot be {n} nanoseconds"
            )))
        }
    })
}

/// The shortest interval between probes; shorter ones are raised to it,
/// as Consul does (its `MinInterval`).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Consul's message when a script check is not allowed.
pub const SCRIPTS_DISABLED: &str = "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true";

/// Consul's message for a probed check without an interval.
fn no_interval() -> String {
    "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks".into()
}

impl CheckDef {
    /// What the check probes (`Ok`) or mirrors (`Err`), if either: at most
    /// one of `HTTP`, `TCP`, `UDP`, `GRPC`, `H2PING`, `Args` and the alias
    /// fields (an empty string counts as left out, as in Consul).
    fn target(&self, scripts: bool) -> Result<Option<Result<Target, AliasTarget>>, String> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let tls = TlsOptions {
            server_name: self.tls_server_name.clone(),
            skip_verify: self.tls_skip_verify,
        };
        let mut found = Vec::new();
        if let Some(url) = given(&self.http) {
            found.push(Ok(Target::Http(HttpTarget {
                url,
                method: self.method.clone(),
                header: self.header.clone(),
                body: self.body.clone(),
                disable_redirects: self.disable_redirects,
                tls: tls.clone(),
            })));
        }
        if let Some(addr) = given(&self.tcp) {
            found.push(Ok(Target::Tcp(addr)));
        }
        if let Some(addr) = given(&self.udp) {
            found.push(Ok(Target::Udp(addr)));
        }
        if let Some(target) = given(&self.grpc) {
            let tls = self.grpc_use_tls.then(|| tls.clone());
            found.push(Ok(Target::Grpc { target, tls }));
        }
        if let Some(addr) = given(&self.h2ping) {
            let tls = self.h2ping_use_tls.unwrap_or(true).then(|| tls.clone());
            found.push(Ok(Target::H2Ping { addr, tls }));
        }
        if let Some(args) = &self.args {
            if !scripts {
                return Err(SCRIPTS_DISABLED.into());
            }
            if args.first().is_none_or(|a| a.is_empty()) {
                return Err("Args must name the program to run".into());
            }
            found.push(Ok(Target::Script(args.clone())));
        }
        if !self.alias_node.is_empty() || !self.alias_service.is_empty() {
            found.push(Err(AliasTarget {
                node: self.alias_node.clone(),
                service: self.alias_service.clone(),
            }));
        }
        if found.len() > 1 {
            return Err(
                "a check has one of HTTP, TCP, UDP, GRPC, H2PING, Args, an alias or TTL, not several"
                    .into(),
            );
        }
        Ok(found.pop())
    }

    /// The check and how it is kept up to date; `scripts` says whether
    /// script checks are allowed from where this definition came.
    pub fn to_check(&self, scripts: bool) -> Result<NewCheck, String> {
        let dur =
            |what: &str, v: &str| parse_duration(v).map_err(|e| format!("Invalid {what}: {e}"));
        let kind = match (self.target(scripts)?, &self.ttl) {
            (None, Some(t)) => Kind::Ttl(dur("TTL", t)?),
            (Some(Err(_)), Some(_)) => {
                return Err("TTL must be not be set for Alias checks".into())
            }
            (Some(Err(alias)), None) => Kind::Alias(alias),
            (Some(Ok(target)), None) => {
                let interval = dur(
                    "Interval",
                    self.interval.as_deref().ok_or_else(no_interval)?,
                )?;
                if interval.is_zero() {
                    return Err(no_interval());
                }
                let interval = interval.max(MIN_INTERVAL);
                // Consul's defaults: 30 s for scripts, 10 s for the rest.
                let default_timeout = match target {
                    Target::Script(_) => Duration::from_secs(30),
                    _ => Duration::from_secs(10),
                };
                let timeout = match &self.timeout {
                    Some(t) => dur("Timeout", t)?,
                    None => default_timeout,
                };
                Kind::Probe(Probe {
                    target,
                    interval,
                    timeout,
                })
            }
            (None, None) => return Err(
                "a check needs a TTL, or an HTTP, TCP or Args target (or UDP, GRPC, H2PING) with an Interval, or an AliasService or AliasNode"
                    .into(),
            ),
            (Some(Ok(_)), Some(_)) if self.interval.is_some() => {
                return Err("Interval and TTL cannot both be specified".into())
            }
            (Some(Ok(_)), Some(_)) => return Err(no_interval()),
        };
        let deregister_after = self
            .deregister_critical_service_after
            .as_deref()
            .map(|d| dur("DeregisterCriticalServiceAfter", d))
            .transpose()?
            // Consul's floor: the reaper looks no more often than this.
            .map(|d| d.max(Duration::from_secs(60)));
        Ok(NewCheck {
            check: Check {
                check_id: self.id.clone(),
                name: self.name.clone(),
                notes: self.notes.clone(),
                status: self.status.unwrap_or(Health::Critical),
                service_id: self.service_id.clone(),
                ..Check::default()
            },
            kind: Some(kind),
            deregister_after,
        })
    }
}

/// A service definition, as `/v1/agent/service/register` and config files
/// give it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceDef {
    /// Service ID (defaults to the name).
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address, if not the node's.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Other addresses by purpose (`lan`, `wan`, ...).
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// DNS SRV weights (1 and 1 unless given).
    pub weights: Option<Weights>,
    /// Let the catalog's tags win over the agent's.
    pub enable_tag_override: bool,
    /// `""` for a typical service, or `connect-proxy`, ...
    pub kind: String,
    /// A proxy's settings.
    pub proxy: Option<Box<crate::state::ServiceProxy>>,
    /// Connect settings: a sidecar proxy to register with it.
    pub connect: Option<ConnectDef>,
    /// Where the instance runs.
    pub locality: Option<crate::state::Locality>,
    /// One check.
    pub check: Option<CheckDef>,
    /// More checks.
    pub checks: Vec<CheckDef>,
}

/// A service's `Connect` block.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConnectDef {
    /// The service speaks Connect itself (no sidecar).
    pub native: bool,
    /// A sidecar proxy to register along with the service; every field may
    /// be left out (Consul's `sidecar_service {}`).
    pub sidecar_service: Option<Box<ServiceDef>>,
}

/// The ports sidecars get when their definition gives none (Consul's
/// `sidecar_min_port` and `sidecar_max_port`).
pub const SIDECAR_PORTS: std::ops::RangeInclusive<u16> = 21000..=21255;

impl ServiceDef {
    /// This service's ID.
    pub fn id(&self) -> &str {
        if self.id.is_empty() {
            &self.name
        } else {
            &self.id
        }
    }

    /// The sidecar its `Connect.SidecarService` asks for, filled in as
    /// Consul does: `<id>-sidecar-proxy`, kind `connect-proxy`, the first
    /// port of [`SIDECAR_PORTS`] not in `taken`, the parent's tags and
    /// address, and a check that its public listener is up.
    pub fn sidecar(&self, taken: &[u16]) -> Result<Option<ServiceDef>, String> {
        let Some(sc) = self
            .connect
            .as_ref()
            .and_then(|c| c.sidecar_service.as_deref())
        else {
            return Ok(None);
        };
        let parent = self.id().to_string();
        let mut d = sc.clone();
        if d.connect.is_some() {
            return Err("a SidecarService cannot have a sidecar of its own".into());
        }
        if d.id.is_empty() {
            d.id = format!("{parent}-sidecar-proxy");
        }
        if d.name.is_empty() {
            d.name = format!("{}-sidecar-proxy", self.name);
        }
        d.kind = "connect-proxy".into();
        if d.port == 0 {
            d.port = SIDECAR_PORTS
                .clone()
                .find(|p| !taken.contains(p))
                .ok_or("no free sidecar port left in 21000-21255; give SidecarService.Port")?;
        }
        if d.address.is_empty() {
            d.address = self.address.clone();
        }
        if d.tags.is_empty() {
            d.tags = self.tags.clone();
        }
        let mut p = d.proxy.take().map(|b| *b).unwrap_or_default();
        p.destination_service_name = self.name.clone();
        p.destination_service_id = parent;
        if p.local_service_port == 0 {
            p.local_service_port = self.port;
        }
        if p.local_service_address.is_empty() {
            p.local_service_address = "127.0.0.1".into();
        }
        d.proxy = Some(Box::new(p));
        if d.check.is_none() && d.checks.is_empty() {
            let host = if d.address.is_empty() {
                "127.0.0.1"
            } else {
                &d.address
            };
            d.checks = vec![CheckDef {
                name: "Connect Sidecar Listening".into(),
                tcp: Some(format!("{host}:{}", d.port)),
                interval: Some("10s".into()),
                ..CheckDef::default()
            }];
        }
        Ok(Some(d))
    }

    /// The service and its checks.
    pub fn to_parts(&self, scripts: bool) -> Result<(Service, Vec<NewCheck>), String> {
        if self.name.is_empty() {
            return Err("Missing service name".into());
        }
        if self.kind == "connect-proxy"
            && self
                .proxy
                .as_ref()
                .is_none_or(|p| p.destination_service_name.is_empty())
        {
            return Err("Proxy.DestinationServiceName must be set for a connect-proxy".into());
        }
        let weights = self.weights.unwrap_or_default();
        if weights.passing == 0 {
            return Err("Passing must be greater than 0".into());
        }
        let checks = self
            .check
            .iter()
            .chain(&self.checks)
            .map(|c| c.to_check(scripts))
            .collect::<Result<Vec<_>, _>>()?;
        let service = Service {
            id: if self.id.is_empty() {
                self.name.clone()
            } else {
                self.id.clone()
            },
            service: self.name.clone(),
            tags: self.tags.clone(),
            address: self.address.clone(),
            meta: self.meta.clone(),
            tagged_addresses: self.tagged_addresses.clone(),
            port: self.port,
            weights,
            kind: self.kind.clone(),
            proxy: self.proxy.clone(),
            locality: self.locality.clone(),
            enable_tag_override: self.enable_tag_override,
            ..Service::default()
        };
        Ok((service, checks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn any_spelling_of_a_field_is_consuls_and_user_keys_stay() {
        let v = normalize_keys(json!({
            "name": "web", "service_id": "w1", "TTL": "10s", "ttl": "x",
            "meta": {"Owner": "ops", "service_id": "kept"},
            "checks": [{"checkid": "a", "http": "http://x", "interval": "5s"}],
            "Unknown_Key": 1
        }));
        assert_eq!(v["Name"], "web");
        assert_eq!(v["ServiceID"], "w1");
        assert_eq!(v["Meta"], json!({"Owner": "ops", "service_id": "kept"}));
        assert_eq!(
            v["Checks"][0],
            json!({"CheckID": "a", "HTTP": "http://x", "Interval": "5s"})
        );
        assert_eq!(v["Unknown_Key"], 1);
    }

    #[test]
    fn durations_may_be_go_nanoseconds_and_intervals_have_a_floor() {
        // Go clients send time.Duration as integer nanoseconds.
        let d: CheckDef = decode(json!({"args": ["/bin/true"], "interval": 10_000_000_000u64,
                                        "timeout": 10}))
        .unwrap();
        assert_eq!(d.interval.as_deref(), Some("10000000000ns"));
        let Some(Kind::Probe(p)) = d.to_check(true).unwrap().kind else {
            panic!("a probe")
        };
        assert_eq!(p.interval, Duration::from_secs(10));
        // Shorter than Consul's 1 s minimum interval: raised to it.
        let d: CheckDef = decode(json!({"tcp": "x:1", "interval": "10ms"})).unwrap();
        let Some(Kind::Probe(p)) = d.to_check(false).unwrap().kind else {
            panic!("a probe")
        };
        assert_eq!(p.interval, Duration::from_secs(1));
        assert!(decode::<CheckDef>(json!({"ttl": -5})).is_err());
    }

    #[test]
    fn tagged_addresses_keep_their_keys_and_spell_their_fields() {
        let d: ServiceDef = decode(json!({"name": "web", "tagged_addresses": {
            "lan": {"address": "10.0.0.1", "port": 80}, "wan_ipv4": {"Address": "1.2.3.4"}}}))
        .unwrap();
        let (svc, _) = d.to_parts(false).unwrap();
        assert_eq!(svc.tagged_addresses["lan"].address, "10.0.0.1");
        assert_eq!(svc.tagged_addresses["lan"].port, 80);
        assert_eq!(svc.tagged_addresses["wan_ipv4"].address, "1.2.3.4");
        assert_eq!(svc.weights, Weights::default());
        let zero: ServiceDef = decode(json!({"name": "x", "weights": {"passing": 0}})).unwrap();
        assert!(zero.to_parts(false).is_err());
    }

    #[test]
    fn snake_case_definitions_decode_with_their_checks() {
        let d: ServiceDef = decode(json!({
            "name": "web", "port": 80, "tags": ["v1"],
            "check": {"http": "http://127.0.0.1:80/health", "interval": "10s",
                      "deregister_critical_service_after": "90m"}
        }))
        .unwrap();
        let (s, checks) = d.to_parts(false).unwrap();
        assert_eq!((s.id.as_str(), s.port), ("web", 80));
        let c = &checks[0];
        assert_eq!(c.deregister_after, Some(Duration::from_secs(5400)));
        match &c.kind {
            Some(Kind::Probe(p)) => assert_eq!(p.interval, Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
    }

    fn probe_of(v: Value) -> Probe {
        let d: CheckDef = decode(v).unwrap();
        match d.to_check(false).unwrap().kind {
            Some(Kind::Probe(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn grpc_h2ping_udp_and_http_fields_in_any_spelling() {
        let tls = |name: &str, skip| {
            Some(TlsOptions {
                server_name: name.into(),
                skip_verify: skip,
            })
        };
        let p = probe_of(json!({"GRPC": "127.0.0.1:9/db", "GRPCUseTLS": true,
                                "TLSServerName": "db.local", "Interval": "5s"}));
        assert_eq!(
            p.target,
            Target::Grpc {
                target: "127.0.0.1:9/db".into(),
                tls: tls("db.local", false)
            }
        );
        assert_eq!(p.timeout, Duration::from_secs(10));
        // Config files' snake_case.
        let p = probe_of(
            json!({"grpc": "h:1", "grpc_use_tls": true, "tls_skip_verify": true,
                                "interval": "1s"}),
        );
        assert_eq!(
            p.target,
            Target::Grpc {
                target: "h:1".into(),
                tls: tls("", true)
            }
        );
        let p = probe_of(json!({"grpc": "h:1", "interval": "1s"}));
        assert_eq!(
            p.target,
            Target::Grpc {
                target: "h:1".into(),
                tls: None
            }
        );
        // H2PING is over TLS unless told otherwise.
        let p = probe_of(json!({"H2PING": "h:2", "Interval": "1s"}));
        assert_eq!(
            p.target,
            Target::H2Ping {
                addr: "h:2".into(),
                tls: tls("", false)
            }
        );
        let p = probe_of(json!({"h2ping": "h:2", "h2ping_use_tls": false, "interval": "1s"}));
        assert_eq!(
            p.target,
            Target::H2Ping {
                addr: "h:2".into(),
                tls: None
            }
        );
        let p = probe_of(json!({"udp": "h:3", "interval": "1s", "timeout": "2s"}));
        assert_eq!(
            (p.target, p.timeout),
            (Target::Udp("h:3".into()), Duration::from_secs(2))
        );
        let p = probe_of(
            json!({"http": "https://h/x", "method": "POST", "body": "{}",
                                "header": {"X-Token": ["a", "b"]}, "disable_redirects": true,
                                "tls_server_name": "h.example", "interval": "1s"}),
        );
        let Target::Http(h) = p.target else {
            panic!("http")
        };
        assert_eq!((h.method.as_str(), h.body.as_str()), ("POST", "{}"));
        assert_eq!(h.header["X-Token"], ["a", "b"], "header names are data");
        assert!(h.disable_redirects);
        assert_eq!(h.tls.server_name, "h.example");
        let d: CheckDef = decode(json!({"udp": "h:3"})).unwrap();
        assert!(d
            .to_check(false)
            .unwrap_err()
            .contains("Interval must be > 0"));
        let d: CheckDef = decode(json!({"udp": "h:3", "tcp": "h:4", "interval": "1s"})).unwrap();
        assert!(d.to_check(false).unwrap_err().contains("not several"));
    }

    #[test]
    fn alias_checks_need_no_interval_and_take_no_ttl() {
        let d: CheckDef =
            decode(json!({"name": "a", "alias_service": "web", "alias_node": "n2"})).unwrap();
        let c = d.to_check(false).unwrap();
        assert_eq!(
            c.kind,
            Some(Kind::Alias(AliasTarget {
                node: "n2".into(),
                service: "web".into()
            }))
        );
        let d: CheckDef = decode(json!({"AliasService": "web"})).unwrap();
        assert!(
            matches!(d.to_check(false).unwrap().kind, Some(Kind::Alias(a)) if a.node.is_empty())
        );
        let d: CheckDef = decode(json!({"AliasService": "web", "TTL": "5s"})).unwrap();
        assert_eq!(
            d.to_check(false).unwrap_err(),
            "TTL must be not be set for Alias checks"
        );
        let d: CheckDef =
            decode(json!({"AliasNode": "n", "HTTP": "http://x", "Interval": "1s"})).unwrap();
        assert!(d.to_check(false).is_err());
        // Empty strings are no target, as in Consul.
        let d: CheckDef = decode(json!({"HTTP": "", "TTL": "5s"})).unwrap();
        assert!(matches!(
            d.to_check(false).unwrap().kind,
            Some(Kind::Ttl(_))
        ));
    }

    #[test]
    fn scripts_need_permission_and_a_program() {
        let d = CheckDef {
            name: "s".into(),
            args: Some(vec!["/bin/true".into()]),
            interval: Some("1s".into()),
            ..CheckDef::default()
        };
        assert_eq!(d.to_check(false).unwrap_err(), SCRIPTS_DISABLED);
        let c = d.to_check(true).unwrap();
        match c.kind {
            Some(Kind::Probe(p)) => assert_eq!(p.timeout, Duration::from_secs(30)),
            other => panic!("{other:?}"),
        }
        let empty = CheckDef {
            args: Some(vec![]),
            ..d.clone()
        };
        assert!(empty.to_check(true).unwrap_err().contains("program"));
        let both = CheckDef {
            ttl: Some("5s".into()),
            ..d
        };
        assert!(both.to_check(true).is_err());
    }

    #[test]
    fn a_sidecar_service_is_filled_in_as_consuls() {
        let d: ServiceDef = decode(json!({
            "name": "web", "port": 8080, "tags": ["v1"],
            "connect": { "sidecar_service": {
                "proxy": { "upstreams": [{ "destination_name": "db", "local_bind_port": 9191 }] }
            }}
        }))
        .unwrap();
        let sc = d.sidecar(&[21000]).unwrap().unwrap();
        assert_eq!(sc.id, "web-sidecar-proxy");
        assert_eq!(sc.kind, "connect-proxy");
        assert_eq!(sc.port, 21001, "the first free sidecar port");
        assert_eq!(sc.tags, ["v1"]);
        let p = sc.proxy.as_deref().unwrap();
        assert_eq!(p.destination_service_name, "web");
        assert_eq!(p.destination_service_id, "web");
        assert_eq!(p.local_service_port, 8080);
        assert_eq!(p.upstreams[0].destination_name, "db");
        assert_eq!(p.upstreams[0].local_bind_port, 9191);
        assert_eq!(sc.checks[0].tcp.as_deref(), Some("127.0.0.1:21001"));
        let (svc, _) = sc.to_parts(false).unwrap();
        assert_eq!(svc.proxy.as_deref(), Some(p));
        let all: Vec<u16> = SIDECAR_PORTS.collect();
        assert!(d
            .sidecar(&all)
            .unwrap_err()
            .contains("no free sidecar port"));
        // A proxy without a destination is refused.
        let bad: ServiceDef = decode(json!({"name": "p", "kind": "connect-proxy"})).unwrap();
        assert!(bad.to_parts(false).is_err());
    }
}
