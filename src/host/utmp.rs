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
#[path = "utmp_tests.rs"]
mod tests;
