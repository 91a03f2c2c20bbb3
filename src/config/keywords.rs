//! The keyword table: the one place that says, for every keyword OpenSSH 9.x knows plus
//! rsshd's own, what its arguments look like, whether `Match` may set it, whether rsshd
//! implements it, how a value is stored and how `-T` prints it. Parsing, `Match` checks
//! and `-T` all read this table so they cannot disagree.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::persource;
use super::settings::*;
use super::time::{format_time, parse_time};
use crate::pattern::{match_pattern, parse_cidr};

/// The arguments of one directive, as the lexer produced them.
pub(crate) struct Args<'a> {
    pub args: &'a [String],
    /// The verbatim rest of the line, for keywords that take a whole command.
    pub rest: &'a str,
}

impl Args<'_> {
    fn one(&self) -> Result<&str, String> {
        match self.args {
            [] => Err("missing argument".into()),
            [a] => Ok(a),
            _ => Err("extra arguments at end of line".into()),
        }
    }

    fn flag(&self) -> Result<bool, String> {
        let a = self.one()?;
        if a.eq_ignore_ascii_case("yes") {
            Ok(true)
        } else if a.eq_ignore_ascii_case("no") {
            Ok(false)
        } else {
            Err(format!("invalid value \"{a}\" (expected yes or no)"))
        }
    }

    fn time(&self) -> Result<Duration, String> {
        let a = self.one()?;
        parse_time(a).ok_or_else(|| format!("invalid time value \"{a}\""))
    }

    /// A time where `none` (or 0) means "no limit", as `UnusedConnectionTimeout`.
    fn opt_time(&self) -> Result<Option<Duration>, String> {
        if self.one()?.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        Ok(Some(self.time()?).filter(|d| !d.is_zero()))
    }

    fn uint(&self) -> Result<u32, String> {
        let a = self.one()?;
        a.parse::<u32>()
            .ok()
            .filter(|n| i32::try_from(*n).is_ok())
            .ok_or_else(|| format!("invalid integer \"{a}\""))
    }

    fn choice<T: Copy>(&self, opts: &[(&str, T)]) -> Result<T, String> {
        let a = self.one()?;
        opts.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(a))
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = opts.iter().map(|(k, _)| *k).collect();
                format!("invalid value \"{a}\" (expected {})", names.join(", "))
            })
    }

    /// A path, or `none` for "not set".
    fn opt_path(&self) -> Result<Option<PathBuf>, String> {
        let a = self.one()?;
        Ok((!a.eq_ignore_ascii_case("none")).then(|| PathBuf::from(a)))
    }

    fn all(&self) -> Result<&[String], String> {
        if self.args.is_empty() {
            return Err("missing argument".into());
        }
        if let Some(e) = self.args.iter().find(|a| a.is_empty()) {
            return Err(format!("empty argument \"{e}\""));
        }
        Ok(self.args)
    }
}

/// State of one parsing pass (the global pass, or one connection's `Match` pass).
#[derive(Default)]
pub(crate) struct Pass {
    /// True when this keyword has not been set yet in this pass: list keywords use it
    /// to replace, rather than extend, the default or the global value.
    pub first: bool,
    /// Subsystem names defined in this pass: the first definition of a name wins.
    pub subsystems: HashSet<String>,
}

pub(crate) type Setter = fn(&mut Settings, &Args, &mut Pass) -> Result<(), String>;
pub(crate) type Dumper = fn(&Settings, &str, &mut String);

/// What happens when a keyword appears more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// The first value obtained wins (sshd's rule for almost everything).
    First,
    /// Every occurrence adds to the list (`AllowUsers`, `AcceptEnv`, `Port`, ...).
    Append,
    /// Every occurrence overwrites (sshd's `MaxStartups` quirk).
    Last,
}

/// The shape of the arguments; enough to validate keywords rsshd does not implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Flag,
    Int,
    Time,
    /// One word.
    Word,
    /// One or more words.
    Words,
    /// The rest of the line.
    Line,
    /// `Include`, `Match`: handled by the loader.
    Special,
}

#[derive(Clone, Copy)]
pub(crate) enum Status {
    Supported {
        set: Setter,
        policy: Policy,
        dump: Option<Dumper>,
    },
    /// Known to OpenSSH, not implemented: accepted with a warning unless the value is
    /// `quiet` (the value that means "off", which rsshd honours by doing nothing).
    Unsupported {
        quiet: Option<&'static str>,
    },
    Deprecated,
    /// Another spelling of the named keyword.
    Alias(&'static str),
    Special,
}

pub(crate) struct Keyword {
    /// Canonical spelling, used in messages; `-T` prints it lower-cased.
    pub name: &'static str,
    pub kind: Kind,
    /// Allowed inside `Match` (sshd's `SSHCFG_ALL`).
    pub matchable: bool,
    pub status: Status,
}

const fn sup(
    name: &'static str,
    kind: Kind,
    matchable: bool,
    policy: Policy,
    set: Setter,
    dump: Dumper,
) -> Keyword {
    Keyword {
        name,
        kind,
        matchable,
        status: Status::Supported {
            set,
            policy,
            dump: Some(dump),
        },
    }
}

const fn unsup(
    name: &'static str,
    kind: Kind,
    matchable: bool,
    quiet: Option<&'static str>,
) -> Keyword {
    Keyword {
        name,
        kind,
        matchable,
        status: Status::Unsupported { quiet },
    }
}

const fn dep(name: &'static str, matchable: bool) -> Keyword {
    Keyword {
        name,
        kind: Kind::Words,
        matchable,
        status: Status::Deprecated,
    }
}

const fn alias(name: &'static str, of: &'static str) -> Keyword {
    Keyword {
        name,
        kind: Kind::Words,
        matchable: false,
        status: Status::Alias(of),
    }
}

const M: bool = true;
const G: bool = false;
use Kind::*;
use Policy::{Append, First, Last};

fn kv(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{key} {value}");
}

fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "none".to_string(), |d| d.as_secs().to_string())
}

