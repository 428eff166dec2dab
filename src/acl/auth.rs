//! Auth methods and binding rules: how an application trades a credential
//! it already has (a JWT) for a Consul token, as `consul login` does.
//!
//! The leader checks the bearer token against the method's config
//! ([`JwtConfig::verify`]), maps its claims to the variables the binding
//! rules see ([`Claims`]), and each rule whose selector matches adds an
//! identity, role or policy to the token it writes ([`BindingRule::bind`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::identity::{NodeIdentity, ServiceIdentity, TemplateVariables, TemplatedPolicy};
use super::Link;

/// An auth method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthMethod {
    /// Its unique name.
    pub name: String,
    /// `jwt` (the only type cairn has so far).
    pub method_type: String,
    /// Shown instead of the name.
    #[serde(default)]
    pub display_name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Tokens it makes expire after this long (ms; none when absent).
    #[serde(default)]
    pub max_token_ttl_ms: Option<u64>,
    /// `local` (default) or `global`: the locality of its tokens.
    #[serde(default)]
    pub token_locality: String,
    /// The type's configuration, as given (Consul's JSON).
    #[serde(default)]
    pub config: Value,
    /// Raft index of its creation.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of its last change.
    #[serde(default)]
    pub modify_index: u64,
}

impl AuthMethod {
    /// Refused as Consul refuses it.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("Invalid Auth Method: no Name is set".into());
        }
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || self.name.len() > 128
        {
            return Err(format!(
                "Invalid Auth Method: invalid Name {:?}: only letters, digits, '-' and '_', at most 128",
                self.name
            ));
        }
        match self.method_type.as_str() {
            "jwt" => {}
            "" => return Err("Invalid Auth Method: Type is required".into()),
            other => {
                return Err(format!(
                    "Invalid Auth Method: Type should be one of: [jwt] (got {other:?}; kubernetes and oidc are not supported yet)"
                ))
            }
        }
        match self.token_locality.as_str() {
            "" | "local" | "global" => {}
            other => {
                return Err(format!(
                    "Invalid Auth Method: TokenLocality should be one of 'local' or 'global' (got {other:?})"
                ))
            }
        }
        JwtConfig::parse(&self.config).map(|_| ())
    }
}

/// What a binding rule binds.
pub const BIND_TYPES: [&str; 5] = ["service", "node", "role", "policy", "templated-policy"];

/// A binding rule: tokens an auth method makes get `bind_name` (as a
/// `bind_type`) when `selector` matches the login's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRule {
    /// Its ID.
    pub id: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The auth method it belongs to.
    pub auth_method: String,
    /// A filter expression over `value.*` and `list.*` (empty: always).
    #[serde(default)]
    pub selector: String,
    /// `service`, `node`, `role`, `policy` or `templated-policy`.
    pub bind_type: String,
    /// The name bound, with `${value.x}` interpolated.
    pub bind_name: String,
    /// For `templated-policy`: its variables (interpolated too).
    #[serde(default)]
    pub bind_vars: Option<TemplateVariables>,
    /// Raft index of its creation.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of its last change.
    #[serde(default)]
    pub modify_index: u64,
}

/// What a login binds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    /// Service identities.
    pub services: Vec<ServiceIdentity>,
    /// Node identities.
    pub nodes: Vec<NodeIdentity>,
    /// Templated policies.
    pub templated: Vec<TemplatedPolicy>,
    /// Roles, by name.
    pub roles: Vec<Link>,
    /// Policies, by name.
    pub policies: Vec<Link>,
}

impl Bindings {
    /// Whether it binds nothing (the login is refused then).
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.nodes.is_empty()
            && self.templated.is_empty()
            && self.roles.is_empty()
            && self.policies.is_empty()
    }
}

