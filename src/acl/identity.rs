//! Service and node identities, and templated policies: the rules a token
//! or role gets without a policy written for it. Each becomes a
//! *synthetic* policy when the token is resolved, as in Consul: a service
//! identity is the `builtin/service` template, a node identity
//! `builtin/node`.

use serde::{Deserialize, Serialize};

/// A service identity: write on the service and its sidecar proxy, read
/// on every service and node (what a service needs to join the mesh).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceIdentity {
    /// The service.
    #[serde(rename = "ServiceName", default)]
    pub service_name: String,
    /// Where it applies (empty: everywhere).
    #[serde(rename = "Datacenters", default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// A node identity: write on the node, read on every service (what an
/// agent needs for itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node.
    #[serde(rename = "NodeName", default)]
    pub node_name: String,
    /// The one datacenter it applies in.
    #[serde(rename = "Datacenter", default)]
    pub datacenter: String,
}

/// A template's variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVariables {
    /// The name the template is about (a service's, a node's).
    #[serde(rename = "name", alias = "Name", default)]
    pub name: String,
}

/// A use of a built-in policy template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplatedPolicy {
    /// Which template (`builtin/service`, `builtin/node`, `builtin/dns`).
    #[serde(rename = "TemplateName", default)]
    pub template_name: String,
    /// Its variables.
    #[serde(
        rename = "TemplateVariables",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub variables: Option<TemplateVariables>,
    /// Where it applies (empty: everywhere).
    #[serde(rename = "Datacenters", default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
}

/// A built-in policy template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// Its name.
    pub name: &'static str,
    /// Its fixed ID (hidden from users, as in Consul).
    pub id: &'static str,
    /// The JSON schema of its variables (empty: it takes none).
    pub schema: &'static str,
    /// The rules, with `{{.Name}}` where the variable goes.
    pub template: &'static str,
}

/// The schema of a template that needs a name.
const NAME_SCHEMA: &str = "{\n\t\"type\": \"object\",\n\t\"properties\": {\n\t\t\"name\": { \"type\": \"string\", \"$ref\": \"#/definitions/min-length-one\" }\n\t},\n\t\"required\": [\"name\"],\n\t\"definitions\": {\n\t\t\"min-length-one\": {\n\t\t\t\t\"type\": \"string\",\n\t\t\t\t\"minLength\": 1\n\t\t}\n\t}\n}";

/// The built-in templates, by name.
pub const TEMPLATES: [Template; 3] = [
    Template {
        name: "builtin/dns",
        id: "00000000-0000-0000-0000-000000000005",
        schema: "",
        template: "\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}\nquery_prefix \"\" {\n\tpolicy = \"read\"\n}",
    },
    Template {
        name: "builtin/node",
        id: "00000000-0000-0000-0000-000000000004",
        schema: NAME_SCHEMA,
        template: "\nnode \"{{.Name}}\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}",
    },
    Template {
        name: "builtin/service",
        id: "00000000-0000-0000-0000-000000000003",
        schema: NAME_SCHEMA,
        template: "\nservice \"{{.Name}}\" {\n\tpolicy = \"write\"\n}\nservice \"{{.Name}}-sidecar-proxy\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}",
    },
];

