//! ACL rules, HCL and JSON: any text parses into rules or is refused with
//! an error naming the rule, never a panic; parsed rules then decide
//! (an authorizer built from them answers for any name).
#![no_main]
use cairn::acl::{Access, Authorizer, Global, Resource, Rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rules) = Rules::parse(text) else {
        return;
    };
    let z = Authorizer::new("fuzz", [&rules], false, false);
    // Names taken from the rules themselves reach the exact and prefix
    // paths; a name cut mid-way reaches the prefix walk.
    for names in rules.exact.values().chain(rules.prefix.values()) {
        for name in names.keys() {
            for res in Resource::ALL {
                let _ = z.allows(res, name, Access::Read);
                let cut: String = name.chars().take(name.chars().count() / 2).collect();
                let _ = z.allows(res, &cut, Access::Write);
            }
            let _ = z.allows_intention(name, Access::Write);
            let _ = z.allows_key_write_prefix(name);
        }
    }
    for g in Global::ALL {
        let _ = z.allows_global(g, Access::Write);
    }
});