impl BindingRule {
    /// Refused as Consul refuses it.
    pub fn validate(&self) -> Result<(), String> {
        if self.auth_method.is_empty() {
            return Err("Invalid Binding Rule: no AuthMethod is set".into());
        }
        if !BIND_TYPES.contains(&self.bind_type.as_str()) {
            return Err(format!(
                "Invalid Binding Rule: unknown BindType {:?} (expected one of {})",
                self.bind_type,
                BIND_TYPES.join(", ")
            ));
        }
        if self.bind_name.is_empty() {
            return Err("Invalid Binding Rule: no BindName is set".into());
        }
        check_template(&self.bind_name)
            .map_err(|e| format!("Invalid Binding Rule: invalid BindName: {e}"))?;
        if self.bind_type == "templated-policy" {
            if super::identity::template(&self.bind_name).is_none() {
                return Err(format!(
                    "Invalid Binding Rule: templated policy {:?} does not exist",
                    self.bind_name
                ));
            }
            if let Some(v) = &self.bind_vars {
                check_template(&v.name)
                    .map_err(|e| format!("Invalid Binding Rule: invalid BindVars: {e}"))?;
            }
        }
        if !self.selector.is_empty() {
            crate::api::filter::Filter::parse(&self.selector)
                .map_err(|e| format!("Invalid Binding Rule: invalid Selector: {e}"))?;
        }
        Ok(())
    }

    /// Whether the rule applies to a login with `claims`.
    pub fn selects(&self, claims: &Claims) -> bool {
        if self.selector.is_empty() {
            return true;
        }
        crate::api::filter::Filter::parse(&self.selector)
            .map(|f| f.matches(&claims.selectable()))
            .unwrap_or(false)
    }

    /// What the rule adds to `out` for a login with `claims` in
    /// datacenter `dc`. A name that does not come out valid is refused
    /// (the login fails, as in Consul).
    pub fn bind(&self, claims: &Claims, dc: &str, out: &mut Bindings) -> Result<(), String> {
        let name = interpolate(&self.bind_name, claims)?;
        match self.bind_type.as_str() {
            "service" => {
                let s = ServiceIdentity {
                    service_name: name,
                    datacenters: Vec::new(),
                };
                s.validate(false)?;
                out.services.push(s);
            }
            "node" => {
                let n = NodeIdentity {
                    node_name: name,
                    datacenter: dc.to_string(),
                };
                n.validate()?;
                out.nodes.push(n);
            }
            "role" => out.roles.push(Link {
                id: String::new(),
                name,
            }),
            "policy" => out.policies.push(Link {
                id: String::new(),
                name,
            }),
            "templated-policy" => {
                let variables = match &self.bind_vars {
                    Some(v) => Some(TemplateVariables {
                        name: interpolate(&v.name, claims)?,
                    }),
                    None => None,
                };
                let t = TemplatedPolicy {
                    template_name: name,
                    variables,
                    datacenters: Vec::new(),
                };
                t.validate(false)?;
                out.templated.push(t);
            }
            other => return Err(format!("unknown BindType {other:?}")),
        }
        Ok(())
    }
}

