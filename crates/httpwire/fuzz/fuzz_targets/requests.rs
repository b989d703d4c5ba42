//! Whatever bytes a caller sends, taken as the A2A listener takes them: a
//! head, its framing, its body, then the next request on the connection
//! (pipelining, where smuggled requests hide). Nothing may panic, no request
//! runs until the caller closes, a body framed by Content-Length is exactly
//! that long, and every piece of a body comes out of the buffer, so no byte
//! is read both as body and as the next request.
#![no_main]

use agentmesh_httpwire::wire::{BodyDecoder, Framing, RequestHead};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let mut buffer = BytesMut::from(input);
    loop {
        let before = buffer.len();
        let head = match RequestHead::parse(&mut buffer) {
            Ok(Some(head)) => head,
            Ok(None) | Err(_) => return,
        };
        assert!(buffer.len() < before, "a head takes at least one byte");
        let _ = (head.path(), head.query(), head.keep_alive(), head.expects_continue());
        let Ok(framing) = head.framing() else { return };
        assert!(!matches!(framing, Framing::UntilClose), "a request's body never runs until close");
        let mut decoder = BodyDecoder::new(framing);
        let mut body = 0u64;
        while !decoder.is_done() {
            let held = buffer.len();
            match decoder.decode(&mut buffer) {
                Ok(Some(piece)) => {
                    body += piece.len() as u64;
                    assert!(buffer.len() + piece.len() <= held, "a piece comes out of the buffer");
                }
                // The body is cut short or malformed: the connection ends.
                Ok(None) | Err(_) => return,
            }
        }
        if let Framing::Length(length) = framing {
            assert_eq!(body, length, "a Content-Length body is exactly that long");
        }
        if matches!(framing, Framing::Empty) {
            assert_eq!(body, 0);
        }
    }
});
