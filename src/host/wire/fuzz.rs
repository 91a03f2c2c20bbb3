//! The body of the `monitor_request` fuzz target (fuzz/): what a compromised
//! network process could send, decoded and served as the monitor does, against
//! a fresh in-process service per input.

use std::sync::{Arc, OnceLock};

use super::{Frame, WireError, decode, encode};
use crate::config::Config;
use crate::host::Privilege;
use crate::host::service::Service;

/// The fuzz service's configuration: no PAM, a key file that does not exist,
/// so nothing the input says reaches a real account's files or a program.
const CONFIG: &str = "UsePAM no\nStrictModes no\nPermitUserRC no\nUseDNS no\n\
AuthorizedKeysFile /nonexistent/rsshd-fuzz/%u\nPermitRootLogin no\n";

/// At most this many frames per input.
const MAX_FRAMES: usize = 16;

/// The input is a sequence of datagrams separated by newlines (compact JSON has
/// none), so a run can open a connection and then name it. Each goes through
/// the monitor's decoder; a call is served against the service and its answer
/// encoded as the monitor would send it. Oracles: no panic; a decoded frame
/// encodes and decodes to the same JSON; every answer is a frame the network
/// side decodes (an error answer when it is too long).
pub fn monitor_request(data: &[u8]) {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    static SETTINGS: OnceLock<Option<Arc<Config>>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
    });
    let config = SETTINGS.get_or_init(|| {
        Config::parse_str("fuzz.conf", CONFIG, &[])
            .ok()
            .map(|(c, _)| Arc::new(c))
    });
    let (Some(runtime), Some(config)) = (runtime, config) else {
        panic!("the fuzz service cannot start");
    };
    let service = Service::new(Privilege::current(), Arc::clone(config));
    runtime.block_on(async {
        for datagram in data.split(|b| *b == b'\n').take(MAX_FRAMES) {
            let Ok(frame) = decode(datagram, 0) else {
                continue;
            };
            let json = serde_json::to_value(&frame).expect("a decoded frame serialises");
            let again = encode(&frame).expect("a decoded frame encodes");
            let back = decode(&again, 0).expect("an encoded frame decodes");
            assert_eq!(
                serde_json::to_value(&back).expect("serialises"),
                json,
                "round trip"
            );
            let Frame::Call { id, request, .. } = frame else {
                continue;
            };
            let answer = match service.call(request, Vec::new()).await {
                Ok(reply) => Ok(reply.response),
                Err(e) => Err(WireError::from(&e)),
            };
            let frame = Frame::Answer { id, fds: 0, answer };
            let bytes = match encode(&frame) {
                Ok(b) => b,
                Err(_) => encode(&Frame::Answer {
                    id,
                    fds: 0,
                    answer: Err(WireError {
                        kind: super::ErrorKind::NotPermitted,
                        message: "answer too long".into(),
                    }),
                })
                .expect("an error answer encodes"),
            };
            let read = decode(&bytes, 0).expect("the network side reads every answer");
            assert!(matches!(read, Frame::Answer { id: i, .. } if i == id));
        }
    });
}
