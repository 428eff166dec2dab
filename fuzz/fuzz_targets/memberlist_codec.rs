//! memberlist's wire format: any datagram (compound, compressed, with a
//! CRC, or not) and any stream message decode to messages or errors,
//! never a panic; what decodes re-encodes and decodes to itself.
#![no_main]
use cairn::gossip::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wire::decode_packet(data, &mut |m| {
        if let Ok(m) = m {
            let again = m.to_bytes();
            let mut back = Vec::new();
            wire::decode_packet(&again, &mut |x| back.push(x));
            assert_eq!(back.len(), 1, "a decoded message re-encodes to one");
        }
    });
    let _ = wire::decode_stream(data);
    let mut d = wire::StreamDecoder::default();
    let _ = d.decode(data);
});
