//! The control socket's requests, read and decided as `src/admin/server.rs` does.

use rsshd::admin::protocol::{Command, Request, Response, VERSION};
use rsshd::admin::server::{REQUEST_LIMIT, parse_request};

/// The input is what a caller writes to the socket. The daemon reads one line of at
/// most `REQUEST_LIMIT` bytes (no answer when it is not UTF-8), then decides. Oracles:
/// a request that was accepted, written back, is accepted as the same command; a
/// refusal is answered with one line of JSON that reads back as the same response.
pub fn control(data: &[u8]) {
    let capped = &data[..data.len().min(REQUEST_LIMIT)];
    let line = match capped.iter().position(|&b| b == b'\n') {
        Some(i) => &capped[..=i],
        None => capped,
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return;
    };
    match parse_request(line) {
        Ok(command) => {
            let again = serde_json::to_string(&Request {
                version: VERSION,
                command: command.clone(),
            })
            .expect("a request serialises");
            assert_eq!(parse_request(&again), Ok(command), "through {again:?}");
        }
        Err(text) => {
            let response = Response::error(text);
            let wire = serde_json::to_string(&response).expect("a response serialises");
            assert!(
                !wire.contains('\n'),
                "a response must be one line: {wire:?}"
            );
            let back: Response = serde_json::from_str(&wire).expect("a response reads back");
            assert_eq!(back, response);
        }
    }
    // The client's side: what `rsshd sessions` sends for each command parses.
    for command in [
        Command::List,
        Command::Kill {
            id: u64::from(line.len() as u32),
            reason: Some(line.to_string()),
        },
    ] {
        let wire = serde_json::to_string(&Request {
            version: VERSION,
            command: command.clone(),
        })
        .expect("a request serialises");
        assert_eq!(parse_request(&wire), Ok(command));
    }
}
