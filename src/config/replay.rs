//! A config load that can be repeated elsewhere: what the loader read from the
//! file system (the main file, every `Include`d file, each `Include` pattern's
//! matches, the existence of sshd's default host keys), recorded by the process
//! that loaded it and replayed by another that cannot read files (the network
//! process, chrooted to an empty directory). The replay runs the same parser on
//! the same text, so both processes hold the same `Config`, `Match` blocks and
//! all, without `Config` itself having to be serializable (its directives point
//! into the static keyword table).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file-system answers one load got, in the order it asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    files: Vec<(PathBuf, String)>,
    globs: Vec<(String, Vec<PathBuf>)>,
    probes: Vec<(PathBuf, bool)>,
}

/// Everything needed to load a config again: where it came from, the command
/// line's overrides, and what the file system answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The main file; `None` for rsshd's embedded defaults.
    pub(super) file: Option<PathBuf>,
    pub(super) overrides: Vec<String>,
    pub(super) fs: Recording,
}

/// Where the loader's file-system questions go.
pub(super) enum Fs {
    /// The real file system; every answer is written down.
    Record(Recording),
    /// Only the answers written down; anything else is an error.
    Replay(Recording),
}

fn not_recorded(what: &str, p: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{what} {p} is not in the recorded configuration"),
    )
}

impl Fs {
    pub(super) fn read(&mut self, path: &Path) -> std::io::Result<String> {
        match self {
            Fs::Record(r) => {
                let text = std::fs::read_to_string(path)?;
                r.files.push((path.to_path_buf(), text.clone()));
                Ok(text)
            }
            Fs::Replay(r) => r
                .files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| not_recorded("file", &path.display().to_string())),
        }
    }

    /// The files (not directories) `pattern` matches, sorted.
    pub(super) fn glob(&mut self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        match self {
            Fs::Record(r) => {
                let paths = glob::glob(pattern).map_err(|e| e.to_string())?;
                let mut files: Vec<PathBuf> = paths
                    .filter_map(Result::ok)
                    .filter(|p| !p.is_dir())
                    .collect();
                files.sort();
                r.globs.push((pattern.to_string(), files.clone()));
                Ok(files)
            }
            Fs::Replay(r) => r
                .globs
                .iter()
                .find(|(p, _)| p == pattern)
                .map(|(_, f)| f.clone())
                .ok_or_else(|| not_recorded("Include pattern", pattern).to_string()),
        }
    }

    pub(super) fn exists(&mut self, path: &Path) -> bool {
        match self {
            Fs::Record(r) => {
                let there = path.exists();
                r.probes.push((path.to_path_buf(), there));
                there
            }
            Fs::Replay(r) => r.probes.iter().any(|(p, there)| p == path && *there),
        }
    }

    pub(super) fn into_recording(self) -> Recording {
        match self {
            Fs::Record(r) | Fs::Replay(r) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConnSpec};

    #[test]
    fn a_replay_gives_the_same_config_without_the_files() {
        let dir = std::env::temp_dir().join(format!("rsshd-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        let main = dir.join("sshd_config");
        std::fs::write(
            &main,
            "Include conf.d/*.conf\nPort 2200\nMatch User bob\n  IdleTimeout 1m\n",
        )
        .unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "MaxAuthTries 3\n").unwrap();
        let overrides = vec!["LoginGraceTime 30s".to_string()];
        let (c, _, rec) = Config::load_recorded(Some(&main), &overrides).unwrap();
        let bob = ConnSpec::parse_cli("user=bob").unwrap();
        let want = (
            crate::config::dump(c.global()),
            crate::config::dump(&c.resolve(&bob)),
        );
        // The files are gone: the replay reads only the recording.
        std::fs::remove_dir_all(&dir).unwrap();
        let (r, _) = Config::replay(&rec).unwrap();
        assert_eq!(
            (
                crate::config::dump(r.global()),
                crate::config::dump(&r.resolve(&bob))
            ),
            want
        );
        assert_eq!(r.global().max_auth_tries, 3);
        // It also survives the trip as JSON, as it crosses to the network process.
        let json = serde_json::to_string(&rec).unwrap();
        let back: super::Recorded = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rec);
        // Anything the recording lacks is an error, never a read.
        let mut missing = rec.clone();
        missing.fs.files.clear();
        assert!(Config::replay(&missing).is_err());
    }
}
