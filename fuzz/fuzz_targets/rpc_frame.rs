//! The server RPC framing: any byte stream reads as frames or an error,
//! and any frame decodes to a request (or reply) or an error, never a
//! panic, and never an allocation the bytes did not pay for.
#![no_main]
use cairn::rpc::{decode_envelope, read_frame};
use cairn::server::{ServerReply, ServerRpc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut r = data;
        while let Ok(Some(frame)) = read_frame(&mut r).await {
            let _ = decode_envelope::<ServerRpc>(&frame);
            let _ = decode_envelope::<ServerReply>(&frame);
        }
    });
    let _ = decode_envelope::<ServerRpc>(data);
});
