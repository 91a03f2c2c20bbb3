//! Limits per source address, with sshd 9.8's semantics (`srclimit.c`):
//! `PerSourceMaxStartups` caps the unauthenticated connections from one source,
//! and `PerSourcePenalties` refuses a source for a while after it misbehaved. A
//! source is an address masked to `PerSourceNetBlockSize` bits.
//!
//! Penalties accumulate per source up to `max`; one is enforced only once more
//! than `min` is outstanding, so a single slip costs nothing. Each family's table
//! holds at most `max-sources4`/`max-sources6` sources; when full, `permissive`
//! forgets the penalties nearest to expiry, `deny-all` refuses every source that
//! is not exempt until one expires. A penalty never touches a connection already
//! accepted.
//!
//! Unlike sshd, which re-executes itself on SIGHUP and so forgets every penalty,
//! rsshd keeps the table across a reload and applies the new limits to it (a new
//! PerSourceNetBlockSize starts it over).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Penalties, Settings};
use crate::pattern::{ListMatch, match_address_list};

/// Why a connection's source is penalised, when its connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offence {
    /// The connection's task died from a panic (sshd: the pre-auth child crashed).
    Crash,
    /// It tried at least one authentication method and never succeeded.
    AuthFail,
    /// It went away without trying to authenticate.
    NoAuth,
    /// LoginGraceTime ran out.
    GraceExceeded,
}

impl Offence {
    /// sshd's reason text, which the drop line repeats.
    fn reason(self) -> &'static str {
        match self {
            Offence::Crash => "penalty: caused crash",
            Offence::AuthFail => "penalty: failed authentication",
            Offence::NoAuth => "penalty: connections without attempting authentication",
            Offence::GraceExceeded => "penalty: exceeded LoginGraceTime",
        }
    }

    fn cost(self, p: &Penalties) -> Duration {
        match self {
            Offence::Crash => p.crash,
            Offence::AuthFail => p.authfail,
            Offence::NoAuth => p.noauth,
            Offence::GraceExceeded => p.grace_exceeded,
        }
    }
}

/// The settings these limits read, copied from the global config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limits {
    pub per_source: Option<u32>,
    pub bits4: u8,
    pub bits6: u8,
    pub penalties: Penalties,
    pub exempt: Option<String>,
}

impl Limits {
    pub(crate) fn from_settings(s: &Settings) -> Self {
        Limits {
            per_source: s.per_source_max_startups,
            bits4: s.per_source_net_block_size.0,
            bits6: s.per_source_net_block_size.1,
            penalties: s.per_source_penalties.effective(),
            exempt: s.per_source_penalty_exempt_list.clone(),
        }
    }
}

struct Penalty {
    expiry: Instant,
    active: bool,
    reason: &'static str,
}

/// One address family's penalties, by source and by expiry.
#[derive(Default)]
struct Table {
    by_source: HashMap<IpAddr, Penalty>,
    by_expiry: BTreeSet<(Instant, IpAddr)>,
}

impl Table {
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, src)) = self.by_expiry.first() {
            if at >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_source.remove(&src);
        }
    }

    /// Forget the penalties nearest to expiry until at most `max` remain.
    fn shrink_to(&mut self, max: usize) {
        while self.by_source.len() > max {
            let Some((_, src)) = self.by_expiry.pop_first() else {
                break;
            };
            tracing::debug!("penalty table overflow, remove {}", display(src));
            self.by_source.remove(&src);
        }
    }
}

struct State {
    limits: Limits,
    /// Unauthenticated connections per source, for PerSourceMaxStartups.
    startups: HashMap<IpAddr, u32>,
    v4: Table,
    v6: Table,
}

/// The per-source state of the daemon, shared by its listeners.
pub(crate) struct SourceLimits {
    state: Mutex<State>,
}

/// One unauthenticated connection counted against its source's
/// PerSourceMaxStartups; uncounted when dropped.
pub(crate) struct SourceSlot {
    limits: Arc<SourceLimits>,
    source: Option<IpAddr>,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let Some(src) = self.source else {
            return;
        };
        if let Ok(mut st) = self.limits.state.lock()
            && let Some(n) = st.startups.get_mut(&src)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.startups.remove(&src);
            }
        }
    }
}

