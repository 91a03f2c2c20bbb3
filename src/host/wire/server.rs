//! The monitor's end: [`serve`] reads the network process's calls and serves
//! each in its own task against the in-process service, so a slow one (a PAM
//! conversation waiting on its module, a long-poll) holds up nobody else; the
//! number in flight is bounded, and when the bound is reached the monitor stops
//! reading until one finishes. A frame that is not a well-formed call ends the
//! link: the monitor logs it and drops the peer (the process split then ends and
//! replaces the network process).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::socket::{Link, LinkError};
use super::{Frame, Notice, ProtocolError, WireError};
use crate::host::api::Request;
use crate::host::service::Service;

/// Bounds of the serving loop: what a compromised network process can make the
/// monitor hold at once. When one is reached the monitor reads no further call
/// until a call of that class finishes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeOptions {
    /// Ordinary calls served at once (authentication steps, spawns, sockets):
    /// each is a task of a few kilobytes while it runs.
    pub(crate) max_in_flight: usize,
    /// Long polls pending at once: a `Wait` lasts as long as its program, a
    /// `HangUp` up to the hang-up grace, an `Accept` as long as the user's
    /// accept takes. One `Wait` per live session program, so this bounds the
    /// sessions the monitor can serve (10,000 connections with a few sessions
    /// each fit); the host keeps a waiting call's future small (boxed).
    pub(crate) max_long_polls: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_in_flight: 4096,
            max_long_polls: 65_536,
        }
    }
}

/// Calls answered only when something outside the request happens.
fn long_poll(r: &Request) -> bool {
    matches!(
        r,
        Request::Wait { .. } | Request::HangUp { .. } | Request::Accept { .. }
    )
}

/// How the serving loop ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeEnd {
    #[error("the network process closed the link")]
    Closed,
    #[error("{0}")]
    Io(std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
}

/// Sends the monitor's notices on the link [`serve`] runs on.
#[derive(Clone)]
pub(crate) struct Notifier(Arc<Link>);

impl Notifier {
    pub(crate) async fn send(&self, notice: Notice, fds: Vec<OwnedFd>) -> Result<(), LinkError> {
        self.0.send(&Frame::Notice(notice), &fds).await
    }
}

/// The serving loop over `fd` (the monitor's end of the socketpair), and the
/// notifier for the same link. Needs a tokio runtime.
pub(crate) fn serve(
    service: Service,
    fd: OwnedFd,
    options: ServeOptions,
) -> std::io::Result<(
    impl std::future::Future<Output = ServeEnd> + Send + 'static,
    Notifier,
)> {
    let link = Arc::new(Link::new(fd)?);
    let notifier = Notifier(Arc::clone(&link));
    Ok((run(service, link, options), notifier))
}

async fn run(service: Service, link: Arc<Link>, options: ServeOptions) -> ServeEnd {
    let short = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let long = Arc::new(Semaphore::new(options.max_long_polls.max(1)));
    let mut buf = Vec::new();
    let end = loop {
        let (id, request, fds) = match link.recv(&mut buf).await {
            Ok(None) => break ServeEnd::Closed,
            Ok(Some((Frame::Call { id, request, .. }, fds))) => (id, request, fds),
            Ok(Some((f, _))) => break ServeEnd::Protocol(ProtocolError::WrongKind(f.kind())),
            Err(LinkError::Io(e)) => break ServeEnd::Io(e),
            Err(LinkError::Protocol(p)) => break ServeEnd::Protocol(p),
        };
        let class = if long_poll(&request) { &long } else { &short };
        let Ok(slot) = Arc::clone(class).acquire_owned().await else {
            break ServeEnd::Closed;
        };
        let (service, link) = (service.clone(), Arc::clone(&link));
        tokio::spawn(async move {
            answer(&service, &link, id, request, fds).await;
            drop(slot);
        });
    };
    // The peer is dropped even while a notifier or a call being served still
    // holds the link: it reads end of stream and can send nothing more.
    link.shut_down();
    match &end {
        ServeEnd::Closed => tracing::info!("monitor: the network process closed its link"),
        ServeEnd::Protocol(p) => {
            tracing::error!("monitor: refused frame from network process: {p}; dropping the link")
        }
        ServeEnd::Io(e) => tracing::error!("monitor: link to the network process failed: {e}"),
    }
    end
}

/// Serve one call and send its answer. An answer that cannot be sent as it is
/// (too long for a frame) is sent as an error; one that cannot be sent at all
/// (the link is gone) is dropped with its descriptors.
async fn answer(service: &Service, link: &Link, id: u64, request: Request, fds: Vec<OwnedFd>) {
    let (answer, fds) = match service.call(request, fds).await {
        Ok(reply) => (Ok(reply.response), reply.fds),
        Err(e) => (Err(WireError::from(&e)), Vec::new()),
    };
    let frame = Frame::Answer {
        id,
        fds: fds.len(),
        answer,
    };
    if let Err(LinkError::Protocol(p)) = link.send(&frame, &fds).await {
        tracing::error!("monitor: answer to call {id} not sent: {p}");
        let frame = Frame::Answer {
            id,
            fds: 0,
            answer: Err(WireError {
                kind: super::ErrorKind::NotPermitted,
                message: format!("answer not sent: {p}"),
            }),
        };
        let _ = link.send(&frame, &[]).await;
    }
}
