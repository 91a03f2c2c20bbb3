//! A bound on how many unauthenticated connections do protocol work at once.
//!
//! Every connection's protocol runs in one russh task on the same tokio workers,
//! and a key exchange is a few hundred microseconds of CPU in one poll. Under a
//! handshake flood, dozens of them are runnable at any moment, and a logged-in
//! user's keystroke waits behind all of them at every hop of its round trip
//! (measured: echo p50 24 ms, p99 67 ms at MaxStartups 10:30:100 while rsshd used
//! half a core; with at most 2 connections unauthenticated: 1.2 / 8.6 ms).
//!
//! So an unauthenticated connection must hold a permit while russh works on what
//! it read: the permit is taken when its socket has data and before the data is
//! handed over, and given back when russh comes back for more, when a write has to
//! wait for the client, or when the handler is called (which may then wait on PAM
//! or files, and must not hold others up meanwhile). Logged-in connections never
//! take one. Waiting connections wait in their kernel socket buffers, in order.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// How many unauthenticated connections may work at once: all workers but one,
/// so one is always free for established sessions (at least one).
pub(crate) fn default_width() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

/// One connection's place at the gate, shared by its stream (which takes the
/// permit) and its handler state (which gives it back and opens the gate at login).
pub(crate) struct Ticket {
    gate: Arc<Semaphore>,
    held: Mutex<Option<OwnedSemaphorePermit>>,
    open: AtomicBool,
}

impl Ticket {
    pub(crate) fn new(gate: Arc<Semaphore>) -> Arc<Self> {
        Arc::new(Ticket {
            gate,
            held: Mutex::new(None),
            open: AtomicBool::new(false),
        })
    }

    /// Whether the connection is still held to the gate.
    pub(crate) fn gated(&self) -> bool {
        !self.open.load(Ordering::Relaxed)
    }

    /// Give the permit back, if held.
    pub(crate) fn release(&self) {
        if let Ok(mut h) = self.held.lock() {
            h.take();
        }
    }

    /// The connection logged in: no more gating.
    pub(crate) fn open(&self) {
        self.open.store(true, Ordering::Relaxed);
        self.release();
    }

    fn hold(&self, permit: OwnedSemaphorePermit) {
        if let Ok(mut h) = self.held.lock() {
            *h = Some(permit);
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// The stream's side: a ticket and the wait for a permit in progress.
pub(crate) struct Waiter {
    ticket: Arc<Ticket>,
    acquiring: Option<Acquire>,
}

impl Waiter {
    pub(crate) fn new(ticket: Arc<Ticket>) -> Self {
        Waiter {
            ticket,
            acquiring: None,
        }
    }

    pub(crate) fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// Wait for a permit and hold it. Ready at once once the gate is open.
    pub(crate) fn poll_enter(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.ticket.gated() {
            self.acquiring = None;
            return Poll::Ready(());
        }
        let gate = Arc::clone(&self.ticket.gate);
        let fut = self
            .acquiring
            .get_or_insert_with(|| Box::pin(gate.acquire_owned()));
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.acquiring = None;
                // The semaphore is never closed; if it were, let the work through.
                if let Ok(p) = r {
                    self.ticket.hold(p);
                }
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_are_bounded_released_and_unneeded_after_login() {
        let gate = Arc::new(Semaphore::new(1));
        let (a, b) = (
            Ticket::new(Arc::clone(&gate)),
            Ticket::new(Arc::clone(&gate)),
        );
        let (mut wa, mut wb) = (Waiter::new(Arc::clone(&a)), Waiter::new(Arc::clone(&b)));
        std::future::poll_fn(|cx| wa.poll_enter(cx)).await;
        assert_eq!(gate.available_permits(), 0);
        let waker = futures_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(wb.poll_enter(&mut cx).is_pending(), "second waits");
        a.release();
        assert!(wb.poll_enter(&mut cx).is_ready(), "admitted once released");
        // A logged-in connection passes without a permit, and gives its own back.
        b.open();
        assert_eq!(gate.available_permits(), 1);
        assert!(wb.poll_enter(&mut cx).is_ready());
        assert_eq!(gate.available_permits(), 1);
    }

    fn futures_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
