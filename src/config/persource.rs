//! `PerSourceMaxStartups`, `PerSourceNetBlockSize`, `PerSourcePenalties` and
//! `PerSourcePenaltyExemptList`: their values and how sshd 9.8 parses and prints
//! them (`servconf.c`). Plain functions over plain values, so the keyword table
//! only has to call them.

use std::time::Duration;

use super::time::parse_time;
use crate::pattern::parse_cidr;

/// `PerSourcePenalties`. Every field is `None` until the config sets it, because
/// sshd keeps the first value of each sub-option separately (two lines that set
/// different ones both count); [`PenaltySettings::effective`] fills in the
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PenaltySettings {
    pub enabled: Option<bool>,
    pub crash: Option<Duration>,
    pub authfail: Option<Duration>,
    pub noauth: Option<Duration>,
    pub grace_exceeded: Option<Duration>,
    pub max: Option<Duration>,
    pub min: Option<Duration>,
    pub max_sources4: Option<u32>,
    pub max_sources6: Option<u32>,
    pub overflow_deny_all: Option<bool>,
    pub overflow6_deny_all: Option<bool>,
}

/// The penalty rules in force, defaults applied (sshd 9.8's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalties {
    pub enabled: bool,
    pub crash: Duration,
    pub authfail: Duration,
    pub noauth: Duration,
    pub grace_exceeded: Duration,
    pub max: Duration,
    pub min: Duration,
    pub max_sources4: u32,
    pub max_sources6: u32,
    /// When the table of an address family is full: refuse everyone not exempt
    /// (`deny-all`) rather than forget the penalties nearest to expiry
    /// (`permissive`).
    pub overflow_deny_all: bool,
    pub overflow6_deny_all: bool,
}

impl PenaltySettings {
    pub fn effective(&self) -> Penalties {
        let overflow = self.overflow_deny_all.unwrap_or(false);
        Penalties {
            enabled: self.enabled.unwrap_or(true),
            crash: self.crash.unwrap_or(Duration::from_secs(90)),
            authfail: self.authfail.unwrap_or(Duration::from_secs(5)),
            noauth: self.noauth.unwrap_or(Duration::from_secs(1)),
            grace_exceeded: self.grace_exceeded.unwrap_or(Duration::from_secs(20)),
            max: self.max.unwrap_or(Duration::from_secs(600)),
            min: self.min.unwrap_or(Duration::from_secs(15)),
            max_sources4: self.max_sources4.unwrap_or(65536),
            max_sources6: self.max_sources6.unwrap_or(65536),
            overflow_deny_all: overflow,
            overflow6_deny_all: self.overflow6_deny_all.unwrap_or(overflow),
        }
    }
}

/// `PerSourceMaxStartups N|none`; `None` is no limit.
pub fn parse_max_startups(arg: &str) -> Result<Option<u32>, String> {
    if arg == "none" {
        return Ok(None);
    }
    arg.parse::<u32>()
        .ok()
        .filter(|n| i32::try_from(*n).is_ok())
        .map(Some)
        .ok_or_else(|| format!("integer value \"{arg}\" invalid"))
}

pub fn format_max_startups(v: Option<u32>) -> String {
    v.map_or_else(|| "none".to_string(), |n| n.to_string())
}

/// `PerSourceNetBlockSize v4[:v6]`: prefix lengths that group addresses into one
/// source. A missing IPv6 part is 0, as in sshd (its `sscanf` leaves it unset).
pub fn parse_net_block_size(arg: &str) -> Result<(u8, u8), String> {
    let bad = || format!("invalid spec \"{arg}\" (expected bits4[:bits6])");
    let (v4, v6) = match arg.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (arg, None),
    };
    let v4 = v4.parse::<u8>().ok().filter(|b| *b <= 32).ok_or_else(bad)?;
    let v6 = match v6 {
        Some(b) => b.parse::<u8>().ok().filter(|b| *b <= 128).ok_or_else(bad)?,
        None => 0,
    };
    Ok((v4, v6))
}

/// Apply one `PerSourcePenalties` line: `yes`/`no` alone, or `kind:value` words.
/// Each sub-option keeps its first value; any of them also turns penalties on.
pub fn apply_penalties(p: &mut PenaltySettings, args: &[String]) -> Result<(), String> {
    if args.is_empty() {
        return Err("no PerSourcePenalties specified".into());
    }
    for (i, arg) in args.iter().enumerate() {
        let yes = arg.eq_ignore_ascii_case("yes");
        if yes || arg.eq_ignore_ascii_case("no") {
            if i + 1 < args.len() {
                return Err(format!("\"{arg}\" argument must appear alone"));
            }
            p.enabled.get_or_insert(yes);
            continue;
        }
        let time = |v: &str| parse_time(v).ok_or_else(|| format!("invalid time value \"{arg}\""));
        let count = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| format!("invalid value \"{arg}\""))
        };
        let (key, value) = arg
            .split_once(':')
            .ok_or_else(|| format!("unsupported keyword {arg}"))?;
        let set = match key {
            "crash" => first(&mut p.crash, time(value)?),
            "authfail" => first(&mut p.authfail, time(value)?),
            "noauth" => first(&mut p.noauth, time(value)?),
            "grace-exceeded" => first(&mut p.grace_exceeded, time(value)?),
            "max" => first(&mut p.max, time(value)?),
            "min" => first(&mut p.min, time(value)?),
            "max-sources4" => first(&mut p.max_sources4, count(value)?),
            "max-sources6" => first(&mut p.max_sources6, count(value)?),
            "overflow" | "overflow6" => {
                let deny = match value {
                    "deny-all" => true,
                    "permissive" => false,
                    _ => return Err(format!("unsupported keyword {arg}")),
                };
                if key == "overflow" {
                    first(&mut p.overflow_deny_all, deny)
                } else {
                    first(&mut p.overflow6_deny_all, deny)
                }
            }
            _ => return Err(format!("unsupported keyword {arg}")),
        };
        // sshd: a sub-option that takes effect implicitly enables penalties, even
        // after an earlier `no`.
        if set {
            p.enabled = Some(true);
        }
    }
    Ok(())
}

