//! Parsers and `-T` printers for the keywords whose values have a shape of their own
//! (ports, listen addresses, permit lists, channel timeouts, ...), and the helpers the
//! per-kind macros expand to.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::{Args, Pass};
use crate::config::settings::*;
use crate::config::time::parse_time;
use crate::pattern::match_pattern;

pub(super) fn kv(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{key} {value}");
}

pub(super) fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub(super) fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "none".to_string(), |d| d.as_secs().to_string())
}

pub(super) fn opt_path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or_else(|| "none".to_string(), |p| p.display().to_string())
}

/// Append list entries, replacing the inherited list on the first occurrence in a pass.
pub(super) fn push_list(list: &mut Vec<String>, items: &[String], pass: &Pass) {
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

pub(super) fn set_port(s: &mut Settings, a: &Args, p: &mut Pass) -> Result<(), String> {
    let port = parse_port(a.one()?)?;
    if p.first {
        s.port.clear();
    }
    s.port.push(port);
    Ok(())
}

/// `ListenAddress host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
pub(crate) fn parse_listen(s: &str) -> Result<ListenAddress, String> {
    let bad = || format!("bad address \"{s}\" (expected host, host:port or [v6]:port)");
    // Brackets only ever delimit an IPv6 address; anywhere else no address or
    // host name can contain them, and `-T` could not print them back readably.
    let bracket = |h: &str| h.contains(['[', ']']);
    if let Some(r) = s.strip_prefix('[') {
        let (host, after) = r.split_once(']').ok_or_else(bad)?;
        if host.is_empty() || bracket(host) {
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
    if bracket(s) {
        return Err(bad());
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

pub(super) fn dump_port(s: &Settings, k: &str, o: &mut String) {
    s.port.iter().for_each(|p| kv(o, k, p));
}

pub(super) fn set_listen(s: &mut Settings, a: &Args, p: &mut Pass) -> Result<(), String> {
    if a.args.len() > 1 {
        // `rdomain NAME` would confine the listener to a VRF: refused, not ignored.
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
}

fn fmt_listen(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(super) fn dump_listen(s: &Settings, key: &str, out: &mut String) {
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

pub(super) fn set_host_key(s: &mut Settings, a: &Args, p: &mut Pass) -> Result<(), String> {
    let path = PathBuf::from(a.one()?);
    if p.first {
        s.host_key.clear();
    }
    s.host_key.push(path);
    Ok(())
}

/// `user` or `user@host` where a host part with `/` must be a valid network.
/// `user@host` host parts are address lists: a malformed network (a prefix too long,
/// bits set past the prefix, an empty entry) is refused at load, as sshd does, by the
/// same parser the connection-time check uses.
pub(super) fn check_user_pattern(p: &str) -> Result<(), String> {
    if let Some((_, host)) = p.split_once('@')
        && crate::pattern::match_address_list(std::net::IpAddr::from([0, 0, 0, 0]), host).is_err()
    {
        return Err(format!("invalid pattern \"{p}\""));
    }
    Ok(())
}

pub(super) fn any_word(_: &str) -> Result<(), String> {
    Ok(())
}

pub(super) fn check_env_name(e: &str) -> Result<(), String> {
    if e.contains('=') {
        return Err(format!("invalid environment name \"{e}\""));
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

pub(super) fn set_permit_open(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    s.permit_open = permit_list(a, false)?;
    Ok(())
}

pub(super) fn set_permit_listen(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    s.permit_listen = permit_list(a, true)?;
    Ok(())
}

pub(super) fn dump_permit_open(s: &Settings, k: &str, o: &mut String) {
    kv(o, k, s.permit_open.join(" "));
}

pub(super) fn dump_permit_listen(s: &Settings, k: &str, o: &mut String) {
    kv(o, k, s.permit_listen.join(" "));
}

/// Channel types as sshd 9.2+ names them for `ChannelTimeout` (sshd_config(5)), for
/// catching typos in patterns. `session` is also rsshd's name for every session channel.
const CHANNEL_TYPES: &[&str] = &[
    "session",
    "session:shell",
    "session:command",
    "session:subsystem:",
    "direct-tcpip",
    "direct-streamlocal@openssh.com",
    "forwarded-tcpip",
    "forwarded-streamlocal@openssh.com",
    "agent-connection",
    "x11-connection",
    "tun-connection",
    "global",
];

pub(super) fn parse_channel_timeout(e: &str) -> Result<ChannelTimeoutRule, String> {
    let (pat, t) = e
        .split_once('=')
        .filter(|(p, _)| !p.is_empty())
        .ok_or_else(|| format!("invalid channel timeout \"{e}\" (expected type=time)"))?;
    let timeout = parse_time(t).ok_or_else(|| format!("invalid time value \"{t}\" in \"{e}\""))?;
    let known = pat.starts_with("session:subsystem:")
        || CHANNEL_TYPES.iter().any(|k| match_pattern(k, pat));
    if !known {
        let hint = if pat == "session:exec" {
            " (OpenSSH calls it session:command)"
        } else {
            ""
        };
        return Err(format!("unknown channel type \"{pat}\" in \"{e}\"{hint}"));
    }
    Ok(ChannelTimeoutRule {
        pattern: pat.to_string(),
        timeout,
    })
}

pub(super) fn set_channel_timeout(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    let args = a.all()?;
    if args.iter().any(|e| e.eq_ignore_ascii_case("none")) {
        if args.len() > 1 {
            return Err("\"none\" must appear alone".into());
        }
        s.channel_timeout = Vec::new();
        s.channel_timeout_text = args.to_vec();
        return Ok(());
    }
    s.channel_timeout = args
        .iter()
        .map(|e| parse_channel_timeout(e))
        .collect::<Result<_, _>>()?;
    s.channel_timeout_text = args.to_vec();
    Ok(())
}

pub(super) fn dump_channel_timeout(s: &Settings, k: &str, o: &mut String) {
    // As written, as sshd prints it (`none` too); nothing when not set, as sshd 9.2.
    if !s.channel_timeout_text.is_empty() {
        kv(o, k, s.channel_timeout_text.join(" "));
    }
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

pub(super) fn set_auth_methods(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
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
}

pub(super) fn dump_auth_methods(s: &Settings, k: &str, o: &mut String) {
    if s.authentication_methods.is_empty() {
        kv(o, k, "any");
    } else {
        kv(o, k, s.authentication_methods.join(" "));
    }
}

/// Methods rsshd never offers make a chain that needs them impossible to complete:
/// narrower than sshd, never wider, but worth saying.
pub(super) fn auth_methods_caveat(a: &Args) -> Option<String> {
    let missing: Vec<&str> = ["hostbased", "gssapi-with-mic"]
        .into_iter()
        .filter(|m| a.args.iter().any(|c| c.split(',').any(|x| x == *m)))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "rsshd does not offer {}; chains that need it can never complete",
            missing.join(" or ")
        )
    })
}

pub(super) fn set_set_env(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
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
}

pub(super) fn dump_set_env(s: &Settings, k: &str, o: &mut String) {
    s.set_env
        .iter()
        .for_each(|(n, v)| kv(o, k, format!("{n}={v}")));
}

pub(super) fn set_subsystem(s: &mut Settings, a: &Args, p: &mut Pass) -> Result<(), String> {
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
}

pub(super) fn dump_subsystem(s: &Settings, k: &str, o: &mut String) {
    s.subsystem
        .iter()
        .for_each(|(n, c)| kv(o, k, format!("{n} {c}")));
}

pub(super) fn set_max_startups(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
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
}

pub(super) fn dump_max_startups(s: &Settings, k: &str, o: &mut String) {
    let (b, r, f) = s.max_startups;
    kv(o, k, format!("{b}:{r}:{f}"));
}

pub(super) fn set_user_env(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    s.permit_user_environment = match a.one()? {
        "yes" => vec!["*".to_string()],
        "no" => Vec::new(),
        list => list.split(',').map(str::to_string).collect(),
    };
    Ok(())
}

pub(super) fn dump_user_env(s: &Settings, k: &str, o: &mut String) {
    let v = &s.permit_user_environment;
    if v.is_empty() {
        kv(o, k, "no");
    } else if v.len() == 1 && v[0] == "*" {
        kv(o, k, "yes");
    } else {
        kv(o, k, v.join(","));
    }
}

pub(super) fn set_force_command(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    a.all()?;
    let cmd = a.rest.trim();
    s.force_command = (!cmd.eq_ignore_ascii_case("none")).then(|| cmd.to_string());
    Ok(())
}

pub(super) fn dump_force_command(s: &Settings, k: &str, o: &mut String) {
    kv(o, k, s.force_command.as_deref().unwrap_or("none"));
}

/// A whole line, or `none`, into an `Option<String>` (`AuthorizedKeysCommand`).
/// As sshd, the command must be an absolute path (checked at load).
pub(super) fn opt_command(a: &Args, known: &str) -> Result<Option<String>, String> {
    a.all()?;
    let v = a.rest.trim();
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if !v.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    tokens(v, known)?;
    Ok(Some(v.to_string()))
}

/// A value whose `%` tokens must be among `known`: refused at load with the
/// file and line, where sshd would fail every login that expands it.
pub(super) fn tokens(v: &str, known: &str) -> Result<(), String> {
    crate::percent::check_tokens(v, known).map_err(|e| {
        let list: Vec<String> = known.chars().map(|c| format!("%{c}")).collect();
        format!("\"{v}\": {e} (tokens here: {} %%)", list.join(" "))
    })
}

/// One word, or `none`, into an `Option<String>` (`AuthorizedKeysCommandUser`).
pub(super) fn opt_word(a: &Args) -> Result<Option<String>, String> {
    let v = a.one()?;
    Ok((!v.eq_ignore_ascii_case("none")).then(|| v.to_string()))
}

pub(super) fn dump_opt(v: &Option<String>, k: &str, o: &mut String) {
    kv(o, k, v.as_deref().unwrap_or("none"));
}

pub(super) fn set_host_certificate(s: &mut Settings, a: &Args, p: &mut Pass) -> Result<(), String> {
    let path = PathBuf::from(a.one()?);
    if p.first {
        s.host_certificate.clear();
    }
    s.host_certificate.push(path);
    Ok(())
}

pub(super) fn dump_host_certificates(s: &Settings, k: &str, o: &mut String) {
    s.host_certificate
        .iter()
        .for_each(|h| kv(o, k, h.display()));
}

/// `HostKeyAgent`: kept as written (a path is resolved where the keys are
/// loaded: the network process replays this config chrooted, where `~` and the
/// working directory mean nothing); `none` in any case is unset, as in sshd.
pub(super) fn set_host_key_agent(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    let v = a.one()?;
    s.host_key_agent = (!v.eq_ignore_ascii_case("none")).then(|| v.to_string());
    Ok(())
}

/// As `sshd -T`: `SSH_AUTH_SOCK` as is, a path made absolute (`~` expanded,
/// a relative one under the working directory).
pub(super) fn dump_host_key_agent(s: &Settings, k: &str, o: &mut String) {
    match s.host_key_agent.as_deref() {
        None => kv(o, k, "none"),
        Some(v) if v == crate::paths::AUTH_SOCK_ENV => kv(o, k, v),
        Some(v) => match crate::paths::derelativise(v) {
            Ok(p) => kv(o, k, p.display()),
            Err(_) => kv(o, k, v),
        },
    }
}

pub(super) fn dump_host_keys(s: &Settings, k: &str, o: &mut String) {
    s.host_key.iter().for_each(|h| kv(o, k, h.display()));
}

pub(super) fn set_authorized_keys(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    let files = a.all()?;
    for f in files {
        tokens(f, "huU")?;
    }
    s.authorized_keys_file = files.to_vec();
    Ok(())
}

pub(super) fn dump_authorized_keys(s: &Settings, k: &str, o: &mut String) {
    kv(o, k, s.authorized_keys_file.join(" "));
}

pub(super) fn set_pam_service(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    s.pam_service_name = a.one()?.to_string();
    Ok(())
}

pub(super) fn dump_pam_service(s: &Settings, k: &str, o: &mut String) {
    kv(o, k, &s.pam_service_name);
}