/// Checks `${...}` references: each names `value.<x>` or `list.<x>`.
fn check_template(s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        let tail = &rest[at + 2..];
        let end = tail
            .find('}')
            .ok_or_else(|| format!("unterminated \"${{\" in {s:?}"))?;
        let var = tail[..end].trim();
        if !(var.starts_with("value.") && var.len() > 6) {
            return Err(format!(
                "{var:?} in {s:?} is not a variable (expected value.<name>)"
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

/// `s` with each `${value.x}` replaced by the claim mapped to `x`.
fn interpolate(s: &str, claims: &Claims) -> Result<String, String> {
    check_template(s)?;
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let end = tail.find('}').unwrap_or(tail.len());
        let var = tail[..end].trim();
        let key = var.strip_prefix("value.").unwrap_or(var);
        let v = claims.values.get(key).ok_or_else(|| {
            format!("cannot interpolate ${{{var}}}: no claim is mapped to {key:?}")
        })?;
        out.push_str(v);
        rest = tail.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// A login's claims as binding rules see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `value.<name>`: from `ClaimMappings`.
    pub values: BTreeMap<String, String>,
    /// `list.<name>`: from `ListClaimMappings`.
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Claims {
    /// The JSON selectors walk: `{"value": {...}, "list": {...}}`.
    pub fn selectable(&self) -> Value {
        json!({"value": self.values, "list": self.lists})
    }
}

/// The `jwt` auth method's configuration (Consul's field names).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    /// PEM public keys (RSA, EC or Ed25519) a token may be signed with.
    #[serde(rename = "JWTValidationPubKeys")]
    pub pub_keys: Vec<String>,
    /// A JSON Web Key Set, inline (cairn's own: a key set the operator
    /// has, without a URL to fetch it from).
    #[serde(rename = "JWKS")]
    pub jwks: Option<Value>,
    /// Where Consul fetches keys from (not supported yet: refused).
    #[serde(rename = "JWKSURL")]
    pub jwks_url: String,
    /// OIDC discovery (not supported yet: refused).
    #[serde(rename = "OIDCDiscoveryURL")]
    pub oidc_discovery_url: String,
    /// The `iss` a token must have (empty: any).
    #[serde(rename = "BoundIssuer")]
    pub bound_issuer: String,
    /// `aud` must contain one of these (empty: not checked).
    #[serde(rename = "BoundAudiences")]
    pub bound_audiences: Vec<String>,
    /// Claim (name or JSON pointer) -> the `value.<name>` it becomes.
    #[serde(rename = "ClaimMappings")]
    pub claim_mappings: BTreeMap<String, String>,
    /// List claim -> the `list.<name>` it becomes.
    #[serde(rename = "ListClaimMappings")]
    pub list_claim_mappings: BTreeMap<String, String>,
    /// Allowed signing algorithms (default RS256).
    #[serde(rename = "JWTSupportedAlgs")]
    pub supported_algs: Vec<String>,
    /// Leeway on `exp` (Go duration or ns; -1 turns the check off).
    #[serde(rename = "ExpirationLeeway")]
    pub expiration_leeway: Option<Value>,
    /// Leeway on `nbf`.
    #[serde(rename = "NotBeforeLeeway")]
    pub not_before_leeway: Option<Value>,
    /// Leeway on both for clock skew.
    #[serde(rename = "ClockSkewLeeway")]
    pub clock_skew_leeway: Option<Value>,
}

/// The leeway Consul gives `exp` and `nbf` when none is set.
const DEFAULT_LEEWAY_MS: i64 = 150_000;
/// The clock-skew leeway Consul gives when none is set.
const DEFAULT_SKEW_MS: i64 = 60_000;

/// A leeway setting in ms: a Go duration string or nanoseconds; -1 means
/// no check (`None`).
fn leeway_ms(v: &Option<Value>, default: i64) -> Result<Option<i64>, String> {
    let ms = match v {
        None | Some(Value::Null) => return Ok(Some(default)),
        Some(Value::Number(n)) => n.as_i64().ok_or("a leeway must be an integer")? / 1_000_000,
        Some(Value::String(s)) if s.trim() == "-1" => -1,
        Some(Value::String(s)) if s.starts_with('-') => {
            let d = crate::format::parse_duration(&s[1..])?;
            -(d.as_millis() as i64)
        }
        Some(Value::String(s)) => crate::format::parse_duration(s)?.as_millis() as i64,
        Some(other) => return Err(format!("a leeway must be a duration, not {other}")),
    };
    // Consul: -1 (any negative) turns the check off; 0 means the default.
    Ok(match ms {
        m if m < 0 => None,
        0 => Some(default),
        m => Some(m),
    })
}

/// The algorithms cairn verifies.
const ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl JwtConfig {
    /// The config from an auth method's `Config`, checked.
    pub fn parse(config: &Value) -> Result<JwtConfig, String> {
        let c: JwtConfig = if config.is_null() {
            JwtConfig::default()
        } else {
            serde_json::from_value(config.clone())
                .map_err(|e| format!("Invalid Auth Method: invalid Config: {e}"))?
        };
        if !c.jwks_url.is_empty() || !c.oidc_discovery_url.is_empty() {
            return Err(
                "Invalid Auth Method: JWKSURL and OIDCDiscoveryURL are not supported yet; give JWTValidationPubKeys or JWKS"
                    .into(),
            );
        }
        if c.pub_keys.is_empty() && c.jwks.is_none() {
            return Err(
                "Invalid Auth Method: one of JWTValidationPubKeys or JWKS must be set".into(),
            );
        }
        for alg in &c.supported_algs {
            if !ALGS.contains(&alg.as_str()) {
                return Err(format!(
                    "Invalid Auth Method: unsupported JWTSupportedAlgs entry {alg:?}"
                ));
            }
        }
        c.keys()?;
        for v in [
            &c.expiration_leeway,
            &c.not_before_leeway,
            &c.clock_skew_leeway,
        ] {
            leeway_ms(v, 0).map_err(|e| format!("Invalid Auth Method: {e}"))?;
        }
        Ok(c)
    }

    /// The keys a token may be signed with, each with its `kid` if any.
    fn keys(&self) -> Result<Vec<(Option<String>, jsonwebtoken::DecodingKey)>, String> {
        use jsonwebtoken::DecodingKey;
        let mut out = Vec::new();
        for (i, pem) in self.pub_keys.iter().enumerate() {
            let bytes = pem.as_bytes();
            let key = DecodingKey::from_rsa_pem(bytes)
                .or_else(|_| DecodingKey::from_ec_pem(bytes))
                .or_else(|_| DecodingKey::from_ed_pem(bytes))
                .map_err(|e| {
                    format!("Invalid Auth Method: JWTValidationPubKeys[{i}] is not a PEM public key: {e}")
                })?;
            out.push((None, key));
        }
        if let Some(set) = &self.jwks {
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(set.clone())
                .map_err(|e| format!("Invalid Auth Method: invalid JWKS: {e}"))?;
            for k in &set.keys {
                let key = DecodingKey::from_jwk(k)
                    .map_err(|e| format!("Invalid Auth Method: unusable key in JWKS: {e}"))?;
                out.push((k.common.key_id.clone(), key));
            }
        }
        Ok(out)
    }

    /// Checks `jwt` at wall-clock `now_ms`: signature, algorithm, `iss`,
    /// `aud`, `exp` and `nbf`; its claims mapped for the binding rules.
    pub fn verify(&self, jwt: &str, now_ms: u64) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("invalid JWT: {e}"))?;
        let alg = format!("{:?}", header.alg);
        let allowed: Vec<&str> = if self.supported_algs.is_empty() {
            vec!["RS256"]
        } else {
            self.supported_algs.iter().map(String::as_str).collect()
        };
        // Only public-key algorithms: a shared secret would have to be
        // in the config, readable by anyone with acl:read.
        if !allowed.contains(&alg.as_str()) || !ALGS.contains(&alg.as_str()) {
            return Err(format!("JWT is signed with {alg}, which is not allowed"));
        }
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        // Times are checked below, against the caller's clock (the
        // simulator's, under simulation); audience too, Consul's way.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut last = String::from("no key matches the JWT");
        let mut claims: Option<Value> = None;
        for (kid, key) in self.keys()? {
            if let (Some(want), Some(have)) = (&header.kid, &kid) {
                if want != have {
                    continue;
                }
            }
            match jsonwebtoken::decode::<Value>(jwt, &key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => last = format!("failed to verify the JWT signature: {e}"),
            }
        }
        let claims = claims.ok_or(last)?;
        self.check_claims(&claims, now_ms)?;
        self.map_claims(&claims)
    }

    fn check_claims(&self, claims: &Value, now_ms: u64) -> Result<(), String> {
        let now = now_ms as i64;
        let skew = leeway_ms(&self.clock_skew_leeway, DEFAULT_SKEW_MS)?.unwrap_or(0);
        let secs = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_f64)
                .map(|s| (s * 1000.0) as i64)
        };
        if let Some(leeway) = leeway_ms(&self.expiration_leeway, DEFAULT_LEEWAY_MS)? {
            match secs("exp") {
                Some(exp) if now > exp + leeway + skew => return Err("JWT is expired (exp)".into()),
                _ => {}
            }
        }
        if let Some(leeway) = leeway_ms(&self.not_before_leeway, DEFAULT_LEEWAY_MS)? {
            let nbf = secs("nbf").or_else(|| secs("iat"));
            if let Some(nbf) = nbf {
                if now + leeway + skew < nbf {
                    return Err("JWT is not yet valid (nbf)".into());
                }
            }
        }
        if !self.bound_issuer.is_empty()
            && claims.get("iss").and_then(Value::as_str) != Some(self.bound_issuer.as_str())
        {
            return Err("JWT issuer (iss) does not match BoundIssuer".into());
        }
        if !self.bound_audiences.is_empty() {
            let aud: Vec<&str> = match claims.get("aud") {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !aud
                .iter()
                .any(|a| self.bound_audiences.iter().any(|b| b == a))
            {
                return Err("JWT audience (aud) does not match BoundAudiences".into());
            }
        }
        Ok(())
    }

    fn map_claims(&self, claims: &Value) -> Result<Claims, String> {
        let mut out = Claims::default();
        for (claim, name) in &self.claim_mappings {
            let v = match claim_at(claims, claim) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                Some(_) => {
                    return Err(format!(
                        "claim {claim:?} is not a string, number or bool (use ListClaimMappings for lists)"
                    ))
                }
            };
            out.values.insert(name.clone(), v);
        }
        for (claim, name) in &self.list_claim_mappings {
            let list = match claim_at(claims, claim) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s.clone()),
                        Value::Bool(_) | Value::Number(_) => Ok(i.to_string()),
                        _ => Err(format!("claim {claim:?} holds something not a scalar")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(Value::String(s)) => vec![s.clone()],
                Some(_) => return Err(format!("claim {claim:?} is not a list")),
            };
            out.lists.insert(name.clone(), list);
        }
        Ok(out)
    }
}

