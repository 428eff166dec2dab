//! Agent config files, HCL and JSON: any text merges into a configuration
//! or gives an error naming the file and key, never a panic; what merges
//! is then validated.
#![no_main]
use cairn::agent::AgentConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["fuzz.hcl", "fuzz.json"] {
        let mut c = AgentConfig::dev();
        if c.merge_text(std::path::Path::new(name), text).is_ok() {
            let _ = c.validate();
            let _ = c.raft_config();
        }
    }
});
