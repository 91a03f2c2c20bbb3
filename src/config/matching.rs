//! `Match` lines: parsed (and validated) once at load time, evaluated per connection.
//! The pattern semantics are OpenSSH's (crate::pattern); this file only decides which
//! connection attribute each criterion looks at.

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr};

use super::ConnSpec;
use crate::pattern::{ListMatch, match_address_list, match_pattern_list};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Criterion {
    All,
    User(String),
    Group(String),
    Host(String),
    Address(String),
    LocalAddress(String),
    LocalPort(u16),
    RDomain(String),
}

/// The criteria of one `Match` line; all must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MatchLine(pub Vec<Criterion>);

/// Parse the arguments of `Match`. The message names what is wrong; the caller adds
/// file, line and keyword.
pub(crate) fn parse_match(args: &[String]) -> Result<MatchLine, String> {
    if args.is_empty() {
        return Err("one or more criteria required".into());
    }
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(name) = it.next() {
        if name.eq_ignore_ascii_case("all") {
            if args.len() > 1 {
                return Err("\"All\" cannot be combined with other criteria".into());
            }
            out.push(Criterion::All);
            continue;
        }
        let known = [
            "User",
            "Group",
            "Host",
            "Address",
            "LocalAddress",
            "LocalPort",
            "RDomain",
        ];
        let Some(canon) = known.iter().find(|k| k.eq_ignore_ascii_case(name)) else {
            return Err(format!("unsupported criterion \"{name}\""));
        };
        let arg = it
            .next()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("missing argument for criterion \"{canon}\""))?
            .clone();
        let c = match *canon {
            "User" => Criterion::User(arg),
            "Group" => Criterion::Group(arg),
            "Host" => Criterion::Host(arg),
            "RDomain" => Criterion::RDomain(arg),
            "Address" | "LocalAddress" => {
                // Validate the list now so a bad network is a load-time error.
                match_address_list(IpAddr::V4(Ipv4Addr::UNSPECIFIED), &arg)
                    .map_err(|e| format!("{canon}: {e}"))?;
                if *canon == "Address" {
                    Criterion::Address(arg)
                } else {
                    Criterion::LocalAddress(arg)
                }
            }
            _ => Criterion::LocalPort(
                arg.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("invalid LocalPort \"{arg}\""))?,
            ),
        };
        out.push(c);
    }
    Ok(MatchLine(out))
}

/// Group names of a user, looked up at most once per evaluation.
pub(crate) struct Groups<'a> {
    spec: &'a ConnSpec,
    cache: Option<Vec<String>>,
}

impl<'a> Groups<'a> {
    pub(crate) fn new(spec: &'a ConnSpec) -> Self {
        Groups { spec, cache: None }
    }

    fn get(&mut self, user: &str) -> &[String] {
        if self.cache.is_none() {
            self.cache = Some(match &self.spec.groups {
                Some(g) => g.clone(),
                None => system_groups(user),
            });
        }
        self.cache.as_deref().unwrap_or(&[])
    }
}

/// The primary and supplementary groups of `user` from the system databases (NSS), as
/// sshd's `ga_init`; an unknown user has none, so `Match Group` does not apply.
pub fn system_groups(user: &str) -> Vec<String> {
    use nix::unistd::{Group, User, getgrouplist};
    let Ok(Some(pw)) = User::from_name(user) else {
        return Vec::new();
    };
    let Ok(cname) = CString::new(user) else {
        return Vec::new();
    };
    let gids = getgrouplist(&cname, pw.gid).unwrap_or_else(|_| vec![pw.gid]);
    gids.into_iter()
        .filter_map(|g| Group::from_gid(g).ok().flatten())
        .map(|g| g.name)
        .collect()
}

fn addr(list: &str, ip: Option<IpAddr>) -> bool {
    ip.is_some_and(|ip| match_address_list(ip, list) == Ok(ListMatch::Positive))
}

impl MatchLine {
    /// Whether the line tests the user (`User`, `Group`), which is unknown before
    /// authentication starts.
    pub(crate) fn needs_user(&self) -> bool {
        self.0
            .iter()
            .any(|c| matches!(c, Criterion::User(_) | Criterion::Group(_)))
    }

