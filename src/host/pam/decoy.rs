//! Making a refused password attempt cost what a wrong password costs.
//!
//! For a decoy attempt (the user does not exist, is refused, or is root where
//! PermitRootLogin forbids passwords) PAM runs with junk instead of the client's
//! answer, as in sshd. That equalises PAM's delay on failure, but not its CPU:
//! pam_unix hashes the answer only when the user has an entry, so a name that does
//! not exist fails about 50 ms of CPU sooner (yescrypt, Debian 12's default; 5-6
//! clock ticks against 1 per attempt, measured on this machine). Once the daemon
//! is loaded, and an attacker can load it, that difference grows to seconds
//! (15 attempts at once, load average 14: 4.1-5.0 s against 2.2-2.4 s). So for a
//! name without an account, the junk is also hashed with the parameters of an
//! existing account's hash (as OpenSSH's `pick_salt` does for its non-PAM path)
//! until the attempt has used as much CPU as a failed check for an existing
//! account does.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

type CryptRnFn =
    unsafe extern "C" fn(*const c_char, *const c_char, *mut c_void, c_int) -> *mut c_char;

/// libxcrypt's `struct crypt_data` is 32 KiB; `crypt_rn` is told the size and
/// refuses a buffer that is too small rather than overrunning it.
const CRYPT_DATA_SIZE: usize = 32 * 1024;

/// The shadow file is root's and small; this bounds what one read may cost.
const SHADOW_CAP: u64 = 16 * 1024 * 1024;

struct Hasher {
    crypt_rn: CryptRnFn,
    /// Algorithm, cost and salt of an existing account's hash (never the hash).
    setting: CString,
}

// SAFETY: a function pointer into a library that stays loaded for the life of the
// process, and an immutable string; crypt_rn is reentrant (it keeps its state in
// the buffer passed to it).
unsafe impl Send for Hasher {}
unsafe impl Sync for Hasher {}

static HASHER: OnceLock<Option<Hasher>> = OnceLock::new();

/// The part of a crypt(3) hash that selects the algorithm, its cost and the salt:
/// everything before the last `$`. `None` for an entry that holds no hash (`*`,
/// `!`, `!$y$...` for a locked account, empty).
pub(super) fn setting_of(hash: &str) -> Option<&str> {
    if !hash.starts_with('$') {
        return None;
    }
    let (setting, _) = hash.rsplit_once('$')?;
    (setting.len() > 1).then_some(setting)
}

/// The first account in `/etc/shadow` that has a usable hash, as OpenSSH picks
/// the salt for its fake password.
fn setting_from_shadow() -> Option<String> {
    let mut text = String::new();
    std::fs::File::open("/etc/shadow")
        .ok()?
        .take(SHADOW_CAP)
        .read_to_string(&mut text)
        .ok()?;
    text.lines()
        .filter_map(|l| l.split(':').nth(1))
        .find_map(|h| setting_of(h).map(str::to_string))
}

/// libxcrypt's reentrant entry point (libcrypt.so.1 is what PAM itself uses).
fn crypt_rn() -> Option<CryptRnFn> {
    // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed,
    // and the symbol has the signature libxcrypt documents for crypt_rn.
    unsafe {
        let h = libc::dlopen(c"libcrypt.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            return None;
        }
        let p = libc::dlsym(h, c"crypt_rn".as_ptr());
        if p.is_null() {
            return None;
        }
        Some(std::mem::transmute::<*mut c_void, CryptRnFn>(p))
    }
}

fn load() -> Option<Hasher> {
    let crypt_rn = crypt_rn()?;
    let setting = CString::new(setting_from_shadow()?).ok()?;
    let hasher = Hasher { crypt_rn, setting };
    // A setting libcrypt does not take would make the decoy cheap again; say so.
    if hasher.hash("probe").is_none() {
        tracing::warn!("decoy password hash: libcrypt refuses the setting found in /etc/shadow");
        return None;
    }
    Some(hasher)
}

