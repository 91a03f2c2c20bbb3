//! `~/.ssh/environment` under `PermitUserEnvironment`, read as sshd's
//! `read_environment_file` reads it: `NAME=value` lines, blank lines and `#`
//! comments skipped, at most 1000 lines, names filtered by the allow-list. The
//! file is read with the user's identity through `user_files`, like every file a
//! user controls.

use std::path::{Path, PathBuf};

use super::UserInfo;
use super::user_files::{FileKind, Owner, UserFile, with_reader};
use crate::pattern::match_pattern_list;

/// sshd's limit: a file with more lines ends the session (`fatal` in its child).
const MAX_LINES: usize = 1000;

/// Why the session must not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserEnvError {
    /// sshd's words.
    #[error("Too many lines in environment file {0}")]
    TooManyLines(PathBuf),
}

/// The variables `~/.ssh/environment` sets for `user`, those whose names the
/// `PermitUserEnvironment` patterns (`allow`, a pattern list; empty = off) admit,
/// in file order. A missing or unreadable file sets nothing (as in sshd); a file
/// that cannot be read in time sets nothing and is logged.
pub async fn user_environment(
    user: &UserInfo,
    allow: &[String],
) -> Result<Vec<(String, String)>, UserEnvError> {
    if allow.is_empty() {
        return Ok(Vec::new());
    }
    let path = user.home.join(".ssh/environment");
    let owner = Owner::from(user);
    let read_path = path.clone();
    let read = with_reader(owner, move |r| {
        r.read(&read_path, FileKind::Environment, false)
    })
    .await;
    match read {
        Ok(UserFile::Contents(bytes)) => parse(&bytes, &path, &allow.join(",")),
        Ok(_) => Ok(Vec::new()),
        Err(e) => {
            tracing::info!(
                "Could not read user '{}' environment '{}': {e}; ignored",
                user.name,
                path.display()
            );
            Ok(Vec::new())
        }
    }
}

/// sshd's rules for one file's bytes; `allow` is a comma-separated pattern list.
pub(crate) fn parse(
    bytes: &[u8],
    file: &Path,
    allow: &str,
) -> Result<Vec<(String, String)>, UserEnvError> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut out: Vec<(String, String)> = Vec::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    for (idx, raw) in body.split(|b| *b == b'\n').enumerate() {
        let lineno = idx + 1;
        if lineno > MAX_LINES {
            return Err(UserEnvError::TooManyLines(file.to_path_buf()));
        }
        let start = raw
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .unwrap_or(raw.len());
        let line = &raw[start..];
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once('=') else {
            tracing::debug!("Bad line {lineno} in {}", file.display());
            continue;
        };
        if name.is_empty() || !match_pattern_list(name, allow, false).is_positive() {
            continue;
        }
        // A later line for the same name replaces the earlier value in place.
        match out.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => out.push((name.to_string(), value.to_string())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lines_comments_and_the_allow_list() {
        let f = Path::new("/h/.ssh/environment");
        let text = b"# comment\n\n  \tA=1\nB=two=2\nnot a variable\nLD_PRELOAD=/x.so\nA=3\n=v\nC=no newline";
        assert_eq!(
            parse(text, f, "*").unwrap(),
            kv(&[
                ("A", "3"),
                ("B", "two=2"),
                ("LD_PRELOAD", "/x.so"),
                ("C", "no newline")
            ])
        );
        // A negated pattern takes a name out even after `*`, as match_pattern_list.
        assert_eq!(
            parse(text, f, "*,!LD_*").unwrap(),
            kv(&[("A", "3"), ("B", "two=2"), ("C", "no newline")])
        );
        assert_eq!(parse(text, f, "B").unwrap(), kv(&[("B", "two=2")]));
        assert_eq!(parse(b"", f, "*").unwrap(), vec![]);
    }

    #[test]
    fn more_than_a_thousand_lines_refuse_the_session() {
        let f = Path::new("/h/.ssh/environment");
        let ok = "# c\n".repeat(1000);
        assert_eq!(parse(ok.as_bytes(), f, "*").unwrap(), vec![]);
        let over = format!("{ok}A=1\n");
        assert_eq!(
            parse(over.as_bytes(), f, "*"),
            Err(UserEnvError::TooManyLines(f.to_path_buf()))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_from_the_home_with_the_users_identity() {
        let home = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("ue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/environment"), "FOO=bar\nBAZ=1\n").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let user = UserInfo {
            name: "me".into(),
            uid: me,
            gid: nix::unistd::getegid().as_raw(),
            home: home.clone(),
            shell: "/bin/sh".into(),
            group_names: vec![],
            gids: vec![],
        };
        assert_eq!(user_environment(&user, &[]).await.unwrap(), vec![]);
        assert_eq!(
            user_environment(&user, &["FOO".into()]).await.unwrap(),
            kv(&[("FOO", "bar")])
        );
        // A FIFO in its place is refused at once, never waited on.
        std::fs::remove_file(home.join(".ssh/environment")).unwrap();
        nix::unistd::mkfifo(
            &home.join(".ssh/environment"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let t = std::time::Instant::now();
        assert_eq!(
            user_environment(&user, &["*".into()]).await.unwrap(),
            vec![]
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&home);
    }
}
