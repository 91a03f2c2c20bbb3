//! The lifetime engine: a plain state machine, one per connection. Events go in
//! with the time they happened, actions come out; the caller owns the clock and the
//! sockets. All timer logic of rsshd lives here, so it can be tested exactly.

use std::time::Duration;

use tokio::time::Instant;

use super::policy::Policy;
use crate::log::human_duration;

/// Something that happened on the connection. Times may be fed late and out of
/// order (the driver batches frequent events); the engine keeps the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client authenticated: idle and unused timers start, login grace ends.
    Authenticated,
    /// A person's input: channel data or a signal from the client.
    Input {
        channel: Option<u32>,
    },
    /// Data the server sent on a channel.
    Output {
        channel: Option<u32>,
    },
    /// Any packet from the client, keepalives and answers to our probes
    /// included: the client is alive.
    PacketReceived,
    ChannelOpened {
        channel: u32,
        kind: String,
    },
    ChannelClosed {
        channel: u32,
    },
    /// A reload gave this connection a new policy.
    /// Boxed: rare, and it would otherwise size every event in the driver's queue.
    PolicyReplaced(Box<Policy>),
}

/// Why the engine ends a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    LoginGrace,
    NotResponding,
    Idle {
        after: Duration,
    },
    Unused {
        after: Duration,
    },
    /// `rsshd kill ID --reason TEXT`.
    Killed {
        reason: String,
    },
    /// SIGTERM: the daemon is stopping.
    Shutdown,
}

impl Ending {
    /// The line shown to the user on each PTY and in SSH_MSG_DISCONNECT.
    pub fn user_text(&self) -> String {
        match self {
            Ending::LoginGrace => "rsshd: login grace time exceeded".into(),
            Ending::NotResponding => "rsshd: client not responding".into(),
            Ending::Idle { after } => {
                format!(
                    "rsshd: disconnected after {} without input",
                    human_duration(*after)
                )
            }
            Ending::Unused { after } => format!(
                "rsshd: disconnected after {} without an open channel",
                human_duration(*after)
            ),
            Ending::Killed { reason } => format!("rsshd: {reason}"),
            Ending::Shutdown => "rsshd: server shutting down".into(),
        }
    }
}

/// The engine's view of a connection at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub last_input: Instant,
    /// When the connection will be idle-disconnected, if it stays idle.
    pub idle_deadline: Option<Instant>,
    /// When the idle warning will be written, if not yet.
    pub warn_at: Option<Instant>,
    /// When the next liveness probe is due.
    pub next_probe: Option<Instant>,
    /// When the connection will be dropped for having no channel (if it has none).
    pub unused_deadline: Option<Instant>,
    /// Before authentication: when the login grace time runs out.
    pub login_deadline: Option<Instant>,
    pub policy: Policy,
}

/// What the caller must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a liveness probe (keepalive with want-reply).
    SendProbe,
    /// Write this line to every PTY of the connection.
    Warn(String),
    /// End the connection for this reason (the engine does nothing more after it).
    Disconnect(Ending),
    /// Close one channel (ChannelTimeout).
    CloseChannel(u32),
}

#[derive(Debug)]
struct ChannelState {
    kind: String,
    last_traffic: Instant,
    closing: bool,
}

/// Open channels by id, kept sorted. A connection has one or a few channels, and a
/// BTreeMap's first node alone is half a kilobyte on every connection.
#[derive(Debug, Default)]
struct ChannelTable(Vec<(u32, ChannelState)>);

impl ChannelTable {
    fn insert(&mut self, id: u32, state: ChannelState) {
        match self.0.binary_search_by_key(&id, |(i, _)| *i) {
            Ok(at) => self.0[at].1 = state,
            Err(at) => self.0.insert(at, (id, state)),
        }
    }

