//! Request bodies in any of the spellings Consul accepts. Consul decodes
//! JSON field names case-insensitively and takes snake_case aliases
//! (`service_id` for `ServiceID`), so clients send `Name`, `name` or
//! `NAME` alike; cairn's types use Consul's canonical PascalCase, and this
//! module rewrites a body's keys to it before decoding. The keys of
//! user-defined maps (`Meta`, `NodeMeta`, `TaggedAddresses`) are data, not
//! field names, and are left as they are.

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::ApiError;

/// Every field name the API decodes, in Consul's spelling.
const FIELDS: &[&str] = &[
    "Address",
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
    "Kind",
    "LockDelay",
    "Meta",
    "Name",
    "Node",
    "NodeChecks",
    "NodeMeta",
    "Notes",
    "Output",
    "Port",
    "Service",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "SkipNodeUpdate",
    "Status",
    "TCP",
    "TTL",
    "TaggedAddresses",
    "Tags",
    "Type",
];

/// Fields whose value is a map of the user's own keys.
const USER_MAPS: &[&str] = &["Meta", "NodeMeta", "TaggedAddresses"];

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

fn normalize(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let name = canonical(&k).map_or(k, str::to_owned);
                let v = if USER_MAPS.contains(&name.as_str()) {
                    v
                } else {
                    normalize(v)
                };
                out.insert(name, v);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

/// Decodes a request body, whatever the case of its field names.
pub fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let fail = |e: serde_json::Error| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("Request decode failed: {e}"),
        )
    };
    let v: Value = serde_json::from_slice(bytes).map_err(fail)?;
    serde_json::from_value(normalize(v)).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn any_spelling_of_a_field_is_consuls_and_user_keys_stay() {
        let v = normalize(json!({
            "name": "web", "service_id": "w1", "TTL": "10s", "ttl": "x",
            "meta": {"Owner": "ops", "service_id": "kept"},
            "checks": [{"checkid": "a", "http": "http://x"}],
            "Unknown_Key": 1
        }));
        assert_eq!(v["Name"], "web");
        assert_eq!(v["ServiceID"], "w1");
        assert_eq!(v["Meta"], json!({"Owner": "ops", "service_id": "kept"}));
        assert_eq!(v["Checks"][0], json!({"CheckID": "a", "HTTP": "http://x"}));
        assert_eq!(v["Unknown_Key"], 1);
    }

    #[test]
    fn bad_json_is_a_400() {
        let e = body::<Value>(b"{nope").unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert!(e.1.starts_with("Request decode failed"));
    }
}
