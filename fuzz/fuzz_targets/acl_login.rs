//! Logins: any bearer token, auth-method config, binding-rule selector or
//! bind name is taken or refused with an error, never a panic. The first
//! byte picks which; the rest is the input.
#![no_main]
use cairn::acl::auth::{Claims, JwtConfig};
use cairn::acl::{AuthMethod, BindingRule};
use libfuzzer_sys::fuzz_target;

/// A fixed P-256 public key (any key will do: signatures fail to verify,
/// and everything before that is what is fuzzed).
const PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE+IZqjrocKdkN2UlLvOMrbzgmZNiT
Cv/dE5bBxnwDoyehUbBG90iy5l6nQML4d0CgIKOe9VuJ0spVBRa6YCeUrw==
-----END PUBLIC KEY-----";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let claims = Claims {
        values: [("svc".to_string(), text.to_string())].into(),
        lists: [("groups".to_string(), vec![text.to_string()])].into(),
    };
    match mode % 4 {
        0 => {
            let config = serde_json::json!({
                "JWTValidationPubKeys": [PUBLIC],
                "JWTSupportedAlgs": ["ES256", "RS256", "EdDSA"],
                "ClaimMappings": {"sub": "svc"},
            });
            let c = JwtConfig::parse(&config).expect("the fixed config is valid");
            let _ = c.verify(text, 1_800_000_000_000);
        }
        1 => {
            if let Ok(config) = serde_json::from_str(text) {
                let m = AuthMethod {
                    name: "m".into(),
                    method_type: "jwt".into(),
                    config,
                    ..AuthMethod::default()
                };
                let _ = m.validate();
            }
        }
        2 | 3 => {
            let rule = BindingRule {
                auth_method: "m".into(),
                selector: if mode % 4 == 2 { text.into() } else { String::new() },
                bind_type: "service".into(),
                bind_name: if mode % 4 == 3 { text.into() } else { "x".into() },
                ..BindingRule::default()
            };
            if rule.validate().is_ok() && rule.selects(&claims) {
                let mut out = Default::default();
                let _ = rule.bind(&claims, "dc1", &mut out);
            }
        }
        _ => unreachable!(),
    }
});
