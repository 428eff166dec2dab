//! Scenario files: any text is a scenario or an error that says where,
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    if let Ok(s) = cairn_sim::Scenario::parse_in("fuzz.toml", text, &dir) {
        // Every selector resolves, for any seed.
        let _ = s.timeline(1);
    }
});