    fn remove(&mut self, id: u32) {
        if let Ok(at) = self.0.binary_search_by_key(&id, |(i, _)| *i) {
            self.0.remove(at);
        }
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut ChannelState> {
        let at = self.0.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        Some(&mut self.0[at].1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &ChannelState> {
        self.0.iter().map(|(_, c)| c)
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &ChannelState)> {
        self.0.iter().map(|(i, c)| (*i, c))
    }
}

/// Per-connection lifetime state; see the module docs.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    started: Instant,
    authenticated: bool,
    /// Idle basis: last input, or last input-or-output under `IdleActivity input,output`.
    last_activity: Instant,
    /// Last input proper, whatever counts for idleness (what `sessions` shows as IDLE).
    last_input: Instant,
    warned_at: Option<Instant>,
    /// Liveness: when we last heard anything, and probes sent since.
    last_received: Instant,
    next_probe: Option<Instant>,
    unanswered: u32,
    channels: ChannelTable,
    last_channel_traffic: Instant,
    /// Since when the connection has had no open channel (after authentication).
    unused_since: Option<Instant>,
    done: bool,
}

impl Engine {
    pub fn new(policy: Policy, now: Instant) -> Self {
        let mut e = Engine {
            next_probe: None,
            policy,
            started: now,
            authenticated: false,
            last_activity: now,
            last_input: now,
            warned_at: None,
            last_received: now,
            unanswered: 0,
            channels: ChannelTable::default(),
            last_channel_traffic: now,
            unused_since: None,
            done: false,
        };
        e.next_probe = e.policy.probe_interval.map(|i| now + i);
        e
    }

    /// Feed one event; returns what must happen now.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        if self.done {
            return Vec::new();
        }
        self.record(event, now);
        self.poll(now)
    }

    /// Take an event that happened at `at` into account without judging yet.
    ///
    /// Stamps are read in batches (the packet, then each channel's input and
    /// output), and the packet that carries a keystroke is stamped a moment
    /// before the keystroke is. Judging after each one would end a session for
    /// idleness on the packet's stamp while its input sat in the same batch; so
    /// a batch is recorded first and judged once, at the current time.
    pub fn record(&mut self, event: Event, at: Instant) {
        if self.done {
            return;
        }
        let now = at;
        match event {
            Event::Authenticated => {
                self.authenticated = true;
                self.last_activity = now;
                self.last_input = now;
                self.last_channel_traffic = now;
                if self.channels.is_empty() {
                    self.unused_since = Some(now);
                }
            }
            Event::Input { channel } => {
                self.last_activity = self.last_activity.max(now);
                self.last_input = self.last_input.max(now);
                self.warned_at = None;
                self.channel_traffic(channel, now);
            }
            Event::Output { channel } => {
                if self.policy.output_is_activity {
                    self.last_activity = self.last_activity.max(now);
                    self.warned_at = None;
                }
                self.channel_traffic(channel, now);
            }
            Event::PacketReceived => {
                self.last_received = self.last_received.max(now);
                self.unanswered = 0;
                self.next_probe = self.policy.probe_interval.map(|i| self.last_received + i);
            }
            Event::ChannelOpened { channel, kind } => {
                self.channels.insert(
                    channel,
                    ChannelState {
                        kind,
                        last_traffic: now,
                        closing: false,
                    },
                );
                self.last_channel_traffic = now;
                self.unused_since = None;
            }
            Event::ChannelClosed { channel } => {
                self.channels.remove(channel);
                if self.channels.is_empty() && self.authenticated {
                    self.unused_since = Some(now);
                }
            }
            Event::PolicyReplaced(policy) => {
                let policy = *policy;
                if policy.probe_interval != self.policy.probe_interval {
                    // Silent longer than the new interval already: probe at once.
                    self.next_probe = policy
                        .probe_interval
                        .map(|i| (self.last_received + i).max(now));
                    self.unanswered = 0;
                }
                self.policy = policy;
                // A warning given under the old policy no longer says the truth.
                self.warned_at = None;
            }
        }
    }

    fn channel_traffic(&mut self, channel: Option<u32>, now: Instant) {
        if let Some(c) = channel.and_then(|c| self.channels.get_mut(c)) {
            c.last_traffic = c.last_traffic.max(now);
        }
        if channel.is_some() {
            self.last_channel_traffic = self.last_channel_traffic.max(now);
        }
    }

