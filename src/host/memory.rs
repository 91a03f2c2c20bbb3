//! Giving memory back to the kernel after a burst of connections.
//!
//! glibc's malloc keeps freed memory in its arenas: after 10,000 connections opened
//! and ended, the daemon stayed at its peak (553 MB resident against 9 MB idle) for
//! good. `malloc_trim` returns the free pages of every arena; it frees nothing while
//! the connections are live (that memory is in use), but after they end it does. A
//! thread of its own looks every few seconds and trims only when the resident size is
//! well above what is allocated, so a steady daemon never pays for it.

use std::time::Duration;

/// How often to look. Together with the settling rule below this bounds the time
/// from the end of a burst to the trim (the goal: back within a minute).
const PERIOD: Duration = Duration::from_secs(10);

/// Resident memory this far above what malloc has handed out is worth a trim.
const SLACK: usize = 16 << 20;

/// Start the trimming thread (glibc only; other allocators have their own decay).
pub fn start_trimmer() {
    match Statm::open() {
        Ok(statm) => start_trimmer_on(statm),
        Err(e) => tracing::debug!("memory trimmer not started: /proc/self/statm: {e}"),
    }
}

/// The process's `/proc/self/statm`, opened once: a confined process (the
/// split's network process, chrooted to an empty directory) opens it before
/// confinement and keeps reading it by offset.
pub struct Statm(std::fs::File);

impl Statm {
    pub fn open() -> std::io::Result<Statm> {
        std::fs::File::open("/proc/self/statm").map(Statm)
    }

    /// Whether it reads as statm should.
    fn check(&self) -> std::io::Result<()> {
        match self.resident_bytes() {
            Some(_) => Ok(()),
            None => Err(std::io::Error::other("no resident size in it")),
        }
    }

    /// The resident size in bytes (statm counts pages).
    fn resident_bytes(&self) -> Option<usize> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 128];
        // procfs regenerates the text for a read at offset 0.
        let n = self.0.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(buf.get(..n)?).ok()?;
        let pages: usize = text.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages.saturating_mul(usize::try_from(page).unwrap_or(4096)))
    }
}

/// Start the trimming thread reading `statm`; returns once the thread runs its
/// own code, past its start-up in glibc and std (rseq, the signal stack, its
/// name): calls a seccomp filter installed after this may refuse. The network
/// process was killed on rseq when a loaded machine let the thread start only
/// after confinement.
pub fn start_trimmer_on(statm: Statm) {
    #[cfg(target_env = "gnu")]
    {
        let (running, started) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("rsshd-trim".into())
            .spawn(move || {
                let _ = running.send(());
                trim_loop(statm)
            });
        match spawned {
            Ok(_) => {
                let _ = started.recv();
            }
            Err(e) => tracing::debug!("memory trimmer not started: {e}"),
        }
    }
    #[cfg(not(target_env = "gnu"))]
    drop(statm);
}

#[cfg(target_env = "gnu")]
fn trim_loop(statm: Statm) {
    // After a trim that gave back little (fragmentation that cannot be returned),
    // wait for the resident size to grow again before the next one, so a daemon whose
    // free memory cannot be returned does not trim every period for nothing.
    let mut floor = 0usize;
    // A statm that cannot be read (a confined process that lost access) would
    // make every round a no-op: the thread says so and ends instead.
    if let Err(e) = statm.check() {
        tracing::error!("memory trimmer stopped: /proc/self/statm: {e}");
        return;
    }
    loop {
        std::thread::sleep(PERIOD);
        let Some(resident) = statm.resident_bytes() else {
            continue;
        };
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value;
        // it locks each arena itself while it counts.
        let info = unsafe { libc::mallinfo2() };
        let in_use = info.uordblks.saturating_add(info.hblkhd);
        if resident < floor || resident <= in_use.saturating_mul(2).saturating_add(SLACK) {
            continue;
        }
        // SAFETY: malloc_trim takes a byte count and works under the arenas' own
        // locks; it only returns free pages, so no live allocation is touched.
        unsafe { libc::malloc_trim(0) };
        let after = statm.resident_bytes().unwrap_or(resident);
        tracing::debug!(
            "memory: resident {} MB -> {} MB after trim ({} MB allocated)",
            resident >> 20,
            after >> 20,
            in_use >> 20
        );
        floor = if resident.saturating_sub(after) < SLACK {
            after.saturating_add(SLACK)
        } else {
            0
        };
    }
}