/// The built-in template called `name`.
pub fn template(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// Consul's rule for identity names: lowercase letters, digits, `-` and
/// `_`, starting and ending with a letter or digit, at most 256.
fn valid_identity_name(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_';
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 256
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(inner)
}

impl ServiceIdentity {
    /// Refused as Consul refuses it on a token (`local`) or role.
    pub fn validate(&self, local: bool) -> Result<(), String> {
        if self.service_name.is_empty() {
            return Err("Service identity is missing the service name field on this token".into());
        }
        if local && !self.datacenters.is_empty() {
            return Err(format!(
                "Service identity {:?} cannot specify a list of datacenters on a local token",
                self.service_name
            ));
        }
        if !valid_identity_name(&self.service_name) {
            return Err(format!(
                "Service identity {:?} has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed",
                self.service_name
            ));
        }
        Ok(())
    }

    /// The same as a templated policy.
    pub fn templated(&self) -> TemplatedPolicy {
        TemplatedPolicy {
            template_name: "builtin/service".into(),
            variables: Some(TemplateVariables {
                name: self.service_name.clone(),
            }),
            datacenters: self.datacenters.clone(),
        }
    }
}

impl NodeIdentity {
    /// Refused as Consul refuses it.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_name.is_empty() {
            return Err("Node identity is missing the node name field on this token".into());
        }
        if self.datacenter.is_empty() {
            return Err("Node identity is missing the datacenter field on this token".into());
        }
        if !valid_identity_name(&self.node_name) {
            return Err(
                "Node identity has an invalid name. Only lowercase alphanumeric characters, '-' and '_' are allowed"
                    .into(),
            );
        }
        Ok(())
    }

    /// The same as a templated policy.
    pub fn templated(&self) -> TemplatedPolicy {
        TemplatedPolicy {
            template_name: "builtin/node".into(),
            variables: Some(TemplateVariables {
                name: self.node_name.clone(),
            }),
            datacenters: vec![self.datacenter.clone()],
        }
    }
}

impl TemplatedPolicy {
    /// Refused as Consul refuses it: an unknown template, or variables
    /// its schema does not take.
    pub fn validate(&self, local: bool) -> Result<(), String> {
        if self.template_name.is_empty() {
            return Err("templated policy is missing the template name field on this token".into());
        }
        let Some(t) = template(&self.template_name) else {
            return Err(format!(
                "templated policy {:?} does not exist",
                self.template_name
            ));
        };
        if local && !self.datacenters.is_empty() {
            return Err(format!(
                "templated policy {:?} cannot specify a list of datacenters on a local token",
                self.template_name
            ));
        }
        if t.schema.is_empty() {
            return Ok(());
        }
        let name = self.variables.as_ref().map_or("", |v| v.name.as_str());
        let problem = if self.variables.is_none() {
            Some("name is required")
        } else if name.is_empty() {
            Some("name: String length must be greater than or equal to 1")
        } else if !valid_identity_name(name) {
            Some("name: only lowercase alphanumeric characters, '-' and '_' are allowed")
        } else {
            None
        };
        match problem {
            Some(p) => Err(format!(
                "encountered error validating templated policy {:?}: {p}",
                self.template_name
            )),
            None => Ok(()),
        }
    }

    /// Whether it applies in datacenter `dc`.
    pub fn applies_in(&self, dc: &str) -> bool {
        self.datacenters.is_empty() || self.datacenters.iter().any(|d| d == dc)
    }
}

/// What a token or role carries besides policies and roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identities {
    /// Its service identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_identities: Vec<ServiceIdentity>,
    /// Its node identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_identities: Vec<NodeIdentity>,
    /// Its templated policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templated_policies: Vec<TemplatedPolicy>,
}

