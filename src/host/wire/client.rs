//! The network process's end: [`Client`] sends each call as a frame with a fresh
//! id and waits for the answer with that id; one reader task takes every
//! incoming frame and hands each answer to its caller (many calls are in flight
//! at once, one per connection's step). When the link dies every pending call
//! and every later one fails with [`HostError::Link`].

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::socket::{Link, LinkError};
use super::{Frame, Notice};
use crate::host::HostError;
use crate::host::api::{Reply, Request, Response};

type Answer = Result<(Response, Vec<OwnedFd>), HostError>;

/// The monitor's notices, in the order it sent them.
/// The monitor's notices, each with the descriptors it carries.
pub(crate) type Notices = mpsc::UnboundedReceiver<(Notice, Vec<OwnedFd>)>;

/// Calls waiting for their answers; `dead` once the link is gone, with why.
#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    dead: Option<String>,
}

struct Shared {
    link: Link,
    pending: Mutex<Pending>,
    next: AtomicU64,
    round_trips: AtomicU64,
}

/// The client; cheap to clone, every clone is the same link.
#[derive(Clone)]
pub(crate) struct Client(Arc<Shared>);

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// A client over `fd` (the network process's end of the socketpair), with its
    /// reader task on the current tokio runtime, and the monitor's notices.
    pub(crate) fn new(fd: OwnedFd) -> std::io::Result<(Client, Notices)> {
        let shared = Arc::new(Shared {
            link: Link::new(fd)?,
            pending: Mutex::new(Pending::default()),
            next: AtomicU64::new(1),
            round_trips: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(read(Arc::clone(&shared), tx));
        Ok((Client(shared), rx))
    }

    /// Calls answered or failed so far (one datagram each way per call): the
    /// IPC round trips a login costs, for tests and benchmarks.
    pub(crate) fn round_trips(&self) -> u64 {
        self.0.round_trips.load(Ordering::Relaxed)
    }

    /// Serve `request` (with `fds`) in the monitor.
    pub(crate) async fn call(
        &self,
        request: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<Reply, HostError> {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.0.pending);
            if let Some(why) = &p.dead {
                return Err(HostError::Link(why.clone()));
            }
            p.waiting.insert(id, tx);
        }
        let frame = Frame::Call {
            id,
            fds: fds.len(),
            request,
        };
        let sent = self.0.link.send(&frame, &fds).await;
        // Ours are copies: the monitor has its own now.
        drop(fds);
        if let Err(e) = sent {
            lock(&self.0.pending).waiting.remove(&id);
            return Err(match e {
                // A request that cannot be a frame: this call fails, the link lives.
                LinkError::Protocol(p) => HostError::NotPermitted(format!("request: {p}")),
                LinkError::Io(io) => {
                    let why = format!("link to the monitor failed: {io}");
                    fail_all(&self.0, &why);
                    HostError::Link(why)
                }
            });
        }
        let answer = rx.await.map_err(|_| {
            HostError::Link(
                lock(&self.0.pending)
                    .dead
                    .clone()
                    .unwrap_or_else(|| "link to the monitor closed".into()),
            )
        });
        self.0.round_trips.fetch_add(1, Ordering::Relaxed);
        let (response, fds) = answer??;
        Ok(Reply { response, fds })
    }
}

/// Mark the link dead and fail every call waiting on it.
fn fail_all(shared: &Shared, why: &str) {
    let waiting = {
        let mut p = lock(&shared.pending);
        p.dead.get_or_insert_with(|| why.to_string());
        std::mem::take(&mut p.waiting)
    };
    for (_, tx) in waiting {
        let _ = tx.send(Err(HostError::Link(why.to_string())));
    }
}

/// The reader task: answers to their callers, notices to `notices`, until the
/// link ends or the monitor sends something that is not for this side.
async fn read(shared: Arc<Shared>, notices: mpsc::UnboundedSender<(Notice, Vec<OwnedFd>)>) {
    let mut buf = Vec::new();
    let why = loop {
        match shared.link.recv(&mut buf).await {
            Ok(None) => break "the monitor closed the link".to_string(),
            Ok(Some((Frame::Answer { id, answer, .. }, fds))) => {
                let tx = lock(&shared.pending).waiting.remove(&id);
                match tx {
                    Some(tx) => {
                        let _ = tx.send(answer.map(|r| (r, fds)).map_err(HostError::from));
                    }
                    None => break format!("the monitor answered call {id}, which is not waiting"),
                }
            }
            Ok(Some((Frame::Notice(n), fds))) => {
                let _ = notices.send((n, fds));
            }
            Ok(Some((f, _))) => break format!("protocol error: a {} frame", f.kind()),
            Err(e) => break format!("protocol error: {e}"),
        }
    };
    tracing::error!("host link: {why}");
    fail_all(&shared, &why);
}
