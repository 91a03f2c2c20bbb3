//! The lifetime rules one connection is held to, derived from its effective
//! settings. Kept apart from [`Settings`] so that the engine sees only what it
//! enforces, already reduced to "when" questions.

use std::time::Duration;

use crate::config::{ChannelTimeoutRule, IdleActivity, Settings};
use crate::pattern::match_pattern;

/// What the engine enforces; `None` means "never".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Drop a connection that has not authenticated within this.
    pub login_grace: Option<Duration>,
    /// Liveness: probe after this long with nothing received.
    pub probe_interval: Option<Duration>,
    /// Liveness: unanswered probes in a row before the client counts as gone.
    pub probe_max: u32,
    /// Idleness: disconnect after this long without input.
    pub idle_timeout: Option<Duration>,
    /// Warn this long before an idle disconnect (only if shorter than the timeout).
    pub idle_warning: Option<Duration>,
    /// Whether server output also counts as activity (`IdleActivity input,output`).
    pub output_is_activity: bool,
    /// `ChannelTimeout` rules, first match wins.
    pub channel_timeouts: Vec<ChannelTimeoutRule>,
    /// Disconnect after this long with no open channel.
    pub unused_timeout: Option<Duration>,
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Policy {
    /// `ClientAliveCountMax 0` is the classic idle recipe (idle
    /// timeout = `ClientAliveInterval` unless `IdleTimeout` is set), never "off";
    /// `CountMax N > 0` is liveness probing only.
    pub fn from_settings(s: &Settings) -> Policy {
        // The idle limits come from Settings, which `-T` prints too, so the two agree.
        let probe_interval =
            nonzero(s.client_alive_interval).filter(|_| s.client_alive_count_max > 0);
        Policy {
            login_grace: nonzero(s.login_grace_time),
            probe_interval,
            probe_max: s.client_alive_count_max,
            idle_timeout: s.effective_idle_timeout(),
            idle_warning: s.effective_idle_warning(),
            output_is_activity: s.idle_activity == IdleActivity::InputOutput,
            channel_timeouts: s.channel_timeout.clone(),
            unused_timeout: s.unused_connection_timeout.and_then(nonzero),
        }
    }

    /// The timeout for a channel of `kind` (`session:shell`, `direct-tcpip`, ...).
    /// `session` names every session channel, unlike OpenSSH where it matches none
    /// of `session:shell`/`session:command`/`session:subsystem:*`.
    pub fn channel_timeout(&self, kind: &str) -> Option<Duration> {
        self.channel_timeouts
            .iter()
            .filter(|r| r.pattern != "global")
            .find(|r| {
                match_pattern(kind, &r.pattern)
                    || (r.pattern == "session" && kind.starts_with("session"))
            })
            .map(|r| r.timeout)
            .and_then(nonzero)
    }

    /// `ChannelTimeout global=T`: all channels together.
    pub fn global_channel_timeout(&self) -> Option<Duration> {
        self.channel_timeouts
            .iter()
            .find(|r| r.pattern == "global")
            .map(|r| r.timeout)
            .and_then(nonzero)
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn classic_recipe_is_an_idle_timeout() {
        let mut s = Settings::default();
        s.client_alive_interval = secs(300);
        s.client_alive_count_max = 0;
        let p = Policy::from_settings(&s);
        assert_eq!(p.idle_timeout, Some(secs(300)));
        assert_eq!(p.probe_interval, None);
    }

    #[test]
    fn idle_timeout_wins_over_the_recipe() {
        let mut s = Settings::default();
        s.client_alive_interval = secs(300);
        s.client_alive_count_max = 0;
        s.idle_timeout = Some(secs(60));
        assert_eq!(Policy::from_settings(&s).idle_timeout, Some(secs(60)));
    }

    #[test]
    fn count_max_n_is_liveness_only() {
        let mut s = Settings::default();
        s.client_alive_interval = secs(15);
        s.client_alive_count_max = 3;
        let p = Policy::from_settings(&s);
        assert_eq!(p.probe_interval, Some(secs(15)));
        assert_eq!(p.probe_max, 3);
        assert_eq!(p.idle_timeout, None);
    }

    #[test]
    fn warning_only_when_shorter_than_timeout() {
        let mut s = Settings::default();
        s.idle_timeout = Some(secs(60));
        s.idle_warning = Some(secs(60));
        assert_eq!(Policy::from_settings(&s).idle_warning, None);
        s.idle_warning = Some(secs(10));
        assert_eq!(Policy::from_settings(&s).idle_warning, Some(secs(10)));
    }

    #[test]
    fn channel_timeout_patterns() {
        let p = Policy {
            channel_timeouts: vec![
                ChannelTimeoutRule {
                    pattern: "session".into(),
                    timeout: secs(5),
                },
                ChannelTimeoutRule {
                    pattern: "direct-*".into(),
                    timeout: secs(7),
                },
                ChannelTimeoutRule {
                    pattern: "global".into(),
                    timeout: secs(9),
                },
            ],
            ..Policy::default()
        };
        assert_eq!(p.channel_timeout("session:shell"), Some(secs(5)));
        assert_eq!(p.channel_timeout("session:subsystem:sftp"), Some(secs(5)));
        assert_eq!(p.channel_timeout("direct-tcpip"), Some(secs(7)));
        assert_eq!(p.channel_timeout("forwarded-tcpip"), None);
        assert_eq!(p.global_channel_timeout(), Some(secs(9)));
    }
}
