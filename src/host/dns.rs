//! `UseDNS yes`: the client's host name as sshd's `remote_hostname` finds it. The
//! address is mapped to a name (PTR), the name back to addresses, and the name is
//! used only if the client's address is among them; otherwise the address is, with
//! sshd's log line. A PTR record that is itself an address is ignored.
//!
//! The resolver blocks and may hang for as long as its name servers do, so each
//! lookup runs on the blocking pool, at most [`CONCURRENT`] at once (the rest wait,
//! not fall back: falling back under load would let a flood turn `DenyUsers
//! u@*.example.com` off), and the connection waits at most [`DEADLINE`].

use std::ffi::{CStr, CString, c_char};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

/// How long a connection waits for its name. glibc's resolver gives up on a name
/// server after 5 s and tries twice by default, so 10 s covers one full failure of
/// each of the two lookups' first attempt; past it the address is used.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// Lookups running at once; a hung resolver holds at most this many threads.
const CONCURRENT: usize = 16;

fn permits() -> &'static tokio::sync::Semaphore {
    static SEM: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SEM.get_or_init(|| tokio::sync::Semaphore::new(CONCURRENT))
}

/// The confirmed name of `ip` (lower-case), or its address text.
pub async fn remote_hostname(ip: IpAddr) -> String {
    let ip = ip.to_canonical();
    let text = ip.to_string();
    let looked_up = async {
        let _permit = permits().acquire().await.ok()?;
        tokio::task::spawn_blocking(move || confirmed_name(ip))
            .await
            .ok()
    };
    match tokio::time::timeout(DEADLINE, looked_up).await {
        Ok(Some(Some(name))) => name,
        Ok(_) => text,
        Err(_) => {
            tracing::info!(
                "reverse mapping of {text} took longer than {}s; using the address",
                DEADLINE.as_secs()
            );
            text
        }
    }
}

/// sshd's `remote_hostname`, blocking; `None` means "use the address".
fn confirmed_name(ip: IpAddr) -> Option<String> {
    let name = name_of(ip)?;
    judge(ip, &name, |n| {
        (n, 0)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .ok()
    })
}

/// The decision once the PTR name is known: `forward` resolves a name to its
/// addresses (`None` when the lookup fails).
fn judge(
    ip: IpAddr,
    ptr: &str,
    forward: impl FnOnce(&str) -> Option<Vec<IpAddr>>,
) -> Option<String> {
    let ntop = ip.to_string();
    if is_numeric_host(ptr) {
        tracing::info!("Nasty PTR record \"{ptr}\" is set up for {ntop}, ignoring");
        return None;
    }
    let name = ptr.to_ascii_lowercase();
    // Only addresses of the client's family count, as sshd asks for that family.
    let addrs: Vec<IpAddr> = forward(&name)
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.to_canonical())
        .filter(|a| a.is_ipv4() == ip.is_ipv4())
        .collect();
    if addrs.is_empty() {
        tracing::info!("reverse mapping checking getaddrinfo for {name} [{ntop}] failed.");
        return None;
    }
    if !addrs.contains(&ip) {
        tracing::info!("Address {ntop} maps to {name}, but this does not map back to the address.");
        return None;
    }
    Some(name)
}

/// The PTR name of `ip` (getnameinfo with NI_NAMEREQD), if there is one.
#[allow(unsafe_code)]
fn name_of(ip: IpAddr) -> Option<String> {
    let sa = socket2::SockAddr::from(SocketAddr::new(ip, 0));
    let mut host = [0 as c_char; 1025]; // NI_MAXHOST
    // SAFETY: `sa` is a valid socket address of the stated length; `host` is a
    // writable buffer of the stated length, which getnameinfo NUL-terminates on
    // success; no service buffer is passed (null with length 0).
    let rc = unsafe {
        libc::getnameinfo(
            sa.as_ptr().cast::<libc::sockaddr>(),
            sa.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success getnameinfo wrote a NUL-terminated string into `host`.
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Whether `name` is an address as getaddrinfo with AI_NUMERICHOST reads one (which
/// includes inet_aton's forms, `10` or `0x7f.1`): a PTR record pointing at an
/// address is a trick, and sshd ignores it.
#[allow(unsafe_code)]
fn is_numeric_host(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: zeroed addrinfo is a valid "no hints" value, which we then fill in.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_NUMERICHOST;
    hints.ai_socktype = libc::SOCK_DGRAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: `c` is NUL-terminated, `hints` is initialised, `res` receives a list
    // we free below when the call succeeds.
    let rc = unsafe { libc::getaddrinfo(c.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc == 0 && !res.is_null() {
        // SAFETY: `res` came from a successful getaddrinfo and is freed once.
        unsafe { libc::freeaddrinfo(res) };
    }
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_names_are_recognised() {
        for n in ["1.2.3.4", "::1", "10", "0x7f.1", "127.1"] {
            assert!(is_numeric_host(n), "{n}");
        }
        for n in ["localhost", "host.example.com", "1.2.3.4.example.com"] {
            assert!(!is_numeric_host(n), "{n}");
        }
    }

    /// 127.0.0.1 is `localhost` in every /etc/hosts, and maps back.
    #[tokio::test]
    async fn loopback_maps_to_localhost_and_back() {
        assert_eq!(
            remote_hostname("127.0.0.1".parse().unwrap()).await,
            "localhost"
        );
        // A v4-mapped address is looked up as IPv4.
        assert_eq!(
            remote_hostname("::ffff:127.0.0.1".parse().unwrap()).await,
            "localhost"
        );
    }

    #[test]
    fn the_name_must_map_back() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let to = |v: &[&str]| Some(v.iter().map(|a| a.parse().unwrap()).collect());
        assert_eq!(
            judge(ip, "Host.Example.COM", |n| {
                assert_eq!(n, "host.example.com", "looked up lower-case");
                to(&["2001:db8::1", "192.0.2.7"])
            }),
            Some("host.example.com".into())
        );
        // Maps elsewhere, only to another family, or not at all: the address.
        assert_eq!(judge(ip, "h.example", |_| to(&["192.0.2.8"])), None);
        assert_eq!(
            judge(ip, "h.example", |_| to(&["::ffff:192.0.2.7"])),
            Some("h.example".into())
        );
        assert_eq!(judge(ip, "h.example", |_| to(&["2001:db8::1"])), None);
        assert_eq!(judge(ip, "h.example", |_| None), None);
        // A PTR record that is an address is never believed.
        assert_eq!(judge(ip, "192.0.2.7", |_| to(&["192.0.2.7"])), None);
    }
}