fn opt_path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or_else(|| "none".to_string(), |p| p.display().to_string())
}

fn each(out: &mut String, key: &str, items: &[String]) {
    for i in items {
        kv(out, key, i);
    }
}

fn algos(a: &Args) -> Result<Option<Vec<String>>, String> {
    let v = a.one()?;
    let body = v.trim_start_matches(['+', '-', '^']);
    if body.split(',').any(str::is_empty) {
        return Err(format!("invalid algorithm list \"{v}\""));
    }
    Ok(Some(v.split(',').map(str::to_string).collect()))
}

fn dump_algos(v: &Option<Vec<String>>, key: &str, out: &mut String) {
    if let Some(v) = v {
        kv(out, key, v.join(","));
    }
}

/// Append list entries, replacing the inherited list on the first occurrence in a pass.
fn push_list(list: &mut Vec<String>, items: &[String], pass: &Pass) {
    if pass.first {
        list.clear();
    }
    list.extend(items.iter().cloned());
}

/// A TCP port; 0 is allowed and asks the kernel for a free one (rsshd logs the port
/// it got in `Server listening on ...`), which test harnesses and socket-activated
/// setups rely on.
pub(crate) fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .ok_or_else(|| format!("bad port number \"{s}\""))
}

/// `ListenAddress host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
pub(crate) fn parse_listen(s: &str) -> Result<ListenAddress, String> {
    let bad = || format!("bad address \"{s}\" (expected host, host:port or [v6]:port)");
    if let Some(r) = s.strip_prefix('[') {
        let (host, after) = r.split_once(']').ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or_else(bad)?)?),
        };
        return Ok(ListenAddress {
            host: host.to_string(),
            port,
        });
    }
    if s.matches(':').count() >= 2 {
        return Ok(ListenAddress {
            host: s.to_string(),
            port: None,
        });
    }
    match s.split_once(':') {
        Some((h, p)) if !h.is_empty() => Ok(ListenAddress {
            host: h.to_string(),
            port: Some(parse_port(p)?),
        }),
        Some(_) => Err(bad()),
        None if s.is_empty() => Err(bad()),
        None => Ok(ListenAddress {
            host: s.to_string(),
            port: None,
        }),
    }
}