/// Keep the first value set, as sshd does per sub-option; true if this one was.
fn first<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(value);
    true
}

/// `sshd -T`'s line for the effective penalties.
pub fn format_penalties(p: &PenaltySettings) -> String {
    let e = p.effective();
    if !e.enabled {
        return "no".into();
    }
    let mode = |deny: bool| if deny { "deny-all" } else { "permissive" };
    format!(
        "crash:{} authfail:{} noauth:{} grace-exceeded:{} max:{} min:{} max-sources4:{} \
         max-sources6:{} overflow:{} overflow6:{}",
        e.crash.as_secs(),
        e.authfail.as_secs(),
        e.noauth.as_secs(),
        e.grace_exceeded.as_secs(),
        e.max.as_secs(),
        e.min.as_secs(),
        e.max_sources4,
        e.max_sources6,
        mode(e.overflow_deny_all),
        mode(e.overflow6_deny_all),
    )
}

/// `PerSourcePenaltyExemptList`: a comma list of address patterns and networks.
/// A network's prefix must fit its family and leave no host bits set, as sshd
/// requires.
pub fn check_exempt_list(arg: &str) -> Result<(), String> {
    for entry in arg.split(',') {
        let pat = entry.strip_prefix('!').unwrap_or(entry);
        if pat.is_empty() {
            return Err(format!("invalid address argument \"{arg}\""));
        }
        if pat.contains('/') {
            let (net, len) =
                parse_cidr(pat).ok_or_else(|| format!("invalid address argument \"{pat}\""))?;
            if host_bits_set(net, len) {
                return Err(format!("invalid address argument \"{pat}\""));
            }
        }
    }
    Ok(())
}

fn host_bits_set(net: std::net::IpAddr, len: u8) -> bool {
    match net {
        std::net::IpAddr::V4(a) => {
            let host = if len >= 32 { 0 } else { u32::MAX >> len };
            u32::from(a) & host != 0
        }
        std::net::IpAddr::V6(a) => {
            let host = if len >= 128 { 0 } else { u128::MAX >> len };
            u128::from(a) & host != 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn penalties_defaults_and_first_value_per_sub_option() {
        let mut p = PenaltySettings::default();
        assert_eq!(
            format_penalties(&p),
            "crash:90 authfail:5 noauth:1 grace-exceeded:20 max:600 min:15 \
             max-sources4:65536 max-sources6:65536 overflow:permissive overflow6:permissive"
        );
        apply_penalties(&mut p, &words("authfail:1m noauth:0")).unwrap();
        apply_penalties(&mut p, &words("authfail:2m min:30s overflow:deny-all")).unwrap();
        let e = p.effective();
        assert_eq!(e.authfail, Duration::from_secs(60));
        assert_eq!(e.noauth, Duration::ZERO);
        assert_eq!(e.min, Duration::from_secs(30));
        assert!(e.overflow_deny_all && e.overflow6_deny_all);
    }

    #[test]
    fn penalties_yes_no_and_errors() {
        let mut p = PenaltySettings::default();
        apply_penalties(&mut p, &words("no")).unwrap();
        assert_eq!(format_penalties(&p), "no");
        // A later `yes` does not override the first `no`...
        apply_penalties(&mut p, &words("yes")).unwrap();
        assert_eq!(format_penalties(&p), "no");
        // ...but a sub-option turns penalties on again, as in sshd.
        apply_penalties(&mut p, &words("crash:1m")).unwrap();
        assert!(p.effective().enabled);
        for bad in [
            "no authfail:5",
            "authfail",
            "authfail:soon",
            "bogus:5",
            "overflow:maybe",
            "max-sources4:-1",
        ] {
            assert!(
                apply_penalties(&mut PenaltySettings::default(), &words(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn net_block_size_and_max_startups() {
        assert_eq!(parse_net_block_size("24"), Ok((24, 0)));
        assert_eq!(parse_net_block_size("24:64"), Ok((24, 64)));
        assert!(parse_net_block_size("33").is_err());
        assert!(parse_net_block_size("24:129").is_err());
        assert!(parse_net_block_size("x").is_err());
        assert_eq!(parse_max_startups("none"), Ok(None));
        assert_eq!(parse_max_startups("3"), Ok(Some(3)));
        assert!(parse_max_startups("-1").is_err());
        assert!(parse_max_startups("three").is_err());
    }

    #[test]
    fn exempt_lists() {
        assert!(check_exempt_list("127.0.0.1,10.0.0.0/8,!10.9.0.0/16,fd00::/8,192.168.*").is_ok());
        assert!(check_exempt_list("10.0.0.1/8").is_err(), "host bits set");
        assert!(
            check_exempt_list("192.0.2.0/33").is_err(),
            "prefix too long"
        );
        assert!(check_exempt_list("10.0.0.0/x").is_err());
        assert!(check_exempt_list("a,,b").is_err());
    }
}
