//! A user certificate's critical options and extensions as session permissions,
//! merged with the options of the line that authorised it, and the checks sshd
//! applies to each set of options before it believes them (auth-options.c,
//! auth2-pubkeyfile.c). Plain data in, plain data out; the log lines are sshd's.

use std::net::IpAddr;

use russh::keys::ssh_key::Certificate;
use russh::keys::ssh_key::certificate::CertType;

use super::key_options::KeyOptions;
use crate::pattern::{ListMatch, cidr_contains, match_host_and_ip, parse_cidr};

/// The permissions a certificate grants by itself. Unlike a plain key, a
/// certificate starts with nothing: each of pty, port forwarding, agent forwarding,
/// X11 forwarding and ~/.ssh/rc must be granted by its extension. `None` (logged)
/// when its options are malformed or name a critical option rsshd does not know:
/// the certificate is then refused ("Invalid certificate options").
pub(crate) fn from_cert(cert: &Certificate) -> Option<KeyOptions> {
    // sshd's sshauthopt_from_cert takes user certificates only.
    if cert.cert_type() != CertType::User {
        return None;
    }
    let mut o = KeyOptions {
        no_pty: true,
        no_port_forwarding: true,
        no_agent_forwarding: true,
        no_x11_forwarding: true,
        no_user_rc: true,
        ..KeyOptions::default()
    };
    for (name, _) in cert.extensions().iter() {
        match name.as_str() {
            "permit-pty" => o.no_pty = false,
            "permit-port-forwarding" => o.no_port_forwarding = false,
            "permit-agent-forwarding" => o.no_agent_forwarding = false,
            "permit-X11-forwarding" => o.no_x11_forwarding = false,
            "permit-user-rc" => o.no_user_rc = false,
            "no-touch-required" => o.no_touch_required = true,
            other => tracing::info!("Certificate extension \"{other}\" is not supported"),
        }
    }
    // The options map keeps each name once (ssh-key refuses a repeated or unsorted
    // name when decoding), so "multiple force-command options" cannot occur here.
    for (name, data) in cert.critical_options().iter() {
        match name.as_str() {
            "verify-required" => o.verify_required = true,
            "force-command" => o.command = Some(data.clone()),
            "source-address" => {
                if cidr_list_admits(data, None).is_err() {
                    tracing::error!("Certificate source-address contents invalid");
                    return None;
                }
                o.source_address = Some(data.clone());
            }
            other => {
                tracing::error!("Certificate critical option \"{other}\" is not supported");
                return None;
            }
        }
    }
    Some(o)
}

/// sshd's `addr_match_cidr_list`: a comma-separated list of networks (no patterns,
/// no negation); `Err` if any entry is not a network (host bits set included).
/// With no address, only the list's syntax is checked.
fn cidr_list_admits(list: &str, ip: Option<IpAddr>) -> Result<bool, ()> {
    let mut hit = false;
    for entry in list.split(',') {
        let (net, len) = parse_cidr(entry.trim()).ok_or(())?;
        // A network with host bits set is malformed for sshd (addr_pton_cidr).
        if masked(net, len) != net {
            return Err(());
        }
        if ip.is_some_and(|ip| cidr_contains(net, len, ip)) {
            hit = true;
        }
    }
    Ok(hit)
}

fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((u32::from(v4) & m).into())
        }
        IpAddr::V6(v6) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            IpAddr::V6((u128::from(v6) & m).into())
        }
    }
}

/// Where a set of options came from, for sshd's log prefix (`file:line`, `cert`,
/// `principals`), and who is logging in from where.
pub(crate) struct Judged<'a> {
    pub loc: &'a str,
    pub user: &'a str,
    pub remote_host: &'a str,
    pub remote_ip: IpAddr,
}

