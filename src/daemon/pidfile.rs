//! `PidFile`: written once the daemon listens (not under `-d` or `-i`, as sshd),
//! written again after a reload (sshd re-executes itself on SIGHUP and so rewrites
//! it, following a changed `PidFile`), and removed at exit only if it still names
//! this process, so a newer daemon's file is never taken away.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file this process wrote last; `None` while PID files are off.
static CURRENT: Mutex<Option<PathBuf>> = Mutex::new(None);
/// Whether this process keeps a PID file at all (set by [`start`]).
static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Write `path` (the config's `PidFile`) and keep it up to date from now on.
pub fn start(path: Option<&Path>) {
    ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
    switch_to(path);
}

/// After a successful reload: write the (maybe changed) `PidFile` again.
pub fn reloaded(path: Option<&Path>) {
    if ENABLED.load(std::sync::atomic::Ordering::Relaxed) {
        switch_to(path);
    }
}

/// At exit: remove the file if it still holds our PID.
pub fn finish() {
    let Ok(mut cur) = CURRENT.lock() else {
        return;
    };
    if let Some(p) = cur.take() {
        remove_if_ours(&p);
    }
}

fn switch_to(path: Option<&Path>) {
    let Ok(mut cur) = CURRENT.lock() else {
        return;
    };
    if let Some(old) = cur.take()
        && Some(old.as_path()) != path
    {
        remove_if_ours(&old);
    }
    let Some(path) = path else {
        return;
    };
    match std::fs::write(path, format!("{}\n", std::process::id())) {
        Ok(()) => *cur = Some(path.to_path_buf()),
        Err(e) => tracing::error!("Couldn't create pid file \"{}\": {e}", path.display()),
    }
}

fn remove_if_ours(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_moved_and_removed_only_when_ours() {
        let dir = std::env::temp_dir().join(format!("rsshd-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.pid"), dir.join("b.pid"));
        let me = format!("{}\n", std::process::id());
        start(Some(&a));
        assert_eq!(std::fs::read_to_string(&a).unwrap(), me);
        // A reload naming another file moves it.
        reloaded(Some(&b));
        assert!(!a.exists(), "the old file is ours, so it goes");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), me);
        // Someone else's PID in it now: left alone at exit.
        std::fs::write(&b, "1\n").unwrap();
        finish();
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "1\n");
        // Ours at exit: removed.
        start(Some(&a));
        finish();
        assert!(!a.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
