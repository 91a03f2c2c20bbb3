//! `/var/log/lastlog`, for sshd's "Last login: ... from ..." line (PrintLastLog):
//! a sparse file of fixed-size records indexed by uid.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::HostError;

const LASTLOG: &str = "/var/log/lastlog";
/// glibc's `struct lastlog` on Linux: int32 time, char line[32], char host[256].
const LINE: usize = 32;
const HOST: usize = 256;
const RECORD: usize = 4 + LINE + HOST;

/// A user's previous login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastLogin {
    pub time: i64,
    pub line: String,
    pub host: String,
}

impl LastLogin {
    /// The line sshd prints: `Last login: Mon Nov 23 21:00:00 2026 from 10.0.0.5`.
    pub fn message(&self) -> String {
        let when = ctime(self.time);
        if self.host.is_empty() {
            format!("Last login: {when} on {}", self.line)
        } else {
            format!("Last login: {when} from {}", self.host)
        }
    }
}

fn ctime(t: i64) -> String {
    super::local_time::format(t, c"%a %b %e %H:%M:%S %Y")
}

fn field(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The user's previous login, if the file exists and has one.
pub fn last_login(uid: u32) -> Option<LastLogin> {
    last_login_in(Path::new(LASTLOG), uid)
}

fn last_login_in(path: &Path, uid: u32) -> Option<LastLogin> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(uid as u64 * RECORD as u64)).ok()?;
    let mut rec = [0u8; RECORD];
    f.read_exact(&mut rec).ok()?;
    let time = i32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]) as i64;
    (time != 0).then(|| LastLogin {
        time,
        line: field(&rec[4..4 + LINE]),
        host: field(&rec[4 + LINE..]),
    })
}

/// Record this login; a missing file is not an error (not every system keeps one).
pub fn record_lastlog(uid: u32, line: &str, host: &str, time: i64) -> Result<(), HostError> {
    record_in(Path::new(LASTLOG), uid, line, host, time)
}

fn record_in(path: &Path, uid: u32, line: &str, host: &str, time: i64) -> Result<(), HostError> {
    if !path.exists() {
        return Ok(());
    }
    let mut rec = [0u8; RECORD];
    rec[..4].copy_from_slice(&(time as i32).to_ne_bytes());
    let l = line.as_bytes();
    rec[4..4 + l.len().min(LINE)].copy_from_slice(&l[..l.len().min(LINE)]);
    let h = host.as_bytes();
    rec[4 + LINE..4 + LINE + h.len().min(HOST)].copy_from_slice(&h[..h.len().min(HOST)]);
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(uid as u64 * RECORD as u64))?;
    f.write_all(&rec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_the_uid_offset() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("lastlog-test-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(last_login_in(&path, 1001), None);
        record_in(&path, 1001, "pts/3", "10.0.0.5", 1_795_000_000).unwrap();
        let l = last_login_in(&path, 1001).unwrap();
        assert_eq!(
            (l.line.as_str(), l.host.as_str(), l.time),
            ("pts/3", "10.0.0.5", 1_795_000_000)
        );
        assert!(l.message().starts_with("Last login: ") && l.message().ends_with(" from 10.0.0.5"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            1002 * RECORD as u64
        );
        assert_eq!(last_login_in(&path, 0), None);
        let _ = std::fs::remove_file(&path);
    }
}
