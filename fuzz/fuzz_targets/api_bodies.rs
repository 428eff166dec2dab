//! HTTP request bodies: every body the API decodes, and what its handler
//! makes of it before anything reaches the servers, is taken or refused
//! with a 4xx, never a panic nor a 500 (see `cairn::api::fuzzing`). The
//! first byte picks the decoder; the rest is the body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    cairn::api::fuzzing::body(mode, body);
});