impl Identities {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.service_identities.is_empty()
            && self.node_identities.is_empty()
            && self.templated_policies.is_empty()
    }

    /// Checks each (on a `local` token, none may name datacenters) and
    /// drops repeats, as Consul does.
    pub fn validated(&self, local: bool) -> Result<Identities, String> {
        let mut out = Identities::default();
        for s in &self.service_identities {
            s.validate(local)?;
            match out
                .service_identities
                .iter_mut()
                .find(|o| o.service_name == s.service_name)
            {
                // Repeats merge their datacenters; any "everywhere" wins.
                Some(o) if o.datacenters.is_empty() || s.datacenters.is_empty() => {
                    o.datacenters.clear()
                }
                Some(o) => {
                    for dc in &s.datacenters {
                        if !o.datacenters.contains(dc) {
                            o.datacenters.push(dc.clone());
                        }
                    }
                }
                None => out.service_identities.push(s.clone()),
            }
        }
        for n in &self.node_identities {
            n.validate()?;
            if !out.node_identities.contains(n) {
                out.node_identities.push(n.clone());
            }
        }
        for t in &self.templated_policies {
            t.validate(local)?;
            let same = |o: &&mut TemplatedPolicy| {
                o.template_name == t.template_name
                    && o.variables.as_ref().map(|v| &v.name)
                        == t.variables.as_ref().map(|v| &v.name)
            };
            if !out.templated_policies.iter_mut().any(|o| same(&o)) {
                out.templated_policies.push(t.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, dcs: &[&str]) -> ServiceIdentity {
        ServiceIdentity {
            service_name: name.into(),
            datacenters: dcs.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_service_identity_becomes_consuls_synthetic_policy() {
        let p = svc("web", &[]).templated().synthetic().unwrap();
        assert_eq!(
            p.rules,
            "\nservice \"web\" {\n\tpolicy = \"write\"\n}\nservice \"web-sidecar-proxy\" {\n\tpolicy = \"write\"\n}\nservice_prefix \"\" {\n\tpolicy = \"read\"\n}\nnode_prefix \"\" {\n\tpolicy = \"read\"\n}"
        );
        // Consul's documented preview ID starts with the rules in hex.
        assert!(p.id.starts_with("0a73657276696365202277656222207"));
        assert!(p.id.ends_with("6c62272e07bb014262b821756295c58d"));
        assert_eq!(p.name, format!("synthetic-policy-{}", p.id));
        assert_eq!(
            p.description,
            "synthetic policy generated from templated policy: builtin/service"
        );
        crate::acl::Rules::parse(&p.rules).unwrap();
        for t in TEMPLATES {
            let tp = TemplatedPolicy {
                template_name: t.name.into(),
                variables: Some(TemplateVariables { name: "x".into() }),
                datacenters: vec![],
            };
            crate::acl::Rules::parse(&tp.synthetic().unwrap().rules).unwrap();
        }
    }

    #[test]
    fn identities_are_checked_as_consul_checks_them() {
        assert!(svc("web", &[]).validate(false).is_ok());
        assert!(svc("Web", &[])
            .validate(false)
            .unwrap_err()
            .contains("invalid name"));
        assert!(svc("-web", &[]).validate(false).is_err());
        assert!(svc("", &[])
            .validate(false)
            .unwrap_err()
            .contains("missing"));
        assert!(svc("web", &["dc1"])
            .validate(true)
            .unwrap_err()
            .contains("local token"));
        let node = |n: &str, dc: &str| NodeIdentity {
            node_name: n.into(),
            datacenter: dc.into(),
        };
        assert!(node("n1", "dc1").validate().is_ok());
        assert!(node("n1", "")
            .validate()
            .unwrap_err()
            .contains("datacenter"));
        let tp = |name: &str, var: Option<&str>| TemplatedPolicy {
            template_name: name.into(),
            variables: var.map(|v| TemplateVariables { name: v.into() }),
            datacenters: vec![],
        };
        assert!(tp("builtin/dns", None).validate(false).is_ok());
        assert!(tp("builtin/nope", None)
            .validate(false)
            .unwrap_err()
            .contains("does not exist"));
        assert!(tp("builtin/service", None)
            .validate(false)
            .unwrap_err()
            .contains("name is required"));
        assert!(tp("builtin/service", Some("")).validate(false).is_err());
        assert!(tp("builtin/service", Some("api")).validate(false).is_ok());
    }

    #[test]
    fn repeats_merge_and_datacenters_limit_where_they_apply() {
        let ids = Identities {
            service_identities: vec![svc("web", &["dc1"]), svc("web", &["dc2"]), svc("db", &[])],
            node_identities: vec![NodeIdentity {
                node_name: "n1".into(),
                datacenter: "dc1".into(),
            }],
            templated_policies: vec![],
        }
        .validated(false)
        .unwrap();
        assert_eq!(ids.service_identities.len(), 2);
        assert_eq!(ids.service_identities[0].datacenters, vec!["dc1", "dc2"]);
        // dc1: web, db and the node; dc3: only db.
        assert_eq!(ids.synthetic_policies("dc1").len(), 3);
        assert_eq!(ids.synthetic_policies("dc3").len(), 1);
    }
}