    /// What an admin view shows: last input and the idle deadlines in force.
    pub fn snapshot(&self) -> Snapshot {
        let (warn_at, idle_end) = match (self.authenticated, self.idle_deadlines()) {
            (true, Some((w, e))) => (w, Some(e)),
            _ => (None, None),
        };
        Snapshot {
            last_input: self.last_input,
            idle_deadline: idle_end,
            warn_at: if self.warned_at.is_some() {
                None
            } else {
                warn_at
            },
            next_probe: self.next_probe.filter(|_| self.authenticated),
            unused_deadline: self
                .unused_since
                .zip(self.policy.unused_timeout)
                .map(|(s, t)| s + t),
            login_deadline: self
                .policy
                .login_grace
                .filter(|_| !self.authenticated)
                .map(|g| self.started + g),
            policy: self.policy.clone(),
        }
    }

    /// When the engine next needs [`Engine::poll`], if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if !self.authenticated {
            consider(self.policy.login_grace.map(|g| self.started + g));
            return next;
        }
        consider(self.next_probe);
        if let Some((warn_at, end_at)) = self.idle_deadlines() {
            consider(if self.warned_at.is_none() {
                warn_at
            } else {
                None
            });
            consider(Some(end_at));
        }
        for c in self.channels.values().filter(|c| !c.closing) {
            consider(
                self.policy
                    .channel_timeout(&c.kind)
                    .map(|t| c.last_traffic + t),
            );
        }
        if !self.channels.is_empty() && self.channels.values().any(|c| !c.closing) {
            consider(
                self.policy
                    .global_channel_timeout()
                    .map(|t| self.last_channel_traffic + t),
            );
        }
        consider(
            self.unused_since
                .zip(self.policy.unused_timeout)
                .map(|(s, t)| s + t),
        );
        next
    }

    /// (warn at, disconnect at) for idleness, under the current policy.
    fn idle_deadlines(&self) -> Option<(Option<Instant>, Instant)> {
        let timeout = self.policy.idle_timeout?;
        let end = self.last_activity + timeout;
        match self.policy.idle_warning {
            None => Some((None, end)),
            Some(w) => {
                let warn_at = end - w;
                // Once warned, the user always gets the full warning period.
                let end = self.warned_at.map_or(end, |at| end.max(at + w));
                Some((Some(warn_at), end))
            }
        }
    }

    /// Fire every timer that is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if !self.authenticated {
            if let Some(g) = self.policy.login_grace
                && now >= self.started + g
            {
                return self.finish(Ending::LoginGrace);
            }
            return out;
        }
        if let (Some(at), Some(interval)) = (self.next_probe, self.policy.probe_interval)
            && now >= at
        {
            if self.unanswered >= self.policy.probe_max {
                return self.finish(Ending::NotResponding);
            }
            self.unanswered += 1;
            self.next_probe = Some(now + interval);
            out.push(Action::SendProbe);
        }
        if let (Some(timeout), Some((warn_at, _))) =
            (self.policy.idle_timeout, self.idle_deadlines())
        {
            if let (Some(warn_at), None, Some(w)) =
                (warn_at, self.warned_at, self.policy.idle_warning)
                && now >= warn_at
            {
                self.warned_at = Some(now);
                let idle_for = now.saturating_duration_since(self.last_activity);
                out.push(Action::Warn(format!(
                    "rsshd: no input for {}; disconnecting in {}s",
                    human_duration(idle_for),
                    w.as_secs().max(1)
                )));
            }
            if let Some((_, end_at)) = self.idle_deadlines()
                && now >= end_at
            {
                out.extend(self.finish(Ending::Idle { after: timeout }));
                return out;
            }
        }
        let mut to_close = Vec::new();
        for (id, c) in self.channels.iter() {
            if c.closing {
                continue;
            }
            let own = self
                .policy
                .channel_timeout(&c.kind)
                .is_some_and(|t| now >= c.last_traffic + t);
            let global = self
                .policy
                .global_channel_timeout()
                .is_some_and(|t| now >= self.last_channel_traffic + t);
            if own || global {
                to_close.push(id);
            }
        }
        for id in to_close {
            if let Some(c) = self.channels.get_mut(id) {
                c.closing = true;
            }
            out.push(Action::CloseChannel(id));
        }
        if let (Some(since), Some(t)) = (self.unused_since, self.policy.unused_timeout)
            && now >= since + t
        {
            out.extend(self.finish(Ending::Unused { after: t }));
        }
        out
    }

    fn finish(&mut self, ending: Ending) -> Vec<Action> {
        self.done = true;
        vec![Action::Disconnect(ending)]
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
