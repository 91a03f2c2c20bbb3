//! Login accounting: utmp and wtmp records for PTY sessions, so the system's own
//! `w`, `who` and `last` see rsshd sessions the way they see sshd's.
//!
//! The records follow what OpenSSH's loginrec and login(1) write, because those
//! tools (and anything else parsing utmp, such as session-idle scripts) match
//! entries by `ut_id`/`ut_line` and expect the same conventions.

use std::ffi::{CString, c_char};
use std::io;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::HostError;

/// glibc's `_PATH_UTMPX`. Spelled exactly as glibc does (not `/run/utmp`, which it
/// is through the `/var/run` symlink) so that `utmpxname` recognises it as the
/// default and drops any test path set earlier in the same process.
const UTMP_PATH: &str = "/var/run/utmp";
/// glibc's `_PATH_WTMPX`.
const WTMP_PATH: &str = "/var/log/wtmp";

unsafe extern "C" {
    /// In glibc but not bound by the libc crate. Appends under an fcntl lock and
    /// reports no errors.
    fn updwtmpx(wtmpx_file: *const c_char, utmpx: *const libc::utmpx);
}

/// The utmpx API keeps the file name and an open descriptor in process-wide
/// state, so concurrent sessions logging in or out would otherwise interleave
/// `utmpxname`/`setutxent`/`pututxline` calls and write to the wrong place.
static UTMPX_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    // The guarded data is `()`, so a panic elsewhere cannot leave it inconsistent.
    UTMPX_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// sshd's default `-u`: HOST_NAME_MAX + 1.
pub const DEFAULT_HOST_LEN: usize = 65;

/// `-u len`: a remote host name longer than this goes into utmp as the address
/// instead; 0 means always the address.
static HOST_LEN: AtomicUsize = AtomicUsize::new(DEFAULT_HOST_LEN);

/// Set `-u len` for the records written from now on.
pub fn set_host_len(len: usize) {
    HOST_LEN.store(len, Ordering::Relaxed);
}

/// The host text for the records: the name, unless `-u` says it does not fit
/// (sshd's `session_get_remote_name_or_ip`).
fn host_field(rec: &LoginRecord) -> String {
    let len = HOST_LEN.load(Ordering::Relaxed);
    if len == 0 || rec.host.len() > len {
        match rec.addr.to_canonical() {
            addr if addr.is_unspecified() => "UNKNOWN".to_string(),
            addr => addr.to_string(),
        }
    } else {
        rec.host.clone()
    }
}

/// Why login accounting is off for this process, if it is: said once at start, so
/// that a user who cannot write the system's utmp (anyone but root, usually) gets
/// one line instead of an error per login.
pub fn accounting_off_reason() -> Option<String> {
    off_reason(Path::new(UTMP_PATH))
}

fn off_reason(utmp: &Path) -> Option<String> {
    if !utmp.exists() {
        return Some(format!("{} does not exist", utmp.display()));
    }
    match nix::unistd::access(utmp, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "{} is not writable by uid {} ({e})",
            utmp.display(),
            nix::unistd::geteuid()
        )),
    }
}

/// Whether this process may write `path` (checked per record: cheap, and it keeps
/// an unprivileged run from failing on every login).
fn writable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// One PTY login, as plain data so it can cross a privilege boundary later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    /// The slave device, e.g. `/dev/pts/3`.
    pub tty: PathBuf,
    pub user: String,
    /// Remote address text, shown by `who`/`w`/`last` in their FROM column.
    pub host: String,
    pub addr: IpAddr,
    /// The session leader: `who` drops entries whose pid is gone.
    pub pid: i32,
}

/// Records a login in utmp (so `w`/`who` list it) and wtmp (so `last` does).
/// A missing or unwritable file is not an error: accounting is off where the system
/// has none (Debian 13 has no utmp) or we may not write it (see
/// [`accounting_off_reason`]).
pub fn record_login(rec: &LoginRecord) -> Result<(), HostError> {
    record_login_in(Path::new(UTMP_PATH), Path::new(WTMP_PATH), rec)
}

/// Marks the line dead in utmp, with user and host cleared as logout(3) does so
/// nothing stale is attributed to the next user of the same pts, and appends the
/// logout record `last` pairs with the login by line.
pub fn record_logout(tty: &Path, pid: i32) -> Result<(), HostError> {
    record_logout_in(Path::new(UTMP_PATH), Path::new(WTMP_PATH), tty, pid)
}

