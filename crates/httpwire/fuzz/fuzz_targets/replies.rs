//! Whatever bytes an agent answers with, taken as the gateway's agent leg
//! takes them: a head, its framing, its body, whole or until the agent
//! closes. Nothing may panic, and a Content-Length body is exactly that long.
#![no_main]

use agentmesh_httpwire::wire::{BodyDecoder, Framing, ResponseHead};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut buffer = BytesMut::from(input);
    let head = match ResponseHead::parse(&mut buffer) {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => return,
    };
    let _ = (head.keep_alive(), head.header("content-type"));
    let Ok(framing) = head.framing() else { return };
    let mut decoder = BodyDecoder::new(framing);
    let mut body = 0u64;
    while !decoder.is_done() {
        match decoder.decode(&mut buffer) {
            Ok(Some(piece)) => body += piece.len() as u64,
            Ok(None) => {
                // The agent closed: fine only for a body that ends so.
                if decoder.end_of_input().is_ok() {
                    assert!(matches!(framing, Framing::UntilClose) || decoder.is_done());
                }
                break;
            }
            Err(_) => return,
        }
    }
    if let (Framing::Length(length), true) = (framing, decoder.is_done()) {
        assert_eq!(body, length, "a Content-Length body is exactly that long");
    }
});