/// sshd's `auth_authorise_keyopts`: whether these options let the client in now.
/// `allow_ca`: a `cert-authority` option is allowed here (authorized_keys only).
pub(crate) fn authorise(o: &KeyOptions, allow_ca: bool, j: &Judged) -> bool {
    let loc = j.loc;
    if o.expires.is_some_and(|t| now_unix() > t) {
        tracing::debug!("{loc}: entry expired");
        return false;
    }
    if o.principals.is_some() && !o.cert_authority {
        tracing::debug!("{loc}: principals on non-CA key");
        return false;
    }
    if !allow_ca && o.cert_authority {
        tracing::debug!("{loc}: cert-authority flag invalid here");
        return false;
    }
    if let Some(from) = &o.from {
        let ok = match match_host_and_ip(j.remote_host, j.remote_ip, from) {
            Ok(m) => m == ListMatch::Positive,
            Err(e) => {
                tracing::debug!("{loc}: invalid from criteria: {e}");
                false
            }
        };
        if !ok {
            tracing::info!(
                "{loc}: Authentication tried for {} with correct key but not from a permitted host (host={}, ip={}, required={from}).",
                j.user,
                j.remote_host,
                j.remote_ip
            );
            return false;
        }
    }
    if let Some(list) = &o.source_address {
        let ok = match cidr_list_admits(list, Some(j.remote_ip)) {
            Ok(ok) => ok,
            Err(()) => {
                tracing::error!("{loc}: Certificate source-address invalid");
                false
            }
        };
        if !ok {
            tracing::info!(
                "{loc}: Authentication tried for {} with valid certificate but not from a permitted source address ({}).",
                j.user,
                j.remote_ip
            );
            return false;
        }
    }
    true
}

/// sshd's `sshauthopt_merge`: the options of the line that authorised a certificate
/// (`primary`) with the certificate's own. A permission must be granted by both, a
/// restriction by either; lists come from the line; the earlier expiry wins; two
/// different forced commands refuse the login.
pub(crate) fn merge(primary: &KeyOptions, cert: &KeyOptions) -> Result<KeyOptions, &'static str> {
    let command = match (&primary.command, &cert.command) {
        (Some(a), Some(b)) if a != b => return Err("forced command options do not match"),
        (Some(a), _) => Some(a.clone()),
        (None, b) => b.clone(),
    };
    Ok(KeyOptions {
        command,
        from: primary.from.clone().or_else(|| cert.from.clone()),
        source_address: primary
            .source_address
            .clone()
            .or_else(|| cert.source_address.clone()),
        no_pty: primary.no_pty || cert.no_pty,
        no_port_forwarding: primary.no_port_forwarding || cert.no_port_forwarding,
        no_agent_forwarding: primary.no_agent_forwarding || cert.no_agent_forwarding,
        no_x11_forwarding: primary.no_x11_forwarding || cert.no_x11_forwarding,
        no_user_rc: primary.no_user_rc || cert.no_user_rc,
        verify_required: primary.verify_required || cert.verify_required,
        // A waiver both must grant, as the permissions above.
        no_touch_required: primary.no_touch_required && cert.no_touch_required,
        environment: first(&primary.environment, &cert.environment),
        permit_open: first(&primary.permit_open, &cert.permit_open),
        permit_listen: first(&primary.permit_listen, &cert.permit_listen),
        expires: match (primary.expires, cert.expires) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        // Cleared in the result, as sshd does.
        cert_authority: false,
        principals: None,
    })
}

/// The primary's list unless it is empty.
fn first<T: Clone>(primary: &[T], additional: &[T]) -> Vec<T> {
    if primary.is_empty() {
        additional.to_vec()
    } else {
        primary.to_vec()
    }
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_address_lists() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(cidr_list_admits("10.0.0.0/8", Some(ip)), Ok(true));
        assert_eq!(
            cidr_list_admits("192.0.2.0/24,10.1.2.3", Some(ip)),
            Ok(true)
        );
        assert_eq!(cidr_list_admits("192.0.2.0/24", Some(ip)), Ok(false));
        assert!(cidr_list_admits("10.0.0.1/8", Some(ip)).is_err());
        assert!(cidr_list_admits("10.*", Some(ip)).is_err());
        assert!(cidr_list_admits("!10.0.0.0/8", Some(ip)).is_err());
        assert!(cidr_list_admits("", Some(ip)).is_err());
    }

    #[test]
    fn merge_is_sshds() {
        let line = KeyOptions {
            no_agent_forwarding: true,
            command: Some("a".into()),
            expires: Some(10),
            ..KeyOptions::default()
        };
        let cert = KeyOptions {
            no_pty: true,
            expires: Some(5),
            ..KeyOptions::default()
        };
        let m = merge(&line, &cert).unwrap();
        assert!(m.no_pty && m.no_agent_forwarding && !m.no_port_forwarding);
        assert_eq!(m.command.as_deref(), Some("a"));
        assert_eq!(m.expires, Some(5));
        let other = KeyOptions {
            command: Some("b".into()),
            ..KeyOptions::default()
        };
        assert_eq!(
            merge(&line, &other),
            Err("forced command options do not match")
        );
    }
}
