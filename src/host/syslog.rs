//! The C library's syslog client, for the `log` module's syslog sink
//! ([`CLIENT`], handed to `log::init`) and internal-sftp. A leaf: it knows
//! nothing of rsshd's log levels or lines.

use std::ffi::{CStr, CString};

/// What `log::Sink::Syslog` calls.
pub const CLIENT: crate::log::Syslog = crate::log::Syslog { open, write };

/// Connect to the system logger now (LOG_NDELAY), not at the first line: in the
/// monitor, before anything could make `/dev/log` unreachable.
pub(crate) fn open(ident: &'static CStr, facility: libc::c_int) {
    // SAFETY: `ident` is a 'static C string, as openlog requires (it keeps the
    // pointer, not a copy).
    unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID | libc::LOG_NDELAY, facility) };
}

/// One line at `priority`; NUL bytes are dropped (a C string ends at the first).
pub(crate) fn write(priority: libc::c_int, line: &str) {
    let Ok(msg) = CString::new(line.replace('\0', "")) else {
        return;
    };
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the
    // call; the "%s" format keeps the message from being read as a format.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
}