impl Hasher {
    /// Hash `phrase`; `None` if libcrypt refused. Blocking, CPU-bound.
    fn hash(&self, phrase: &str) -> Option<()> {
        let phrase = CString::new(phrase).ok()?;
        let mut data = vec![0u8; CRYPT_DATA_SIZE];
        // SAFETY: both strings are NUL-terminated and outlive the call; `data` is
        // a writable buffer of the size passed, which crypt_rn checks against its
        // own struct size.
        let out = unsafe {
            (self.crypt_rn)(
                phrase.as_ptr(),
                self.setting.as_ptr(),
                data.as_mut_ptr().cast(),
                CRYPT_DATA_SIZE as c_int,
            )
        };
        if out.is_null() {
            return None;
        }
        // SAFETY: on success crypt_rn returns a NUL-terminated string inside `data`.
        let text = unsafe { CStr::from_ptr(out) };
        (!text.to_bytes().starts_with(b"*")).then_some(())
    }
}

/// CPU time this thread has used. PAM's delay on failure is a sleep, so this
/// counts the work of a check (hashing, lookups) and not the delay.
pub(super) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// What a failed PAM check for an existing account has cost recently (a moving
/// average of its CPU time). Learned rather than assumed, because it depends on
/// the PAM stack and the hash: Debian 12's pam_unix spends two yescrypt hashes on
/// an existing user (5-6 ticks against one hash's 29 ms) and none on a name
/// without an account.
static EXISTING_COST: Mutex<Option<Duration>> = Mutex::new(None);

/// The most one padding may spend, whatever was learned: a bound on the work an
/// unauthenticated client can ask for per attempt.
const PAD_LIMIT: Duration = Duration::from_secs(1);

/// Record the CPU a failed check for an existing account took.
pub(super) fn learn(spent: Duration) {
    if let Ok(mut c) = EXISTING_COST.lock() {
        *c = Some(match *c {
            None => spent,
            // Weight 1/4 for the newest sample: follows a change of hash within a
            // few attempts without jumping on one outlier.
            Some(avg) => (avg * 3 + spent) / 4,
        });
    }
}

/// For a decoy whose name has no account: hash junk as an existing account's
/// check would, until this attempt has cost what such a check costs. Before
/// anything was learned, one hash. Blocking.
pub(super) fn pad(junk: &str) {
    let Some(h) = HASHER.get_or_init(load) else {
        return;
    };
    let target = EXISTING_COST
        .lock()
        .ok()
        .and_then(|c| *c)
        .map(|t| t.min(PAD_LIMIT));
    let start = thread_cpu();
    let mut one = Duration::ZERO;
    loop {
        let t = thread_cpu();
        let total = t - start;
        let more = match target {
            None => one.is_zero(),
            // Stop at the hash that lands nearest the target.
            Some(target) => total + one / 2 < target,
        };
        if !more || t - start > PAD_LIMIT {
            return;
        }
        if h.hash(junk).is_none() {
            return;
        }
        one = thread_cpu() - t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_keep_algorithm_cost_and_salt_only() {
        assert_eq!(
            setting_of("$y$j9T$o6bxl6nruWCv$abcdefHASH"),
            Some("$y$j9T$o6bxl6nruWCv")
        );
        assert_eq!(setting_of("$6$salt$HASH"), Some("$6$salt"));
        assert_eq!(
            setting_of("$6$rounds=9000$salt$HASH"),
            Some("$6$rounds=9000$salt")
        );
        for none in ["*", "!", "!$y$j9T$s$h", "", "!!", "x"] {
            assert_eq!(setting_of(none), None, "{none:?}");
        }
    }

    #[test]
    fn libcrypt_hashes_with_a_setting_and_refuses_a_non_hash() {
        let crypt_rn = crypt_rn().expect("libcrypt.so.1 with crypt_rn (libxcrypt)");
        let with = |s: &str| Hasher {
            crypt_rn,
            setting: CString::new(s).unwrap(),
        };
        assert!(with("$6$rounds=1000$saltsalt").hash("junk").is_some());
        assert!(with("$y$j9T$o6bxl6nruWCv").hash("junk").is_some());
        assert!(with("*").hash("junk").is_none());
    }
}
