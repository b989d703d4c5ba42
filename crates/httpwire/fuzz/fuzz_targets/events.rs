//! Whatever an agent streams as server-sent events, in whatever pieces it
//! arrives: nothing may panic, the events found do not depend on where the
//! stream was cut, and no event's data outgrows the limit.
#![no_main]

use agentmesh_httpwire::sse::Parser;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fuzz_target!(|input: (Vec<u8>, Vec<u16>)| {
    let (stream, cuts) = input;
    let whole = Parser::new(LIMIT).push(&stream);

    let mut cut_at: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % (stream.len() + 1)).collect();
    cut_at.sort_unstable();
    let mut parser = Parser::new(LIMIT);
    let mut pieced = Ok(Vec::new());
    let mut start = 0;
    for end in cut_at.into_iter().chain([stream.len()]) {
        let events = parser.push(&stream[start..end]);
        start = end;
        match (&mut pieced, events) {
            (Ok(all), Ok(events)) => all.extend(events),
            (_, Err(too_large)) => {
                pieced = Err(too_large);
                break;
            }
            (Err(_), _) => break,
        }
    }
    match (whole, pieced) {
        (Ok(whole), Ok(pieced)) => {
            assert_eq!(whole, pieced, "the events do not depend on where the stream was cut");
            assert!(whole.iter().all(|data| data.len() <= LIMIT));
        }
        // The limit counts what is held at once, which depends on the cuts.
        (_, _) => {}
    }
});
