//! How a forwarded channel (tunnel, `-R` connection, agent connection) is known
//! to its connection while it runs: the state every forwarded channel's task
//! shares ([`Tunnels`]), what each one holds ([`Hold`]) and its entry in the
//! connection's channel table ([`Registration`]). The bytes move in
//! [`super::pump`]; the policy is in [`super::forward`].

use std::net::SocketAddr;
use std::sync::Arc;

use russh::ChannelId;
use russh::server::Handle;

use super::channels::{Kind, Retired};
use super::flow::ConnQueue;
use super::inflow::{ChannelWindow, Inflow};
use super::limits::{CHANNELS_MAX, ChannelSlot, ChannelSlots, FdLease, Limit, Notices, refused};
use super::shared::ConnShared;
use crate::lifetime::ChannelStamps;
use crate::log::peer;

/// What a forwarded channel's task needs from its connection.
#[derive(Clone)]
pub(crate) struct Tunnels {
    shared: Arc<ConnShared>,
    /// Every channel's backlog also counts here.
    pub(crate) conn: Arc<ConnQueue>,
    /// The connection's open channels, sessions included.
    pub(crate) slots: ChannelSlots,
    /// Which refusals were logged already.
    pub(crate) notices: Notices,
    /// The client's address, for log lines.
    pub(crate) peer: SocketAddr,
}

impl Tunnels {
    pub(crate) fn new(shared: Arc<ConnShared>, peer: SocketAddr) -> Self {
        Tunnels {
            shared,
            conn: Arc::default(),
            slots: ChannelSlots::default(),
            notices: Notices::default(),
            peer,
        }
    }

    /// Announce a confirmed channel to the lifetime engine (so `ChannelTimeout`
    /// applies and it can be closed by number), enter it in the connection's
    /// table (which takes its place among the channels) with an input queue,
    /// whose consumption `handle` reports to russh.
    pub(crate) fn register(
        &self,
        id: ChannelId,
        kind: &str,
        hold: Hold,
        handle: Handle,
    ) -> Registration {
        let n = u32::from(id);
        let stamps = self.shared.events.channel_opened(n, kind);
        let Hold { slot, fds } = hold;
        let inflow = Arc::new(Inflow::new(
            ChannelWindow { handle, id },
            Arc::clone(&self.conn),
        ));
        let retired = self
            .shared
            .channels
            .open(id, Kind::Tunnel, slot, Arc::clone(&inflow));
        Registration {
            id,
            shared: Arc::clone(&self.shared),
            retired: Some(retired),
            stamps,
            inflow,
            _fds: fds,
        }
    }
}

/// What a forwarded channel holds for as long as it runs: its place among the
/// connection's channels and its socket's share of the user's descriptors.
pub(crate) struct Hold {
    slot: ChannelSlot,
    fds: FdLease,
}

/// A place among the connection's channels and one of the user's descriptors for
/// a new forwarded channel (`what` names it in the log), or the refusal logged.
pub(crate) fn hold(tunnels: &Tunnels, uid: u32, user: &str, what: &str) -> Option<Hold> {
    tunnels.conn.bind_user(uid);
    let notices = &tunnels.notices;
    let who = || format!("user {user} from {}", peer(&tunnels.peer));
    let Some(slot) = tunnels.slots.take() else {
        refused!(
            notices,
            Limit::Channels,
            "refused {what} for {}: {CHANNELS_MAX} channels open on this connection",
            who()
        );
        return None;
    };
    match FdLease::take(uid, 1) {
        Ok(fds) => Some(Hold { slot, fds }),
        Err(e) => {
            refused!(notices, Limit::Fds, "refused {what} for {}: {e}", who());
            None
        }
    }
}

/// A forwarded channel's entry in the connection's table, withdrawn when its pump
/// ends: the channel is retired then, whichever side closed it (see
/// [`super::channels`]).
pub(crate) struct Registration {
    id: ChannelId,
    shared: Arc<ConnShared>,
    /// Fulfilled if the channel is retired while the pump runs (ChannelTimeout).
    pub(crate) retired: Option<Retired>,
    pub(crate) stamps: Arc<ChannelStamps>,
    pub(crate) inflow: Arc<Inflow>,
    _fds: FdLease,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.retire(u32::from(self.id));
    }
}