    /// Whether this line applies to the connection. An attribute the spec does not
    /// carry makes its criterion false, which is what `sshd -T -C` does.
    pub(crate) fn matches(&self, spec: &ConnSpec, groups: &mut Groups) -> bool {
        self.0.iter().all(|c| match c {
            Criterion::All => true,
            Criterion::User(list) => spec
                .user
                .as_deref()
                .is_some_and(|u| match_pattern_list(u, list, false).is_positive()),
            Criterion::Group(list) => spec.user.as_deref().is_some_and(|u| {
                let mut found = false;
                for g in groups.get(u) {
                    match match_pattern_list(g, list, false) {
                        ListMatch::Negated => return false,
                        ListMatch::Positive => found = true,
                        ListMatch::None => {}
                    }
                }
                found
            }),
            Criterion::Host(list) => spec
                .host
                .as_deref()
                .is_some_and(|h| match_pattern_list(h, list, true).is_positive()),
            Criterion::Address(list) => addr(list, spec.addr),
            Criterion::LocalAddress(list) => addr(list, spec.laddr),
            Criterion::LocalPort(p) => spec.lport == Some(*p),
            Criterion::RDomain(list) => spec
                .rdomain
                .as_deref()
                .is_some_and(|r| match_pattern_list(r, list, false).is_positive()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Result<MatchLine, String> {
        let v: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        parse_match(&v)
    }

    fn spec(s: &str) -> ConnSpec {
        ConnSpec::parse_cli(s).unwrap()
    }

    fn hit(line: &str, s: &str) -> bool {
        let sp = spec(s);
        m(line).unwrap().matches(&sp, &mut Groups::new(&sp))
    }

    #[test]
    fn parse_errors() {
        assert!(m("").is_err());
        assert_eq!(m("Bogus x").unwrap_err(), "unsupported criterion \"Bogus\"");
        assert_eq!(
            m("User").unwrap_err(),
            "missing argument for criterion \"User\""
        );
        assert!(m("All User x").is_err());
        assert!(m("User x All").is_err());
        assert!(m("Address 10.0.0.0/99").is_err());
        assert!(m("LocalPort http").is_err());
        assert_eq!(
            m("rdomain blue").unwrap().0,
            vec![Criterion::RDomain("blue".into())]
        );
        assert_eq!(m("all").unwrap().0, vec![Criterion::All]);
        assert!(m("uSeR alice HOST x").is_ok());
    }

    #[test]
    fn each_criterion() {
        assert!(hit("All", "user=x"));
        assert!(hit("User alice,bob", "user=bob"));
        assert!(!hit("User alice", "user=Alice"));
        assert!(hit("User a*", "user=alice"));
        assert!(!hit("User *,!alice", "user=alice"));
        assert!(hit("User *,!alice", "user=bob"));
        assert!(hit("Host *.example.com", "host=WWW.Example.com"));
        assert!(!hit(
            "Host *.example.com,!bad.example.com",
            "host=bad.example.com"
        ));
        assert!(hit("Address 10.0.0.0/8", "addr=10.1.2.3"));
        assert!(!hit("Address 10.0.0.0/8,!10.1.0.0/16", "addr=10.1.2.3"));
        assert!(hit("Address 192.168.*", "addr=192.168.7.1"));
        assert!(hit("LocalAddress ::1", "laddr=::1"));
        assert!(!hit("LocalAddress 127.0.0.1", "laddr=::1"));
        assert!(hit("LocalPort 2222", "lport=2222"));
        assert!(!hit("LocalPort 2222", "lport=22"));
        // Linux: the VRF device; "" for a socket bound to none, which `*` matches
        // as in sshd (`rdomain ""` in its connection log line).
        assert!(hit("RDomain blue,red", "rdomain=red"));
        assert!(!hit("RDomain blue", "rdomain=red"));
        assert!(hit("RDomain *", "rdomain="));
        assert!(!hit("RDomain *,!red", "rdomain=red"));
        // All criteria on a line must hold.
        assert!(hit(
            "User alice Address 10.0.0.0/8",
            "user=alice,addr=10.0.0.1"
        ));
        assert!(!hit(
            "User alice Address 10.0.0.0/8",
            "user=alice,addr=11.0.0.1"
        ));
    }

    #[test]
    fn missing_attributes_never_match() {
        assert!(!hit("User *", "addr=10.0.0.1"));
        assert!(!hit("Group *", "addr=10.0.0.1"));
        assert!(!hit("Host *", "user=x"));
        assert!(!hit("Address *", "user=x"));
        assert!(!hit("LocalPort 22", "user=x"));
        assert!(!hit("RDomain *", "user=x"));
    }

    #[test]
    fn groups_from_spec_and_system() {
        let mut sp = spec("user=alice");
        sp.groups = Some(vec!["staff".into(), "wheel".into()]);
        let g = |line: &str, sp: &ConnSpec| m(line).unwrap().matches(sp, &mut Groups::new(sp));
        assert!(g("Group wheel", &sp));
        assert!(g("Group adm,staff", &sp));
        assert!(!g("Group *,!wheel", &sp));
        assert!(!g("Group adm", &sp));
        // root exists everywhere and is in group root.
        assert!(system_groups("root").iter().any(|g| g == "root"));
        assert!(g("Group root", &spec("user=root")));
        assert!(system_groups("no-such-user-rsshd").is_empty());
    }
}
