//! Gossip encryption: any bytes, as a datagram or a stream message, open
//! to a message or an error, never a panic.
#![no_main]
use cairn::gossip::keyring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = [vec![1u8; 16], vec![2u8; 24], vec![3u8; 32]];
    let _ = keyring::open(&keys, data, &[]);
    if data.len() >= 5 {
        let _ = keyring::open(&keys, &data[5..], &data[..5]);
    }
    // What is sealed opens to itself.
    let sealed = keyring::seal(&keys[2], &[7; 12], data, b"aad");
    assert_eq!(keyring::open(&keys, &sealed, b"aad").as_deref(), Ok(data));
});