fn fmt_listen(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn dump_listen(s: &Settings, key: &str, out: &mut String) {
    // sshd expands the implicit wildcard listeners port by port, v6 first; explicit
    // addresses address by address.
    // `AddressFamily` narrows the implicit wildcards as it narrows sshd's getaddrinfo.
    if s.listen_address == Settings::default().listen_address {
        for p in &s.port {
            if s.address_family != "inet" {
                kv(out, key, fmt_listen("::", *p));
            }
            if s.address_family != "inet6" {
                kv(out, key, fmt_listen("0.0.0.0", *p));
            }
        }
        return;
    }
    for la in &s.listen_address {
        match la.port {
            Some(p) => kv(out, key, fmt_listen(&la.host, p)),
            None => {
                for p in &s.port {
                    kv(out, key, fmt_listen(&la.host, *p));
                }
            }
        }
    }
}

/// `user` or `user@host` where a host part with `/` must be a valid network.
fn check_user_pattern(p: &str) -> Result<(), String> {
    if let Some((_, host)) = p.split_once('@') {
        for h in host.split(',') {
            let h = h.strip_prefix('!').unwrap_or(h);
            if h.contains('/') && parse_cidr(h).is_none() {
                return Err(format!("invalid pattern \"{p}\""));
            }
        }
    }
    Ok(())
}

/// `host:port` for `PermitOpen`/`PermitListen`; port may be `*`.
fn check_host_port(e: &str) -> Result<(), String> {
    let bad = || format!("invalid host:port \"{e}\"");
    let (host, port) = if let Some(r) = e.strip_prefix('[') {
        let (h, p) = r.split_once(']').ok_or_else(bad)?;
        (h, p.strip_prefix(':').ok_or_else(bad)?)
    } else {
        e.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() {
        return Err(bad());
    }
    if port != "*" {
        parse_port(port).map_err(|_| bad())?;
    }
    Ok(())
}

fn permit_list(a: &Args, listen: bool) -> Result<Vec<String>, String> {
    let args = a.all()?;
    if args[0] == "any" || args[0] == "none" {
        if args.len() > 1 {
            return Err(format!("\"{}\" must appear alone", args[0]));
        }
        return Ok(vec![args[0].clone()]);
    }
    let mut v = Vec::new();
    for e in args {
        let e = if listen && !e.contains(':') {
            format!("*:{e}")
        } else {
            e.clone()
        };
        check_host_port(&e)?;
        v.push(e);
    }
    Ok(v)
}

/// Channel types rsshd knows, for catching typos in `ChannelTimeout` patterns.
const CHANNEL_TYPES: &[&str] = &[
    "session",
    "session:shell",
    "session:exec",
    "session:subsystem:",
    "direct-tcpip",
    "direct-streamlocal@openssh.com",
    "forwarded-tcpip",
    "forwarded-streamlocal@openssh.com",
    "agent-connection",
    "auth-agent@openssh.com",
    "x11-connection",
    "tun-connection",
    "global",
];

fn parse_channel_timeout(e: &str) -> Result<ChannelTimeoutRule, String> {
    let (pat, t) = e
        .split_once('=')
        .filter(|(p, _)| !p.is_empty())
        .ok_or_else(|| format!("invalid channel timeout \"{e}\" (expected type=time)"))?;
    let timeout = parse_time(t).ok_or_else(|| format!("invalid time value \"{t}\" in \"{e}\""))?;
    let known = pat.starts_with("session:subsystem:")
        || CHANNEL_TYPES.iter().any(|k| match_pattern(k, pat));
    if !known {
        return Err(format!("unknown channel type \"{pat}\" in \"{e}\""));
    }
    Ok(ChannelTimeoutRule {
        pattern: pat.to_string(),
        timeout,
    })
}

fn check_auth_methods(chain: &str) -> Result<(), String> {
    for m in chain.split(',') {
        let base = m.split_once(':').map_or(m, |(b, _)| b);
        let ok = matches!(
            base,
            "publickey" | "password" | "keyboard-interactive" | "hostbased" | "gssapi-with-mic"
        ) && (base == "keyboard-interactive" || !m.contains(':'));
        if !ok {
            return Err(format!("invalid authentication method \"{m}\""));
        }
    }
    Ok(())
}

const ROOT: &[(&str, PermitRootLogin)] = &[
    ("yes", PermitRootLogin::Yes),
    ("prohibit-password", PermitRootLogin::ProhibitPassword),
    ("without-password", PermitRootLogin::ProhibitPassword),
    ("forced-commands-only", PermitRootLogin::ForcedCommandsOnly),
    ("no", PermitRootLogin::No),
];

const FWD: &[(&str, Forwarding)] = &[
    ("yes", Forwarding::Yes),
    ("all", Forwarding::Yes),
    ("no", Forwarding::No),
    ("local", Forwarding::Local),
    ("remote", Forwarding::Remote),
];

const GW: &[(&str, GatewayPorts)] = &[
    ("no", GatewayPorts::No),
    ("yes", GatewayPorts::Yes),
    ("clientspecified", GatewayPorts::ClientSpecified),
];

const LEVELS: &[(&str, LogLevel)] = &[
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

const FACILITIES: &[(&str, &str)] = &[
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

const ACTIVITY: &[(&str, IdleActivity)] = &[
    ("input", IdleActivity::Input),
    ("input,output", IdleActivity::InputOutput),
    ("output,input", IdleActivity::InputOutput),
];

/// Every keyword. Supported ones come first, in the order `sshd -T` prints them, since
/// `-T` walks this table.
pub(crate) static KEYWORDS: &[Keyword] = &[
    sup(
        "Port",
        Word,
        G,
        Append,
        |s, a, p| {
            let port = parse_port(a.one()?)?;
            if p.first {
                s.port.clear();
            }
            s.port.push(port);
            Ok(())
        },
        |s, k, o| s.port.iter().for_each(|p| kv(o, k, p)),
    ),
    sup(
        "AddressFamily",
        Word,
        G,
        First,
        |s, a, _| {
            s.address_family = a
                .choice(&[("any", "any"), ("inet", "inet"), ("inet6", "inet6")])?
                .to_string();
            Ok(())
        },
        |s, k, o| kv(o, k, &s.address_family),
    ),
    sup(
        "ListenAddress",
        Words,
        G,
        Append,
        |s, a, p| {
            if a.args.len() > 1 {
                return Err(if a.args[1] == "rdomain" {
                    "routing domains are not supported".into()
                } else {
                    "extra arguments at end of line".into()
                });
            }
            let la = parse_listen(a.one()?)?;
            if p.first {
                s.listen_address.clear();
            }
            s.listen_address.push(la);
            Ok(())
        },
        dump_listen,
    ),
    sup(
        "UsePAM",
        Flag,
        G,
        First,
        |s, a, _| {
            s.use_pam = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.use_pam)),
    ),
    sup(
        "LoginGraceTime",
        Time,
        G,
        First,
        |s, a, _| {
            s.login_grace_time = a.time()?;
            Ok(())
        },
        |s, k, o| kv(o, k, secs(s.login_grace_time)),
    ),
    sup(
        "MaxAuthTries",
        Int,
        M,
        First,
        |s, a, _| {
            s.max_auth_tries = a.uint()?;
            Ok(())
        },
        |s, k, o| kv(o, k, s.max_auth_tries),
    ),
    sup(
        "MaxSessions",
        Int,
        M,
        First,
        |s, a, _| {
            s.max_sessions = a.uint()?;
            Ok(())
        },
        |s, k, o| kv(o, k, s.max_sessions),
    ),
    sup(
        "ClientAliveInterval",
        Time,
        M,
        First,
        |s, a, _| {
            s.client_alive_interval = a.time()?;
            Ok(())
        },
        |s, k, o| kv(o, k, secs(s.client_alive_interval)),
    ),
    sup(
        "ClientAliveCountMax",
        Int,
        M,
        First,
        |s, a, _| {
            s.client_alive_count_max = a.uint()?;
            Ok(())
        },
        |s, k, o| kv(o, k, s.client_alive_count_max),
    ),
    sup(
        "UnusedConnectionTimeout",
        Time,
        M,
        First,
        |s, a, _| {
            s.unused_connection_timeout = a.opt_time()?;
            Ok(())
        },
        |s, k, o| kv(o, k, opt_secs(s.unused_connection_timeout)),
    ),
    sup(
        "PermitRootLogin",
        Word,
        M,
        First,
        |s, a, _| {
            s.permit_root_login = a.choice(ROOT)?;
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                match s.permit_root_login {
                    PermitRootLogin::Yes => "yes",
                    PermitRootLogin::ProhibitPassword => "without-password",
                    PermitRootLogin::ForcedCommandsOnly => "forced-commands-only",
                    PermitRootLogin::No => "no",
                },
            )
        },
    ),
    sup(
        "PubkeyAuthentication",
        Flag,
        M,
        First,
        |s, a, _| {
            s.pubkey_authentication = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.pubkey_authentication)),
    ),
    sup(
        "PasswordAuthentication",
        Flag,
        M,
        First,
        |s, a, _| {
            s.password_authentication = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.password_authentication)),
    ),
    sup(
        "KbdInteractiveAuthentication",
        Flag,
        M,
        First,
        |s, a, _| {
            s.kbd_interactive_authentication = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.kbd_interactive_authentication)),
    ),
    sup(
        "PrintMotd",
        Flag,
        G,
        First,
        |s, a, _| {
            s.print_motd = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.print_motd)),
    ),
    sup(
        "PrintLastLog",
        Flag,
        G,
        First,
        |s, a, _| {
            s.print_last_log = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.print_last_log)),
    ),
    sup(
        "PermitTTY",
        Flag,
        M,
        First,
        |s, a, _| {
            s.permit_tty = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.permit_tty)),
    ),
    sup(
        "StrictModes",
        Flag,
        G,
        First,
        |s, a, _| {
            s.strict_modes = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.strict_modes)),
    ),
    sup(
        "TCPKeepAlive",
        Flag,
        G,
        First,
        |s, a, _| {
            s.tcp_keep_alive = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.tcp_keep_alive)),
    ),
    sup(
        "PermitEmptyPasswords",
        Flag,
        M,
        First,
        |s, a, _| {
            s.permit_empty_passwords = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.permit_empty_passwords)),
    ),
    sup(
        "GatewayPorts",
        Word,
        M,
        First,
        |s, a, _| {
            s.gateway_ports = a.choice(GW)?;
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                match s.gateway_ports {
                    GatewayPorts::No => "no",
                    GatewayPorts::Yes => "yes",
                    GatewayPorts::ClientSpecified => "clientspecified",
                },
            )
        },
    ),
    sup(
        "UseDNS",
        Flag,
        G,
        First,
        |s, a, _| {
            s.use_dns = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.use_dns)),
    ),
    sup(
        "AllowTcpForwarding",
        Word,
        M,
        First,
        |s, a, _| {
            s.allow_tcp_forwarding = a.choice(FWD)?;
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                match s.allow_tcp_forwarding {
                    Forwarding::Yes => "yes",
                    Forwarding::No => "no",
                    Forwarding::Local => "local",
                    Forwarding::Remote => "remote",
                },
            )
        },
    ),
    sup(
        "AllowAgentForwarding",
        Flag,
        M,
        First,
        |s, a, _| {
            s.allow_agent_forwarding = a.flag()?;
            Ok(())
        },
        |s, k, o| kv(o, k, yn(s.allow_agent_forwarding)),
    ),
    sup(
        "PidFile",
        Word,
        G,
        First,
        |s, a, _| {
            s.pid_file = a.opt_path()?;
            Ok(())
        },
        |s, k, o| kv(o, k, opt_path(&s.pid_file)),
    ),
    sup(
        "Ciphers",
        Word,
        G,
        First,
        |s, a, _| {
            s.ciphers = algos(a)?;
            Ok(())
        },
        |s, k, o| dump_algos(&s.ciphers, k, o),
    ),
    sup(
        "MACs",
        Word,
        G,
        First,
        |s, a, _| {
            s.macs = algos(a)?;
            Ok(())
        },
        |s, k, o| dump_algos(&s.macs, k, o),
    ),
    sup(
        "Banner",
        Word,
        M,
        First,
        |s, a, _| {
            s.banner = a.opt_path()?;
            Ok(())
        },
        |s, k, o| kv(o, k, opt_path(&s.banner)),
    ),
    sup(
        "ForceCommand",
        Line,
        M,
        First,
        |s, a, _| {
            a.all()?;
            let cmd = a.rest.trim();
            s.force_command = (!cmd.eq_ignore_ascii_case("none")).then(|| cmd.to_string());
            Ok(())
        },
        |s, k, o| kv(o, k, s.force_command.as_deref().unwrap_or("none")),
    ),
    sup(
        "ChrootDirectory",
        Word,
        M,
        First,
        |s, a, _| {
            s.chroot_directory = a.opt_path()?;
            Ok(())
        },
        |s, k, o| kv(o, k, opt_path(&s.chroot_directory)),
    ),
    sup(
        "KexAlgorithms",
        Word,
        G,
        First,
        |s, a, _| {
            s.kex_algorithms = algos(a)?;
            Ok(())
        },
        |s, k, o| dump_algos(&s.kex_algorithms, k, o),
    ),
    sup(
        "LogLevel",
        Word,
        M,
        First,
        |s, a, _| {
            s.log_level = a.choice(LEVELS)?;
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                LEVELS
                    .iter()
                    .find(|(_, l)| *l == s.log_level)
                    .map_or("INFO", |(n, _)| *n),
            )
        },
    ),
    sup(
        "SyslogFacility",
        Word,
        G,
        First,
        |s, a, _| {
            s.syslog_facility = a.choice(FACILITIES)?.to_string();
            Ok(())
        },
        |s, k, o| kv(o, k, &s.syslog_facility),
    ),
    sup(
        "AuthorizedKeysFile",
        Words,
        M,
        First,
        |s, a, _| {
            s.authorized_keys_file = a.all()?.to_vec();
            Ok(())
        },
        |s, k, o| kv(o, k, s.authorized_keys_file.join(" ")),
    ),
    sup(
        "HostKey",
        Word,
        G,
        Append,
        |s, a, p| {
            let path = PathBuf::from(a.one()?);
            if p.first {
                s.host_key.clear();
            }
            s.host_key.push(path);
            Ok(())
        },
        |s, k, o| s.host_key.iter().for_each(|h| kv(o, k, h.display())),
    ),
    sup(
        "AllowUsers",
        Words,
        M,
        Append,
        |s, a, p| {
            a.all()?.iter().try_for_each(|u| check_user_pattern(u))?;
            push_list(&mut s.allow_users, a.args, p);
            Ok(())
        },
        |s, k, o| each(o, k, &s.allow_users),
    ),
    sup(
        "DenyUsers",
        Words,
        M,
        Append,
        |s, a, p| {
            a.all()?.iter().try_for_each(|u| check_user_pattern(u))?;
            push_list(&mut s.deny_users, a.args, p);
            Ok(())
        },
        |s, k, o| each(o, k, &s.deny_users),
    ),
    sup(
        "AllowGroups",
        Words,
        M,
        Append,
        |s, a, p| {
            push_list(&mut s.allow_groups, a.all()?, p);
            Ok(())
        },
        |s, k, o| each(o, k, &s.allow_groups),
    ),
    sup(
        "DenyGroups",
        Words,
        M,
        Append,
        |s, a, p| {
            push_list(&mut s.deny_groups, a.all()?, p);
            Ok(())
        },
        |s, k, o| each(o, k, &s.deny_groups),
    ),
    sup(
        "AcceptEnv",
        Words,
        M,
        Append,
        |s, a, p| {
            if let Some(bad) = a.all()?.iter().find(|e| e.contains('=')) {
                return Err(format!("invalid environment name \"{bad}\""));
            }
            push_list(&mut s.accept_env, a.args, p);
            Ok(())
        },
        |s, k, o| each(o, k, &s.accept_env),
    ),
    sup(
        "SetEnv",
        Words,
        M,
        First,
        |s, a, _| {
            let mut v: Vec<(String, String)> = Vec::new();
            for e in a.all()? {
                let (n, val) = e
                    .split_once('=')
                    .filter(|(n, _)| !n.is_empty())
                    .ok_or_else(|| format!("invalid environment \"{e}\" (expected NAME=VALUE)"))?;
                if !v.iter().any(|(have, _)| have == n) {
                    v.push((n.to_string(), val.to_string()));
                }
            }
            s.set_env = v;
            Ok(())
        },
        |s, k, o| {
            s.set_env
                .iter()
                .for_each(|(n, v)| kv(o, k, format!("{n}={v}")))
        },
    ),
    sup(
        "AuthenticationMethods",
        Words,
        M,
        First,
        |s, a, _| {
            let args = a.all()?;
            if args.iter().any(|m| m == "any") {
                if args.len() > 1 {
                    return Err("\"any\" must appear alone".into());
                }
                s.authentication_methods = Vec::new();
                return Ok(());
            }
            args.iter().try_for_each(|c| check_auth_methods(c))?;
            s.authentication_methods = args.to_vec();
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                if s.authentication_methods.is_empty() {
                    "any".to_string()
                } else {
                    s.authentication_methods.join(" ")
                },
            )
        },
    ),
    sup(
        "ChannelTimeout",
        Words,
        M,
        First,
        |s, a, _| {
            let args = a.all()?;
            if args.iter().any(|e| e.eq_ignore_ascii_case("none")) {
                if args.len() > 1 {
                    return Err("\"none\" must appear alone".into());
                }
                s.channel_timeout = Vec::new();
                return Ok(());
            }
            s.channel_timeout = args
                .iter()
                .map(|e| parse_channel_timeout(e))
                .collect::<Result<_, _>>()?;
            Ok(())
        },
        |s, k, o| {
            if !s.channel_timeout.is_empty() {
                let v: Vec<String> = s
                    .channel_timeout
                    .iter()
                    .map(|r| format!("{}={}", r.pattern, format_time(r.timeout)))
                    .collect();
                kv(o, k, v.join(" "));
            }
        },
    ),
    sup(
        "Subsystem",
        Words,
        M,
        Append,
        |s, a, p| {
            let args = a.all()?;
            if args.len() < 2 {
                return Err("missing subsystem command".into());
            }
            let name = &args[0];
            if !p.subsystems.insert(name.clone()) {
                return Ok(());
            }
            let cmd = args[1..].join(" ");
            match s.subsystem.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 = cmd,
                None => s.subsystem.push((name.clone(), cmd)),
            }
            Ok(())
        },
        |s, k, o| {
            s.subsystem
                .iter()
                .for_each(|(n, c)| kv(o, k, format!("{n} {c}")))
        },
    ),
    sup(
        "MaxStartups",
        Word,
        G,
        Last,
        |s, a, _| {
            let v = a.one()?;
            let bad = || format!("invalid value \"{v}\" (expected start:rate:full or a number)");
            let nums: Vec<u32> = v
                .split(':')
                .map(|n| n.parse::<u32>().ok().filter(|n| *n > 0))
                .collect::<Option<_>>()
                .ok_or_else(bad)?;
            s.max_startups = match nums[..] {
                [n] => (n, s.max_startups.1, n),
                [b, r, f] if b <= f && r <= 100 => (b, r, f),
                _ => return Err(bad()),
            };
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                format!(
                    "{}:{}:{}",
                    s.max_startups.0, s.max_startups.1, s.max_startups.2
                ),
            )
        },
    ),
    // sshd 9.8's per-source limits (src/config/persource.rs has the parsing).
    sup(
        "PerSourceMaxStartups",
        Word,
        G,
        First,
        |s, a, _| {
            s.per_source_max_startups = persource::parse_max_startups(a.one()?)?;
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                persource::format_max_startups(s.per_source_max_startups),
            )
        },
    ),
    // Every occurrence overwrites, as in sshd (no "already set" check there).
    sup(
        "PerSourceNetBlockSize",
        Word,
        G,
        Last,
        |s, a, _| {
            s.per_source_net_block_size = persource::parse_net_block_size(a.one()?)?;
            Ok(())
        },
        |s, k, o| {
            let (v4, v6) = s.per_source_net_block_size;
            kv(o, k, format!("{v4}:{v6}"))
        },
    ),
    // Each line is applied; each sub-option keeps its first value.
    sup(
        "PerSourcePenalties",
        Words,
        G,
        Append,
        |s, a, _| persource::apply_penalties(&mut s.per_source_penalties, a.all()?),
        |s, k, o| kv(o, k, persource::format_penalties(&s.per_source_penalties)),
    ),
    sup(
        "PerSourcePenaltyExemptList",
        Word,
        G,
        First,
        |s, a, _| {
            let list = a.one()?;
            persource::check_exempt_list(list)?;
            s.per_source_penalty_exempt_list = Some(list.to_string());
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                s.per_source_penalty_exempt_list
                    .as_deref()
                    .unwrap_or("none"),
            )
        },
    ),
    sup(
        "PermitOpen",
        Words,
        M,
        First,
        |s, a, _| {
            s.permit_open = permit_list(a, false)?;
            Ok(())
        },
        |s, k, o| kv(o, k, s.permit_open.join(" ")),
    ),
    sup(
        "PermitListen",
        Words,
        M,
        First,
        |s, a, _| {
            s.permit_listen = permit_list(a, true)?;
            Ok(())
        },
        |s, k, o| kv(o, k, s.permit_listen.join(" ")),
    ),
    sup(
        "PermitUserEnvironment",
        Word,
        G,
        First,
        |s, a, _| {
            let v = a.one()?;
            s.permit_user_environment = match v {
                "yes" => vec!["*".to_string()],
                "no" => Vec::new(),
                list => list.split(',').map(str::to_string).collect(),
            };
            Ok(())
        },
        |s, k, o| {
            let v = &s.permit_user_environment;
            kv(
                o,
                k,
                if v.is_empty() {
                    "no".to_string()
                } else if v.len() == 1 && v[0] == "*" {
                    "yes".to_string()
                } else {
                    v.join(",")
                },
            )
        },
    ),
    // OpenSSH >= 9.8 (Match-able there too); Debian's 9.2 sshd does not know it.
    sup(
        "PAMServiceName",
        Word,
        M,
        First,
        |s, a, _| {
            s.pam_service_name = a.one()?.to_string();
            Ok(())
        },
        |s, k, o| kv(o, k, &s.pam_service_name),
    ),
    // rsshd's own (SPEC section 3).
    sup(
        "IdleTimeout",
        Time,
        M,
        First,
        |s, a, _| {
            s.idle_timeout = a.opt_time()?;
            Ok(())
        },
        |s, k, o| kv(o, k, opt_secs(s.idle_timeout)),
    ),
    sup(
        "IdleWarning",
        Time,
        M,
        First,
        |s, a, _| {
            s.idle_warning = a.opt_time()?;
            Ok(())
        },
        |s, k, o| kv(o, k, opt_secs(s.idle_warning)),
    ),
    sup(
        "IdleActivity",
        Word,
        M,
        First,
        |s, a, _| {
            s.idle_activity = a.choice(ACTIVITY)?;
            Ok(())
        },
        |s, k, o| {
            kv(
                o,
                k,
                match s.idle_activity {
                    IdleActivity::Input => "input",
                    IdleActivity::InputOutput => "input,output",
                },
            )
        },
    ),
    sup(
        "ControlSocket",
        Word,
        G,
        First,
        |s, a, _| {
            s.control_socket = a.opt_path()?;
            Ok(())
        },
        |s, k, o| kv(o, k, opt_path(&s.control_socket)),
    ),
    Keyword {
        name: "Include",
        kind: Special,
        matchable: M,
        status: Status::Special,
    },
    Keyword {
        name: "Match",
        kind: Special,
        matchable: M,
        status: Status::Special,
    },
    // Other spellings.
    alias(
        "ChallengeResponseAuthentication",
        "KbdInteractiveAuthentication",
    ),
    alias("SkeyAuthentication", "KbdInteractiveAuthentication"),
    alias("DSAAuthentication", "PubkeyAuthentication"),
    alias("HostDSAKey", "HostKey"),
    alias("KeepAlive", "TCPKeepAlive"),
    alias("HostbasedAcceptedKeyTypes", "HostbasedAcceptedAlgorithms"),
    alias("PubkeyAcceptedKeyTypes", "PubkeyAcceptedAlgorithms"),
    alias("GSSAPICleanupCreds", "GSSAPICleanupCredentials"),
    // Known to OpenSSH 9.x (and Debian's patches), not implemented by rsshd.
    unsup("AFSTokenPassing", Flag, G, Some("no")),
    unsup("AllowStreamLocalForwarding", Word, M, Some("no")),
    unsup("AuthorizedKeysCommand", Line, M, Some("none")),
    unsup("AuthorizedKeysCommandUser", Word, M, Some("none")),
    unsup("AuthorizedPrincipalsCommand", Line, M, Some("none")),
    unsup("AuthorizedPrincipalsCommandUser", Word, M, Some("none")),
    unsup("AuthorizedPrincipalsFile", Word, M, Some("none")),
    unsup("CASignatureAlgorithms", Word, M, None),
    unsup("Compression", Word, G, None),
    unsup("DebianBanner", Flag, G, None),
    unsup("DisableForwarding", Flag, M, Some("no")),
    unsup("ExposeAuthInfo", Flag, M, Some("no")),
    unsup("FingerprintHash", Word, G, Some("sha256")),
    unsup("GSSAPIAuthentication", Flag, M, Some("no")),
    unsup("GSSAPICleanupCredentials", Flag, G, None),
    unsup("GSSAPIKexAlgorithms", Word, G, None),
    unsup("GSSAPIKeyExchange", Flag, G, Some("no")),
    unsup("GSSAPIStoreCredentialsOnRekey", Flag, G, Some("no")),
    unsup("GSSAPIStrictAcceptorCheck", Flag, G, None),
    unsup("HostCertificate", Word, G, None),
    unsup("HostKeyAgent", Word, G, Some("none")),
    unsup("HostKeyAlgorithms", Word, G, None),
    unsup("HostbasedAcceptedAlgorithms", Word, M, None),
    unsup("HostbasedAuthentication", Flag, M, Some("no")),
    unsup("HostbasedUsesNameFromPacketOnly", Flag, M, Some("no")),
    unsup("IgnoreRhosts", Word, M, Some("yes")),
    unsup("IgnoreUserKnownHosts", Flag, G, None),
    unsup("IPQoS", Words, M, None),
    unsup("KerberosAuthentication", Flag, M, Some("no")),
    unsup("KerberosGetAFSToken", Flag, G, Some("no")),
    unsup("KerberosOrLocalPasswd", Flag, G, None),
    unsup("KerberosTgtPassing", Flag, G, Some("no")),
    unsup("KerberosTicketCleanup", Flag, G, None),
    unsup("LogVerbose", Words, M, Some("none")),
    unsup("ModuliFile", Word, G, None),
    unsup("PermitTunnel", Word, M, Some("no")),
    unsup("PermitUserRC", Flag, M, Some("no")),
    unsup("PubkeyAcceptedAlgorithms", Word, M, None),
    unsup("PubkeyAuthOptions", Words, M, Some("none")),
    unsup("RDomain", Word, M, Some("none")),
    unsup("RefuseConnection", Flag, M, Some("no")),
    unsup("RekeyLimit", Words, M, None),
    unsup("RequiredRSASize", Int, M, None),
    unsup("RevokedKeys", Word, M, Some("none")),
    unsup("SecurityKeyProvider", Word, G, Some("internal")),
    unsup("SshdAuthPath", Word, G, None),
    unsup("SshdSessionPath", Word, G, None),
    unsup("StreamLocalBindMask", Word, M, None),
    unsup("StreamLocalBindUnlink", Flag, M, Some("no")),
    unsup("TrustedUserCAKeys", Word, M, Some("none")),
    unsup("VersionAddendum", Line, G, Some("none")),
    unsup("X11DisplayOffset", Int, M, None),
    unsup("X11Forwarding", Flag, M, Some("no")),
    unsup("X11UseLocalhost", Flag, M, None),
    unsup("XAuthLocation", Word, G, None),
    // Deprecated in OpenSSH; ignored.
    dep("AuthorizedKeysFile2", M),
    dep("CheckMail", G),
    dep("KeyRegenerationInterval", G),
    dep("PAMAuthenticationViaKbdInt", G),
    dep("Protocol", G),
    dep("ReverseMappingCheck", G),
    dep("RhostsAuthentication", G),
    dep("RhostsRSAAuthentication", M),
    dep("RSAAuthentication", M),
    dep("ServerKeyBits", G),
    dep("ShowPatchLevel", G),
    dep("UseLogin", G),
    dep("UsePrivilegeSeparation", G),
    dep("VerifyReverseMapping", G),
];

