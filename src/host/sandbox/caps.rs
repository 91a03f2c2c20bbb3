//! Capabilities: every set emptied and checked (capset(2) and prctl(2) directly;
//! the work is small and a crate would add nothing the kernel interface lacks).

use super::SandboxError;

const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn errno(what: &'static str) -> SandboxError {
    SandboxError::Os {
        what,
        source: nix::Error::last(),
    }
}

/// Drop every capability from the bounding set (needs CAP_SETPCAP, so while
/// still root). Where the kernel refuses (a container without CAP_SETPCAP),
/// the rest of confinement makes the set moot (no_new_privs, no execve), so this
/// returns a warning instead of failing.
pub(super) fn drop_bounding_set() -> Result<Option<String>, SandboxError> {
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_DROP takes an integer and touches no memory of ours.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r == 0 {
            continue;
        }
        return match nix::errno::Errno::last() {
            // Past the kernel's last capability: done.
            nix::errno::Errno::EINVAL if cap > 0 => Ok(None),
            nix::errno::Errno::EPERM => Ok(Some(format!(
                "capability bounding set kept from capability {cap} on (no CAP_SETPCAP)"
            ))),
            _ => Err(errno("prctl(PR_CAPBSET_DROP)")),
        };
    }
    Ok(None)
}

/// Empty the ambient set. A kernel older than 4.3 has none (EINVAL): nothing to clear.
pub(super) fn clear_ambient() -> Result<(), SandboxError> {
    // SAFETY: integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 && nix::errno::Errno::last() != nix::errno::Errno::EINVAL {
        return Err(errno("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"));
    }
    Ok(())
}

/// Set effective, permitted and inheritable to nothing, then read them back.
pub(super) fn clear_all() -> Result<(), SandboxError> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let zero = [CapData::default(); 2];
    // SAFETY: version 3 of capset takes a header and an array of two data
    // structs, both repr(C) with the kernel's layout and alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            zero.as_ptr(),
        )
    };
    if r != 0 {
        return Err(errno("capset"));
    }
    let mut now = [CapData {
        effective: u32::MAX,
        permitted: u32::MAX,
        inheritable: u32::MAX,
    }; 2];
    header.version = CAP_VERSION_3;
    // SAFETY: as above; the kernel writes two CapData into `now`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            now.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(errno("capget"));
    }
    if now != zero {
        return Err(SandboxError::Refused(
            "capabilities remain after capset".into(),
        ));
    }
    clear_ambient()
}