fn record_login_in(utmp: &Path, wtmp: &Path, rec: &LoginRecord) -> Result<(), HostError> {
    let mut ut = base_entry(libc::USER_PROCESS, &rec.tty, rec.pid)?;
    copy_field(&mut ut.ut_user, rec.user.as_bytes());
    copy_field(&mut ut.ut_host, host_field(rec).as_bytes());
    ut.ut_addr_v6 = addr_words(rec.addr);
    write_both(utmp, wtmp, &ut)
}

fn record_logout_in(utmp: &Path, wtmp: &Path, tty: &Path, pid: i32) -> Result<(), HostError> {
    let ut = base_entry(libc::DEAD_PROCESS, tty, pid)?;
    write_both(utmp, wtmp, &ut)
}

/// The fields login and logout records share; everything else stays zero.
fn base_entry(kind: libc::c_short, tty: &Path, pid: i32) -> Result<libc::utmpx, HostError> {
    let line = tty_line(tty)?;
    // SAFETY: utmpx is plain integers and byte arrays; all-zero is a valid value
    // and is what the C tools start from.
    let mut ut: libc::utmpx = unsafe { std::mem::zeroed() };
    ut.ut_type = kind;
    ut.ut_pid = pid;
    ut.ut_session = pid as _;
    copy_field(&mut ut.ut_line, line);
    copy_field(&mut ut.ut_id, line_id(line));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // On x86_64 the on-disk format keeps 32-bit seconds for compatibility.
    ut.ut_tv.tv_sec = now.as_secs() as _;
    ut.ut_tv.tv_usec = now.subsec_micros() as _;
    Ok(ut)
}

/// `ut_line` is the device path relative to /dev, as every reader expects.
fn tty_line(tty: &Path) -> Result<&[u8], HostError> {
    let full = tty.as_os_str().as_bytes();
    let line = full.strip_prefix(b"/dev/").unwrap_or(full);
    // A silently truncated line would match, and later overwrite, another
    // session's entry, so refuse instead.
    if line.is_empty() || line.len() > libc::__UT_LINESIZE || line.contains(&0) {
        return Err(HostError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tty {} does not fit a utmp line", tty.display()),
        )));
    }
    Ok(line)
}

/// `ut_id` is the line's last four bytes, the convention of login(1) and
/// OpenSSH: glibc's pututxline finds the entry to replace by this id, so the
/// logout record must compute the same one as the login record did.
fn line_id(line: &[u8]) -> &[u8] {
    &line[line.len().saturating_sub(4)..]
}

/// strncpy semantics: truncate to the field, NUL-pad, no terminator when full,
/// which is how the C readers expect fixed-size utmp strings.
fn copy_field(dst: &mut [c_char], src: &[u8]) {
    dst.fill(0);
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s as c_char;
    }
}

/// Addresses are stored in network byte order; IPv4 (including IPv4-mapped
/// IPv6, as dual-stack listeners report it) goes in the first word only, which
/// is where `last -i` and `w` look for it.
fn addr_words(addr: IpAddr) -> [i32; 4] {
    let mut words = [0i32; 4];
    match addr.to_canonical() {
        IpAddr::V4(v4) => words[0] = i32::from_ne_bytes(v4.octets()),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            for (i, word) in words.iter_mut().enumerate() {
                *word = i32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
            }
        }
    }
    words
}

/// Writes utmp and wtmp independently so a failure in one still leaves the other
/// accurate; the first error is reported.
fn write_both(utmp: &Path, wtmp: &Path, ut: &libc::utmpx) -> Result<(), HostError> {
    let _guard = lock();
    let utmp_result = if utmp.exists() && writable(utmp) {
        put_utmp(utmp, ut)
    } else {
        Ok(())
    };
    let wtmp_result = if wtmp.exists() && writable(wtmp) {
        append_wtmp(wtmp, ut)
    } else {
        Ok(())
    };
    utmp_result.and(wtmp_result)
}

fn path_cstring(path: &Path) -> Result<CString, HostError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        HostError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", path.display()),
        ))
    })
}

/// Caller holds `UTMPX_LOCK`.
fn put_utmp(utmp: &Path, ut: &libc::utmpx) -> Result<(), HostError> {
    let name = path_cstring(utmp)?;
    // SAFETY: `name` and `ut` outlive the calls; glibc copies the file name; the
    // lock serialises all use of the API's global state in this process.
    unsafe {
        if libc::utmpxname(name.as_ptr()) != 0 {
            return Err(HostError::Os {
                what: format!("utmpxname {}", utmp.display()),
                source: nix::Error::last(),
            });
        }
        libc::setutxent();
        let written = libc::pututxline(ut);
        // Read errno before endutxent can change it.
        let err = nix::Error::last();
        libc::endutxent();
        if written.is_null() {
            return Err(HostError::Os {
                what: format!("writing {}", utmp.display()),
                source: err,
            });
        }
    }
    Ok(())
}

