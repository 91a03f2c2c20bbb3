//! Runs an [`Engine`] against the real clock for one connection.
//!
//! Frequent events (every keystroke, every output chunk, every packet) only store a
//! timestamp in an atomic, so the per-packet path takes no lock, sends no message and
//! allocates nothing; the driver folds those stamps into the engine when a deadline
//! comes up. Rare events (channel open/close, authentication, reload) are messages.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Action, Engine, Event, Policy};

/// When something last happened, as milliseconds since a base instant (0 = never).
#[derive(Debug)]
pub struct Stamp {
    base: Instant,
    millis: AtomicU64,
}

impl Stamp {
    pub fn new(base: Instant) -> Self {
        Stamp {
            base,
            millis: AtomicU64::new(0),
        }
    }

    /// Record "now"; the cost of one clock read and one relaxed store.
    pub fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64 + 1;
        self.millis.store(ms, Ordering::Relaxed);
    }

    fn read(&self) -> u64 {
        self.millis.load(Ordering::Relaxed)
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + std::time::Duration::from_millis(ms.saturating_sub(1))
    }
}

/// Input and output stamps of one channel.
#[derive(Debug)]
pub struct ChannelStamps {
    pub input: Stamp,
    pub output: Stamp,
}

impl ChannelStamps {
    pub fn new(base: Instant) -> Arc<Self> {
        Arc::new(ChannelStamps {
            input: Stamp::new(base),
            output: Stamp::new(base),
        })
    }
}

/// Messages to the driver.
#[derive(Debug)]
pub enum Msg {
    Event(Event),
    /// Start following a channel's stamps (sent with its `ChannelOpened`).
    Track {
        channel: u32,
        stamps: Arc<ChannelStamps>,
    },
}

/// The sending side, cloned into the handler and the channel tasks.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Msg>,
    pub base: Instant,
    /// Any bytes from the client: liveness.
    pub received: Arc<Stamp>,
}

impl Events {
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(Msg::Event(event));
    }

    /// Announce a channel and hand over its stamps.
    pub fn channel_opened(&self, channel: u32, kind: &str) -> Arc<ChannelStamps> {
        let stamps = ChannelStamps::new(self.base);
        let _ = self.tx.send(Msg::Track {
            channel,
            stamps: Arc::clone(&stamps),
        });
        self.send(Event::ChannelOpened {
            channel,
            kind: kind.to_string(),
        });
        stamps
    }
}

/// See the module docs.
pub struct Driver {
    engine: Engine,
    rx: mpsc::UnboundedReceiver<Msg>,
    received: Arc<Stamp>,
    seen_received: u64,
    channels: BTreeMap<u32, (Arc<ChannelStamps>, u64, u64)>,
    pending: VecDeque<Action>,
}

impl Driver {
    pub fn new(policy: Policy) -> (Driver, Events) {
        let base = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        let received = Arc::new(Stamp::new(base));
        let driver = Driver {
            engine: Engine::new(policy, base),
            rx,
            received: Arc::clone(&received),
            seen_received: 0,
            channels: BTreeMap::new(),
            pending: VecDeque::new(),
        };
        (driver, Events { tx, base, received })
    }

    /// The engine's current view, with the latest stamps folded in.
    pub fn snapshot(&mut self) -> super::Snapshot {
        self.sync();
        self.engine.snapshot()
    }

    /// Fold new stamps into the engine. They are only recorded: the caller then
    /// judges once, at the current time (see `Engine::record`).
    fn sync(&mut self) {
        let r = self.received.read();
        if r != self.seen_received {
            self.seen_received = r;
            let at = self.received.at(r);
            self.engine.record(Event::PacketReceived, at);
        }
        for (id, (stamps, seen_in, seen_out)) in self.channels.iter_mut() {
            let i = stamps.input.read();
            if i != *seen_in {
                *seen_in = i;
                let at = stamps.input.at(i);
                self.engine.record(Event::Input { channel: Some(*id) }, at);
            }
            let o = stamps.output.read();
            if o != *seen_out {
                *seen_out = o;
                let at = stamps.output.at(o);
                self.engine.record(Event::Output { channel: Some(*id) }, at);
            }
        }
    }

    fn apply(&mut self, msg: Msg) {
        match msg {
            Msg::Track { channel, stamps } => {
                self.channels.insert(channel, (stamps, 0, 0));
            }
            Msg::Event(event) => {
                if let Event::ChannelClosed { channel } = &event {
                    self.channels.remove(channel);
                }
                // Stamps first, so a reload or close is judged on current activity.
                self.sync();
                let now = Instant::now();
                self.pending.extend(self.engine.handle(event, now));
            }
        }
    }

    /// The next action to carry out. Cancel-safe: all state lives in `self`.
    /// Pending forever once every sender is gone and nothing is due.
    pub async fn next(&mut self) -> Action {
        loop {
            if let Some(a) = self.pending.pop_front() {
                return a;
            }
            let deadline = self.engine.next_deadline();
            tokio::select! {
                msg = self.rx.recv(), if !self.rx.is_closed() || !self.rx.is_empty() => {
                    if let Some(msg) = msg {
                        self.apply(msg);
                    }
                }
                _ = sleep_opt(deadline) => {
                    self.sync();
                    let now = Instant::now();
                    self.pending.extend(self.engine.poll(now));
                }
            }
        }
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifetime::Ending;
    use std::time::Duration;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_disconnect_on_the_paused_clock() {
        let policy = Policy {
            idle_timeout: Some(s(300)),
            idle_warning: Some(s(60)),
            ..Policy::default()
        };
        let (mut d, events) = Driver::new(policy);
        let start = Instant::now();
        events.send(Event::Authenticated);
        let stamps = events.channel_opened(0, "session:shell");
        // Typing at 100 s moves everything out by 100 s.
        tokio::time::advance(s(100)).await;
        stamps.input.touch();
        let a = d.next().await;
        assert!(matches!(a, Action::Warn(_)), "{a:?}");
        assert_eq!(Instant::now() - start, s(340));
        let a = d.next().await;
        assert_eq!(a, Action::Disconnect(Ending::Idle { after: s(300) }));
        assert_eq!(Instant::now() - start, s(400));
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_traffic_does_not_extend_idle() {
        let policy = Policy {
            idle_timeout: Some(s(3)),
            ..Policy::default()
        };
        let (mut d, events) = Driver::new(policy);
        let start = Instant::now();
        events.send(Event::Authenticated);
        let stamps = events.channel_opened(0, "session:shell");
        let received = Arc::clone(&events.received);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                received.touch();
                stamps.output.touch();
            }
        });
        let a = d.next().await;
        assert_eq!(a, Action::Disconnect(Ending::Idle { after: s(3) }));
        assert_eq!(Instant::now() - start, s(3));
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_probes_then_gives_up() {
        let policy = Policy {
            probe_interval: Some(s(1)),
            probe_max: 2,
            ..Policy::default()
        };
        let (mut d, events) = Driver::new(policy);
        let start = Instant::now();
        events.send(Event::Authenticated);
        assert_eq!(d.next().await, Action::SendProbe);
        assert_eq!(d.next().await, Action::SendProbe);
        assert_eq!(d.next().await, Action::Disconnect(Ending::NotResponding));
        assert_eq!(Instant::now() - start, s(3));
    }
}
