//! The spelled values of the keywords that take one of a few words, and how `sshd -T`
//! prints each.

use crate::config::settings::*;

/// How `sshd -T` spells a choice.
pub(super) trait SshdName {
    fn sshd_name(&self) -> &str;
}

impl SshdName for String {
    fn sshd_name(&self) -> &str {
        self
    }
}

impl SshdName for PermitRootLogin {
    fn sshd_name(&self) -> &str {
        match self {
            PermitRootLogin::Yes => "yes",
            PermitRootLogin::ProhibitPassword => "without-password",
            PermitRootLogin::ForcedCommandsOnly => "forced-commands-only",
            PermitRootLogin::No => "no",
        }
    }
}

impl SshdName for Forwarding {
    fn sshd_name(&self) -> &str {
        match self {
            Forwarding::Yes => "yes",
            Forwarding::No => "no",
            Forwarding::Local => "local",
            Forwarding::Remote => "remote",
        }
    }
}

impl SshdName for GatewayPorts {
    fn sshd_name(&self) -> &str {
        match self {
            GatewayPorts::No => "no",
            GatewayPorts::Yes => "yes",
            GatewayPorts::ClientSpecified => "clientspecified",
        }
    }
}

impl SshdName for LogLevel {
    fn sshd_name(&self) -> &str {
        LEVELS
            .iter()
            .find(|(_, l)| l == self)
            .map_or("INFO", |(n, _)| n)
    }
}

impl SshdName for IdleActivity {
    fn sshd_name(&self) -> &str {
        match self {
            IdleActivity::Input => "input",
            IdleActivity::InputOutput => "input,output",
        }
    }
}

impl SshdName for SessionCleanup {
    fn sshd_name(&self) -> &str {
        match self {
            SessionCleanup::Hangup => "hangup",
            SessionCleanup::Kill => "kill",
        }
    }
}

pub(super) const ROOT: &[(&str, PermitRootLogin)] = &[
    ("yes", PermitRootLogin::Yes),
    ("prohibit-password", PermitRootLogin::ProhibitPassword),
    ("without-password", PermitRootLogin::ProhibitPassword),
    ("forced-commands-only", PermitRootLogin::ForcedCommandsOnly),
    ("no", PermitRootLogin::No),
];

pub(super) const FWD: &[(&str, Forwarding)] = &[
    ("yes", Forwarding::Yes),
    ("all", Forwarding::Yes),
    ("no", Forwarding::No),
    ("local", Forwarding::Local),
    ("remote", Forwarding::Remote),
];

pub(super) const GW: &[(&str, GatewayPorts)] = &[
    ("no", GatewayPorts::No),
    ("yes", GatewayPorts::Yes),
    ("clientspecified", GatewayPorts::ClientSpecified),
];

pub(super) const LEVELS: &[(&str, LogLevel)] = &[
    ("QUIET", LogLevel::Quiet),
    ("FATAL", LogLevel::Fatal),
    ("ERROR", LogLevel::Error),
    ("INFO", LogLevel::Info),
    ("VERBOSE", LogLevel::Verbose),
    ("DEBUG", LogLevel::Debug1),
    ("DEBUG1", LogLevel::Debug1),
    ("DEBUG2", LogLevel::Debug2),
    ("DEBUG3", LogLevel::Debug3),
];

pub(super) const FACILITIES: &[(&str, &str)] = &[
    ("DAEMON", "DAEMON"),
    ("USER", "USER"),
    ("AUTH", "AUTH"),
    ("AUTHPRIV", "AUTHPRIV"),
    ("LOCAL0", "LOCAL0"),
    ("LOCAL1", "LOCAL1"),
    ("LOCAL2", "LOCAL2"),
    ("LOCAL3", "LOCAL3"),
    ("LOCAL4", "LOCAL4"),
    ("LOCAL5", "LOCAL5"),
    ("LOCAL6", "LOCAL6"),
    ("LOCAL7", "LOCAL7"),
];

pub(super) const FAMILIES: &[(&str, &str)] =
    &[("any", "any"), ("inet", "inet"), ("inet6", "inet6")];

pub(super) const ACTIVITY: &[(&str, IdleActivity)] = &[
    ("input", IdleActivity::Input),
    ("input,output", IdleActivity::InputOutput),
    ("output,input", IdleActivity::InputOutput),
];

pub(super) const CLEANUP: &[(&str, SessionCleanup)] = &[
    ("hangup", SessionCleanup::Hangup),
    ("kill", SessionCleanup::Kill),
];