/// A claim by name, or by JSON pointer (`/a/b`).
fn claim_at<'a>(claims: &'a Value, claim: &str) -> Option<&'a Value> {
    if claim.starts_with('/') {
        claims.pointer(claim)
    } else {
        claims.get(claim)
    }
}

/// The description of a token made by login, as Consul writes it.
pub fn login_description(meta: &BTreeMap<String, String>) -> String {
    if meta.is_empty() {
        "token created via login".into()
    } else {
        format!(
            "token created via login: {}",
            serde_json::to_string(meta).unwrap_or_default()
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ECDSA P-256 pair (private PKCS#8 PEM, public PEM), made fresh.
    pub(crate) fn ec_pair() -> (String, String) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        (kp.serialize_pem(), kp.public_key_pem())
    }

    fn sign(claims: Value) -> (String, String) {
        let (private, public) = ec_pair();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key,
        )
        .unwrap();
        (jwt, public)
    }

    fn config(public: &str) -> JwtConfig {
        JwtConfig::parse(&json!({
            "JWTValidationPubKeys": [public],
            "JWTSupportedAlgs": ["ES256"],
            "BoundIssuer": "https://issuer",
            "BoundAudiences": ["cairn"],
            "ClaimMappings": {"service": "svc", "/nested/team": "team"},
            "ListClaimMappings": {"groups": "groups"},
        }))
        .unwrap()
    }

    const NOW_MS: u64 = 1_800_000_000_000;

    #[test]
    fn a_good_jwt_yields_its_mapped_claims_and_a_bad_one_is_refused() {
        let claims = json!({
            "iss": "https://issuer", "aud": ["cairn", "x"], "exp": NOW_MS / 1000 + 60,
            "service": "web", "nested": {"team": "blue"}, "groups": ["admins", "dev"],
        });
        let (jwt, public) = sign(claims.clone());
        let c = config(&public).verify(&jwt, NOW_MS).unwrap();
        assert_eq!(c.values["svc"], "web");
        assert_eq!(c.values["team"], "blue");
        assert_eq!(c.lists["groups"], vec!["admins", "dev"]);

        // Expired beyond the leeways, another issuer, another audience.
        let late = NOW_MS + 60_000 + 150_000 + 60_000 + 1_000;
        assert!(config(&public)
            .verify(&jwt, late)
            .unwrap_err()
            .contains("expired"));
        for (k, v) in [("iss", json!("https://evil")), ("aud", json!("other"))] {
            let mut bad = claims.clone();
            bad[k] = v;
            let (jwt, public) = sign(bad);
            assert!(config(&public).verify(&jwt, NOW_MS).is_err(), "{k}");
        }
        // Signed by another key.
        let (_, other_public) = sign(json!({}));
        let err = config(&other_public).verify(&jwt, NOW_MS).unwrap_err();
        assert!(err.contains("signature"), "{err}");
        // An algorithm not allowed, and garbage.
        let mut c = config(&public);
        c.supported_algs = vec!["RS256".into()];
        assert!(c.verify(&jwt, NOW_MS).unwrap_err().contains("not allowed"));
        assert!(config(&public).verify("not.a.jwt", NOW_MS).is_err());
        assert!(config(&public).verify("", NOW_MS).is_err());
    }

    #[test]
    fn binding_rules_select_and_interpolate() {
        let claims = Claims {
            values: [("svc".to_string(), "web".to_string())].into(),
            lists: [("groups".to_string(), vec!["admins".to_string()])].into(),
        };
        let rule = |sel: &str, ty: &str, name: &str| BindingRule {
            auth_method: "m".into(),
            selector: sel.into(),
            bind_type: ty.into(),
            bind_name: name.into(),
            ..BindingRule::default()
        };
        let r = rule(
            "value.svc == web and \"admins\" in list.groups",
            "service",
            "${value.svc}",
        );
        r.validate().unwrap();
        assert!(r.selects(&claims));
        let mut out = Bindings::default();
        r.bind(&claims, "dc1", &mut out).unwrap();
        assert_eq!(out.services[0].service_name, "web");
        assert!(!rule("value.svc == db", "service", "x").selects(&claims));
        rule("", "node", "n-${value.svc}")
            .bind(&claims, "dc1", &mut out)
            .unwrap();
        assert_eq!(out.nodes[0].node_name, "n-web");
        assert_eq!(out.nodes[0].datacenter, "dc1");
        // Refusals: unknown variables, types, bad selectors, bad names.
        assert!(rule("", "service", "${value.nope}")
            .bind(&claims, "dc1", &mut out)
            .is_err());
        assert!(rule("", "service", "${nope}").validate().is_err());
        assert!(rule("", "galaxy", "x").validate().is_err());
        assert!(rule("value.svc ==", "service", "x").validate().is_err());
        assert!(rule("", "service", "Web")
            .bind(&claims, "dc1", &mut out)
            .is_err());
        assert!(rule("", "templated-policy", "builtin/nope")
            .validate()
            .is_err());
    }

    #[test]
    fn configs_are_checked() {
        let m = |config: Value| AuthMethod {
            name: "m".into(),
            method_type: "jwt".into(),
            config,
            ..AuthMethod::default()
        };
        assert!(m(json!({})).validate().unwrap_err().contains("must be set"));
        assert!(m(json!({"JWTValidationPubKeys": ["nope"]}))
            .validate()
            .is_err());
        assert!(m(json!({"JWKSURL": "https://x"}))
            .validate()
            .unwrap_err()
            .contains("not supported"));
        let (_, public) = sign(json!({}));
        m(json!({"JWTValidationPubKeys": [public], "ExpirationLeeway": "-1"}))
            .validate()
            .unwrap();
        let mut bad = m(json!({"JWTValidationPubKeys": [public]}));
        bad.method_type = "kubernetes".into();
        assert!(bad.validate().unwrap_err().contains("not supported yet"));
    }
}