impl std::fmt::Debug for Keyword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Find a keyword case-insensitively. Returns the entry that defines its behaviour (an
/// alias resolves to its target) and the spelling to use in messages.
pub(crate) fn lookup(word: &str) -> Option<(&'static Keyword, &'static str)> {
    let k = KEYWORDS
        .iter()
        .find(|k| k.name.eq_ignore_ascii_case(word))?;
    match k.status {
        Status::Alias(target) => {
            let t = KEYWORDS.iter().find(|t| t.name == target)?;
            Some((t, k.name))
        }
        _ => Some((k, k.name)),
    }
}

/// Check the arguments of a keyword rsshd does not implement, so a typo there is still
/// caught as sshd would catch it; returns whether the value deserves a warning.
pub(crate) fn check_unsupported(k: &Keyword, a: &Args) -> Result<bool, String> {
    let Status::Unsupported { quiet } = k.status else {
        return Ok(false);
    };
    match k.kind {
        Flag => {
            a.flag()?;
        }
        Int => {
            a.uint()?;
        }
        Time => {
            a.time()?;
        }
        Word => {
            a.one()?;
        }
        Words | Line | Special => {
            a.all()?;
        }
    }
    let is_quiet = quiet.is_some_and(|q| a.args.len() == 1 && a.args[0].eq_ignore_ascii_case(q));
    Ok(!is_quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_aliases_resolve() {
        let mut seen = HashSet::new();
        for k in KEYWORDS {
            assert!(
                seen.insert(k.name.to_ascii_lowercase()),
                "duplicate {}",
                k.name
            );
            if let Status::Alias(t) = k.status {
                assert!(KEYWORDS.iter().any(|x| x.name == t), "{} -> {t}", k.name);
            }
        }
        let (k, shown) = lookup("challengeresponseauthentication").unwrap();
        assert_eq!(
            (k.name, shown),
            (
                "KbdInteractiveAuthentication",
                "ChallengeResponseAuthentication"
            )
        );
        assert!(lookup("NoSuchThing").is_none());
    }

    #[test]
    fn listen_forms() {
        let la = |s: &str| parse_listen(s).map(|l| (l.host, l.port));
        assert_eq!(la("127.0.0.1"), Ok(("127.0.0.1".into(), None)));
        assert_eq!(la("127.0.0.1:2222"), Ok(("127.0.0.1".into(), Some(2222))));
        assert_eq!(la("[::1]:2222"), Ok(("::1".into(), Some(2222))));
        assert_eq!(la("[::1]"), Ok(("::1".into(), None)));
        assert_eq!(la("::1"), Ok(("::1".into(), None)));
        assert_eq!(la("host.example"), Ok(("host.example".into(), None)));
        assert_eq!(la("1.2.3.4:0"), Ok(("1.2.3.4".into(), Some(0))));
        assert!(la("1.2.3.4:99999").is_err());
        assert!(la("[::1]x").is_err());
        assert!(la(":22").is_err());
    }

    #[test]
    fn channel_timeouts() {
        assert!(parse_channel_timeout("session=5m").is_ok());
        assert!(parse_channel_timeout("direct-*=1h").is_ok());
        assert!(parse_channel_timeout("*=10s").is_ok());
        assert!(parse_channel_timeout("session:subsystem:sftp=1m").is_ok());
        assert!(parse_channel_timeout("sesion=5m").is_err());
        assert!(parse_channel_timeout("session").is_err());
        assert!(parse_channel_timeout("=5m").is_err());
        assert!(parse_channel_timeout("session=soon").is_err());
    }
}