/// `ip` with IPv4-mapped IPv6 seen as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The source an address belongs to: masked to the configured prefix length.
fn source(ip: IpAddr, l: &Limits) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let mask = if l.bits4 == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(l.bits4.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if l.bits6 == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(l.bits6.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

fn display(ip: IpAddr) -> String {
    ip.to_string()
}

impl State {
    fn prefix(&self, ip: IpAddr) -> u8 {
        if ip.is_ipv4() {
            self.limits.bits4
        } else {
            self.limits.bits6
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.limits.exempt.as_deref().is_some_and(|list| {
            match_address_list(ip, list).is_ok_and(|m| m == ListMatch::Positive)
        })
    }

    fn table(&mut self, v4: bool) -> (&mut Table, usize, bool) {
        let p = &self.limits.penalties;
        if v4 {
            (&mut self.v4, p.max_sources4 as usize, p.overflow_deny_all)
        } else {
            (&mut self.v6, p.max_sources6 as usize, p.overflow6_deny_all)
        }
    }
}

impl SourceLimits {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(SourceLimits {
            state: Mutex::new(State {
                limits,
                startups: HashMap::new(),
                v4: Table::default(),
                v6: Table::default(),
            }),
        })
    }

    /// New limits after a reload; penalties and counts already recorded stay,
    /// unless the net block size changed.
    pub(crate) fn reconfigure(&self, limits: Limits) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if (st.limits.bits4, st.limits.bits6) != (limits.bits4, limits.bits6) {
            // Counts and penalties are kept per source under the old mask, which
            // would make them misattributed: start over.
            st.startups.clear();
            st.v4 = Table::default();
            st.v6 = Table::default();
        }
        st.limits = limits;
        for v4 in [true, false] {
            let (t, max, _) = st.table(v4);
            t.shrink_to(max);
        }
    }

    /// The penalty that refuses a connection from `ip` now, if any: its reason.
    pub(crate) fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = canonical(ip);
        let mut st = self.state.lock().ok()?;
        if !st.limits.penalties.enabled || st.exempt(ip) {
            return None;
        }
        let now = Instant::now();
        let src = source(ip, &st.limits);
        let (table, max, deny_all) = st.table(ip.is_ipv4());
        table.expire(now);
        if table.by_source.len() >= max && deny_all {
            return Some("too many penalised addresses");
        }
        match table.by_source.get(&src) {
            Some(p) if p.active && p.expiry >= now => Some(p.reason),
            _ => None,
        }
    }

    /// Count a new unauthenticated connection from `ip` against
    /// PerSourceMaxStartups; `None` if its source is at the limit.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let ip = canonical(ip);
        let mut st = self.state.lock().ok()?;
        let Some(limit) = st.limits.per_source else {
            return Some(SourceSlot {
                limits: Arc::clone(self),
                source: None,
            });
        };
        let src = source(ip, &st.limits);
        let n = st.startups.entry(src).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            limits: Arc::clone(self),
            source: Some(src),
        })
    }

    /// Record that a connection from `ip` ended with `offence`.
    pub(crate) fn penalise(&self, ip: IpAddr, offence: Offence) {
        let ip = canonical(ip);
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let p = st.limits.penalties;
        let cost = offence.cost(&p);
        if !p.enabled || cost.is_zero() {
            return;
        }
        if st.exempt(ip) {
            tracing::debug!("address {} is exempt", display(ip));
            return;
        }
        let now = Instant::now();
        let src = source(ip, &st.limits);
        let net = format!("{}/{}", display(src), st.prefix(ip));
        let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        let reason = offence.reason();
        let (table, max, deny_all) = st.table(ip.is_ipv4());
        table.expire(now);
        match table.by_source.get_mut(&src) {
            Some(existing) => {
                table.by_expiry.remove(&(existing.expiry, src));
                existing.expiry = (existing.expiry + cost).min(now + p.max);
                let left = existing.expiry - now;
                if left > p.min && !existing.active {
                    tracing::info!(
                        "srclimit_penalise: {net}: activating {family} penalty of {:.3} seconds for {reason}",
                        left.as_secs_f64()
                    );
                    existing.active = true;
                }
                existing.reason = reason;
                table.by_expiry.insert((existing.expiry, src));
            }
            None => {
                if table.by_source.len() >= max && deny_all {
                    tracing::debug!(
                        "srclimit_penalise: {family} penalty table full, cannot penalise {net} for {reason}"
                    );
                    return;
                }
                let cost = cost.min(p.max);
                let active = cost > p.min;
                let line = format!(
                    "srclimit_penalise: {family}: new {net} {} penalty of {:.3} seconds for {reason}",
                    if active { "active" } else { "deferred" },
                    cost.as_secs_f64()
                );
                if active {
                    tracing::info!("{line}");
                } else {
                    tracing::debug!("{line}");
                }
                let expiry = now + cost;
                table.by_source.insert(
                    src,
                    Penalty {
                        expiry,
                        active,
                        reason,
                    },
                );
                table.by_expiry.insert((expiry, src));
                table.shrink_to(max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PenaltySettings;

    fn limits(cfg: &str) -> Limits {
        let mut p = PenaltySettings::default();
        if !cfg.is_empty() {
            let words: Vec<String> = cfg.split_whitespace().map(str::to_string).collect();
            crate::config::apply_penalties(&mut p, &words).expect("valid test config");
        }
        Limits {
            per_source: None,
            bits4: 32,
            bits6: 128,
            penalties: p.effective(),
            exempt: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    async fn advance(secs: u64) {
        tokio::time::advance(Duration::from_secs(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn penalties_accumulate_and_apply_only_past_min() {
        let l = SourceLimits::new(limits(""));
        let a = ip("192.0.2.7");
        // authfail is 5 s and min 15 s: three failures make 15 s, not yet more.
        for _ in 0..3 {
            l.penalise(a, Offence::AuthFail);
            assert_eq!(l.refusal(a), None);
        }
        l.penalise(a, Offence::AuthFail);
        assert_eq!(l.refusal(a), Some("penalty: failed authentication"));
        // Other addresses are not affected.
        assert_eq!(l.refusal(ip("192.0.2.8")), None);
        advance(19).await;
        assert!(l.refusal(a).is_some());
        advance(2).await;
        assert_eq!(l.refusal(a), None, "expired after 20 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_offence_applies_at_once_and_all_are_capped_at_max() {
        let l = SourceLimits::new(limits("max:1m"));
        let a = ip("192.0.2.9");
        l.penalise(a, Offence::GraceExceeded);
        assert_eq!(l.refusal(a), Some("penalty: exceeded LoginGraceTime"));
        for _ in 0..100 {
            l.penalise(a, Offence::Crash);
        }
        assert_eq!(l.refusal(a), Some("penalty: caused crash"));
        advance(59).await;
        assert!(l.refusal(a).is_some());
        advance(2).await;
        assert_eq!(l.refusal(a), None, "capped at max:1m");
    }

    #[tokio::test(start_paused = true)]
    async fn noauth_is_cheap_and_expires_when_not_repeated() {
        let l = SourceLimits::new(limits(""));
        let a = ip("2001:db8::1");
        for _ in 0..15 {
            l.penalise(a, Offence::NoAuth);
        }
        assert_eq!(l.refusal(a), None, "15 s is not more than min");
        l.penalise(a, Offence::NoAuth);
        assert_eq!(
            l.refusal(a),
            Some("penalty: connections without attempting authentication")
        );
        advance(17).await;
        assert_eq!(l.refusal(a), None);
        // Expired entries are gone, so the count starts over.
        l.penalise(a, Offence::NoAuth);
        assert_eq!(l.refusal(a), None);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_exempt_and_zero_cost() {
        let l = SourceLimits::new(limits("no"));
        l.penalise(ip("192.0.2.1"), Offence::GraceExceeded);
        assert_eq!(l.refusal(ip("192.0.2.1")), None);

        let mut lim = limits("");
        lim.exempt = Some("192.0.2.0/24,!192.0.2.66".into());
        let l = SourceLimits::new(lim);
        l.penalise(ip("192.0.2.1"), Offence::GraceExceeded);
        assert_eq!(l.refusal(ip("192.0.2.1")), None, "exempt");
        l.penalise(ip("192.0.2.66"), Offence::GraceExceeded);
        assert!(l.refusal(ip("192.0.2.66")).is_some(), "negated entry");

        let l = SourceLimits::new(limits("grace-exceeded:0"));
        l.penalise(ip("192.0.2.1"), Offence::GraceExceeded);
        assert_eq!(l.refusal(ip("192.0.2.1")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn net_block_size_groups_sources() {
        let mut lim = limits("");
        lim.bits4 = 24;
        lim.bits6 = 64;
        let l = SourceLimits::new(lim);
        l.penalise(ip("198.51.100.1"), Offence::GraceExceeded);
        assert!(l.refusal(ip("198.51.100.200")).is_some());
        assert_eq!(l.refusal(ip("198.51.101.1")), None);
        l.penalise(ip("2001:db8:0:1::5"), Offence::GraceExceeded);
        assert!(l.refusal(ip("2001:db8:0:1:ffff::1")).is_some());
        assert_eq!(l.refusal(ip("2001:db8:0:2::5")), None);
        // An IPv4-mapped IPv6 peer is its IPv4 address.
        assert!(l.refusal(ip("::ffff:198.51.100.9")).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_forgets_the_soonest_or_denies_all() {
        let l = SourceLimits::new(limits("max-sources4:2"));
        l.penalise(ip("192.0.2.1"), Offence::GraceExceeded);
        advance(1).await;
        l.penalise(ip("192.0.2.2"), Offence::GraceExceeded);
        l.penalise(ip("192.0.2.3"), Offence::GraceExceeded);
        assert_eq!(l.refusal(ip("192.0.2.1")), None, "soonest forgotten");
        assert!(l.refusal(ip("192.0.2.2")).is_some());
        assert!(l.refusal(ip("192.0.2.3")).is_some());
        // IPv6 has its own table.
        l.penalise(ip("2001:db8::1"), Offence::GraceExceeded);
        assert!(l.refusal(ip("2001:db8::1")).is_some());

        let l = SourceLimits::new(limits(
            "max-sources4:1 overflow:deny-all overflow6:permissive",
        ));
        l.penalise(ip("192.0.2.1"), Offence::GraceExceeded);
        l.penalise(ip("192.0.2.2"), Offence::GraceExceeded);
        assert_eq!(
            l.refusal(ip("203.0.113.5")),
            Some("too many penalised addresses")
        );
        assert_eq!(l.refusal(ip("2001:db8::1")), None);
        advance(21).await;
        assert_eq!(
            l.refusal(ip("203.0.113.5")),
            None,
            "free again once expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_penalties_unless_sources_change_shape() {
        let l = SourceLimits::new(limits(""));
        let a = ip("192.0.2.7");
        l.penalise(a, Offence::GraceExceeded);
        l.reconfigure(limits("authfail:1m"));
        assert!(l.refusal(a).is_some(), "kept across a reload");
        let mut wider = limits("authfail:1m");
        wider.bits4 = 24;
        l.reconfigure(wider);
        assert_eq!(l.refusal(a), None, "a new net block size starts over");
        l.reconfigure(limits("no"));
        l.penalise(a, Offence::GraceExceeded);
        assert_eq!(l.refusal(a), None, "disabled by the reload");
    }

    #[tokio::test]
    async fn per_source_max_startups() {
        let mut lim = limits("");
        lim.per_source = Some(2);
        lim.bits4 = 24;
        let l = SourceLimits::new(lim);
        let a = l.admit(ip("192.0.2.1")).expect("first");
        let b = l.admit(ip("192.0.2.2")).expect("second, same /24");
        assert!(l.admit(ip("192.0.2.3")).is_none(), "third refused");
        assert!(l.admit(ip("192.0.3.1")).is_some(), "another source");
        drop(a);
        let c = l.admit(ip("192.0.2.3")).expect("room again");
        drop((b, c));
        assert!(l.state.lock().unwrap().startups.is_empty());
        // No limit: nothing is counted.
        let l = SourceLimits::new(limits(""));
        let held: Vec<_> = (0..100).map(|_| l.admit(ip("192.0.2.1"))).collect();
        assert!(held.iter().all(Option::is_some));
    }
}