/// Caller holds `UTMPX_LOCK` (not needed by updwtmpx itself, but keeps all
/// accounting writes of this process ordered).
fn append_wtmp(wtmp: &Path, ut: &libc::utmpx) -> Result<(), HostError> {
    let name = path_cstring(wtmp)?;
    // SAFETY: both pointers are valid for the duration of the call.
    unsafe { updwtmpx(name.as_ptr(), ut) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::Command;

    /// Empty utmp and wtmp files, removed when the test ends.
    struct TempFiles {
        utmp: PathBuf,
        wtmp: PathBuf,
    }

    impl Drop for TempFiles {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.utmp);
            let _ = std::fs::remove_file(&self.wtmp);
        }
    }

    fn temp_files(name: &str) -> TempFiles {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/utmp-test");
        std::fs::create_dir_all(&dir).unwrap();
        let utmp = dir.join(format!("{name}-{}.utmp", std::process::id()));
        let wtmp = dir.join(format!("{name}-{}.wtmp", std::process::id()));
        std::fs::File::create(&utmp).unwrap();
        std::fs::File::create(&wtmp).unwrap();
        TempFiles { utmp, wtmp }
    }

    fn read_utmp(path: &Path) -> Vec<libc::utmpx> {
        let _guard = lock();
        let name = CString::new(path.as_os_str().as_bytes()).unwrap();
        let default = CString::new(UTMP_PATH).unwrap();
        let mut out = Vec::new();
        // SAFETY: the C library's utmpx iterator is process-global state; the
        // lock serializes every test that uses it. Each entry is copied out
        // before the next call overwrites it, and both names are live C strings.
        unsafe {
            assert_eq!(libc::utmpxname(name.as_ptr()), 0);
            libc::setutxent();
            loop {
                let ent = libc::getutxent();
                if ent.is_null() {
                    break;
                }
                out.push(*ent);
            }
            libc::endutxent();
            libc::utmpxname(default.as_ptr());
        }
        out
    }

    fn read_wtmp(path: &Path) -> Vec<libc::utmpx> {
        let bytes = std::fs::read(path).unwrap();
        let size = std::mem::size_of::<libc::utmpx>();
        assert_eq!(bytes.len() % size, 0, "wtmp holds whole records");
        bytes
            .chunks_exact(size)
            // SAFETY: each chunk is exactly one record's size, utmpx is plain
            // data (any bytes are a value), and read_unaligned allows any address.
            .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<libc::utmpx>()) })
            .collect()
    }

    fn text(field: &[c_char]) -> String {
        let bytes: Vec<u8> = field
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8(bytes).unwrap()
    }

    fn now_secs() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn alice(tty: &str, pid: i32) -> LoginRecord {
        LoginRecord {
            tty: PathBuf::from(tty),
            user: "alice".into(),
            host: "192.0.2.7".into(),
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            pid,
        }
    }

    #[test]
    fn login_and_logout_records_in_utmp_and_wtmp() {
        let files = temp_files("roundtrip");
        let (utmp, wtmp) = (&files.utmp, &files.wtmp);
        record_login_in(utmp, wtmp, &alice("/dev/pts/3", 4242)).unwrap();

        let entries = read_utmp(utmp);
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.ut_type, libc::USER_PROCESS);
        assert_eq!(text(&e.ut_line), "pts/3");
        assert_eq!(text(&e.ut_id), "ts/3");
        assert_eq!(text(&e.ut_user), "alice");
        assert_eq!(text(&e.ut_host), "192.0.2.7");
        assert_eq!(e.ut_pid, 4242);
        assert_eq!(e.ut_session as i64, 4242);
        assert_eq!(e.ut_addr_v6, [i32::from_ne_bytes([192, 0, 2, 7]), 0, 0, 0]);
        assert!((now_secs() - e.ut_tv.tv_sec as i64).abs() < 5);

        record_logout_in(utmp, wtmp, Path::new("/dev/pts/3"), 4242).unwrap();
        let entries = read_utmp(utmp);
        assert_eq!(entries.len(), 1, "logout replaces the login entry");
        let e = &entries[0];
        assert_eq!(e.ut_type, libc::DEAD_PROCESS);
        assert_eq!(text(&e.ut_line), "pts/3");
        assert_eq!(text(&e.ut_user), "");
        assert_eq!(text(&e.ut_host), "");
        assert_eq!(e.ut_pid, 4242);

        let log = read_wtmp(wtmp);
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].ut_type, libc::USER_PROCESS);
        assert_eq!(text(&log[0].ut_line), "pts/3");
        assert_eq!(text(&log[0].ut_user), "alice");
        assert_eq!(text(&log[0].ut_host), "192.0.2.7");
        assert_eq!(log[0].ut_pid, 4242);
        assert_eq!(log[1].ut_type, libc::DEAD_PROCESS);
        assert_eq!(text(&log[1].ut_line), "pts/3");
        assert_eq!(text(&log[1].ut_user), "");
        assert_eq!(log[1].ut_pid, 4242);
    }

    #[test]
    fn logout_leaves_other_lines_alone() {
        let files = temp_files("two-lines");
        let (utmp, wtmp) = (&files.utmp, &files.wtmp);
        record_login_in(utmp, wtmp, &alice("/dev/pts/3", 10)).unwrap();
        record_login_in(utmp, wtmp, &alice("/dev/pts/13", 11)).unwrap();
        record_logout_in(utmp, wtmp, Path::new("/dev/pts/3"), 10).unwrap();
        let entries = read_utmp(utmp);
        assert_eq!(entries.len(), 2);
        let kind = |line: &str| {
            entries
                .iter()
                .find(|e| text(&e.ut_line) == line)
                .map(|e| e.ut_type)
        };
        assert_eq!(kind("pts/3"), Some(libc::DEAD_PROCESS));
        assert_eq!(kind("pts/13"), Some(libc::USER_PROCESS));
        assert_eq!(read_wtmp(wtmp).len(), 3);
    }

    #[test]
    fn missing_files_are_skipped() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/utmp-test");
        let utmp = dir.join("absent.utmp");
        let wtmp = dir.join("absent.wtmp");
        record_login_in(&utmp, &wtmp, &alice("/dev/pts/3", 1)).unwrap();
        record_logout_in(&utmp, &wtmp, Path::new("/dev/pts/3"), 1).unwrap();
        assert!(
            !utmp.exists() && !wtmp.exists(),
            "skipping must not create them"
        );

        // One present, one absent: the present one is still written.
        let files = temp_files("only-utmp");
        let utmp = &files.utmp;
        record_login_in(utmp, &wtmp, &alice("/dev/pts/4", 1)).unwrap();
        assert_eq!(read_utmp(utmp).len(), 1);
    }

    #[test]
    fn bad_ttys_are_refused_not_truncated() {
        let files = temp_files("bad-tty");
        let (utmp, wtmp) = (&files.utmp, &files.wtmp);
        let long = format!("/dev/{}", "x".repeat(libc::__UT_LINESIZE + 1));
        assert!(record_login_in(utmp, wtmp, &alice(&long, 1)).is_err());
        assert!(record_login_in(utmp, wtmp, &alice("/dev/", 1)).is_err());
        assert!(record_logout_in(utmp, wtmp, Path::new(&long), 1).is_err());
        assert!(read_utmp(utmp).is_empty());
    }

    #[test]
    fn line_and_id_conventions() {
        assert_eq!(tty_line(Path::new("/dev/pts/3")).unwrap(), b"pts/3");
        assert_eq!(tty_line(Path::new("pts/7")).unwrap(), b"pts/7");
        assert_eq!(line_id(b"pts/3"), b"ts/3");
        assert_eq!(line_id(b"pts/123"), b"/123");
        assert_eq!(line_id(b"tty"), b"tty");
    }

    #[test]
    fn addresses_in_network_order() {
        let v4 = Ipv4Addr::new(10, 1, 2, 3);
        let expect = [i32::from_ne_bytes([10, 1, 2, 3]), 0, 0, 0];
        assert_eq!(addr_words(IpAddr::V4(v4)), expect);
        assert_eq!(addr_words(IpAddr::V6(v4.to_ipv6_mapped())), expect);
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let words = addr_words(IpAddr::V6(v6));
        assert_eq!(words[0], i32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]));
        assert_eq!(words[3], i32::from_ne_bytes([0, 0, 0, 1]));
    }

    #[test]
    fn long_fields_are_truncated_safely() {
        let files = temp_files("long-fields");
        let (utmp, wtmp) = (&files.utmp, &files.wtmp);
        let mut rec = alice("/dev/pts/5", 1);
        rec.user = "u".repeat(100);
        rec.host = "h".repeat(1000);
        record_login_in(utmp, wtmp, &rec).unwrap();
        let e = read_utmp(utmp)[0];
        assert!(e.ut_user.iter().all(|&c| c == b'u' as c_char));
        // Longer than `-u` allows (sshd's default 65): the address instead.
        assert_eq!(text(&e.ut_host), "192.0.2.7");
    }

    /// `-u`: a host name longer than the limit, or any with `-u0`, is recorded
    /// as the address.
    #[test]
    fn host_length_limit_records_the_address() {
        let files = temp_files("host-len");
        let (utmp, wtmp) = (&files.utmp, &files.wtmp);
        let mut rec = alice("/dev/pts/8", 1);
        rec.host = "a-rather-long-name.example.org".into();
        let host_of = |rec: &LoginRecord| {
            record_login_in(utmp, wtmp, rec).unwrap();
            let e = read_utmp(utmp)
                .into_iter()
                .find(|e| text(&e.ut_line) == "pts/8")
                .unwrap();
            text(&e.ut_host)
        };
        // One test changes the process-wide value, and restores it.
        set_host_len(10);
        let short = host_of(&rec);
        set_host_len(0);
        rec.host = "h".into();
        let zero = host_of(&rec);
        set_host_len(DEFAULT_HOST_LEN);
        let default = host_of(&rec);
        assert_eq!(short, "192.0.2.7", "longer than -u 10: the address");
        assert_eq!(zero, "192.0.2.7", "-u0: always the address");
        assert_eq!(default, "h");
    }

    #[test]
    fn accounting_off_is_explained() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/utmp-test");
        let reason = off_reason(&dir.join("absent.utmp")).unwrap();
        assert!(reason.contains("does not exist"), "{reason}");
        let files = temp_files("writable");
        assert_eq!(off_reason(&files.utmp), None);
    }

    fn run(cmd: &str, args: &[&Path]) -> Option<String> {
        match Command::new(cmd).args(args).output() {
            Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
            Ok(out) => panic!("{cmd} failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => {
                crate::testing::skip(&format!("{cmd} cannot run: {e}"));
                None
            }
        }
    }

    /// The files must be readable by the real tools, not just by our reader.
    #[test]
    fn who_and_last_read_the_files() {
        let files = temp_files("tools");
        let (utmp, wtmp) = (&files.utmp, &files.wtmp);
        let line_listed = |out: &str| {
            out.lines()
                .any(|l| l.contains("alice") && l.contains("pts/6"))
        };
        record_login_in(utmp, wtmp, &alice("/dev/pts/6", std::process::id() as i32)).unwrap();
        if let Some(out) = run("who", &[utmp]) {
            assert!(line_listed(&out), "who lists the login: {out:?}");
        }
        record_logout_in(
            utmp,
            wtmp,
            Path::new("/dev/pts/6"),
            std::process::id() as i32,
        )
        .unwrap();
        if let Some(out) = run("who", &[utmp]) {
            assert!(!line_listed(&out), "who no longer lists it: {out:?}");
        }
        let f = Path::new("-f");
        if let Some(out) = run("last", &[f, wtmp]) {
            let entry = out
                .lines()
                .find(|l| l.contains("alice") && l.contains("pts/6"));
            let entry = entry.unwrap_or_else(|| panic!("last lists the session: {out:?}"));
            assert!(
                !entry.contains("still logged in"),
                "last sees the logout: {entry:?}"
            );
        }
    }

    /// Against the system's own utmp, with the real entry points.
    #[test]
    fn system_who_sees_login_and_logout() {
        if !nix::unistd::geteuid().is_root() {
            crate::testing::skip("writing the system utmp needs root");
            return;
        }
        if !Path::new(UTMP_PATH).exists() {
            crate::testing::skip(&format!("{UTMP_PATH} does not exist (.ci/run creates it)"));
            return;
        }
        // `who` without a file argument drops entries whose pid is dead, so use ours.
        let pid = std::process::id() as i32;
        let tty = PathBuf::from(format!("/dev/pts/{}", 9000 + pid % 1000));
        let line = format!("pts/{}", 9000 + pid % 1000);
        let rec = LoginRecord {
            tty: tty.clone(),
            user: "rsshd-test".into(),
            host: "192.0.2.9".into(),
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
            pid,
        };
        let listed = || {
            run("who", &[]).map(|out| {
                out.lines()
                    .any(|l| l.contains("rsshd-test") && l.contains(&line))
            })
        };
        record_login(&rec).unwrap();
        let after_login = listed();
        record_logout(&tty, pid).unwrap();
        let after_logout = listed();
        if let (Some(a), Some(b)) = (after_login, after_logout) {
            assert!(a, "who lists {line} after record_login");
            assert!(!b, "who does not list {line} after record_logout");
        }
    }
}
