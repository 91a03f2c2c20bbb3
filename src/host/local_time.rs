//! Local time as the C library formats it: the zone of `TZ` or `/etc/localtime`,
//! names in the C locale (rsshd never calls setlocale). One formatter for the
//! times a person reads: `Last login:`, `ls -l` in sftp, `rsshd sessions`'
//! `LOGIN@`.

use std::ffi::CStr;

unsafe extern "C" {
    fn tzset();
}

/// `strftime(fmt)` of `t` (seconds since the epoch) in local time; empty if the
/// C library cannot represent `t`.
pub(crate) fn format(t: i64, fmt: &CStr) -> String {
    let tt: libc::time_t = t;
    let mut buf = [0u8; 64];
    // SAFETY: `tm` is a plain C struct for which all-zero bytes are a valid
    // value; localtime_r only writes into it and reads `tt`, both ours.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    if unsafe { libc::localtime_r(&tt, &mut tm) }.is_null() {
        return String::new();
    }
    // SAFETY: strftime writes at most `buf.len()` bytes into `buf` and returns
    // how many (0 if the result did not fit); `fmt` is NUL-terminated.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm) };
    String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned()
}

/// Read the time zone now, while `/etc/localtime` can still be opened: glibc
/// reads it once, on first use, and after a chroot it would fall back to UTC.
/// Called before the process starts other threads.
pub(crate) fn load_zone() {
    // SAFETY: tzset takes no arguments. It writes glibc's zone globals, which
    // only localtime_r and friends read; the callers run it while their process
    // is still single-threaded, so no other thread reads them meanwhile.
    unsafe { tzset() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_the_c_locale() {
        // Any zone: a fixed offset keeps the day; the names are the C locale's.
        let s = format(86_400 * 40 + 43_200, c"%b %Y");
        assert_eq!(s, "Feb 1970");
        assert_eq!(format(0, c""), "");
    }

    #[test]
    fn an_unrepresentable_time_is_empty() {
        assert_eq!(format(i64::MAX, c"%Y"), "");
    }
}
