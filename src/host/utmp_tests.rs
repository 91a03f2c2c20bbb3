//! Tests of `utmp.rs`, kept apart so that file stays readable.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

/// Empty utmp and wtmp files, removed when the test ends.
struct TempFiles {
    utmp: PathBuf,
    wtmp: PathBuf,
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.utmp);
        let _ = std::fs::remove_file(&self.wtmp);
    }
}

fn temp_files(name: &str) -> TempFiles {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/utmp-test");
    std::fs::create_dir_all(&dir).unwrap();
    let utmp = dir.join(format!("{name}-{}.utmp", std::process::id()));
    let wtmp = dir.join(format!("{name}-{}.wtmp", std::process::id()));
    std::fs::File::create(&utmp).unwrap();
    std::fs::File::create(&wtmp).unwrap();
    TempFiles { utmp, wtmp }
}

fn read_utmp(path: &Path) -> Vec<libc::utmpx> {
    let _guard = lock();
    let name = CString::new(path.as_os_str().as_bytes()).unwrap();
    let default = CString::new(UTMP_PATH).unwrap();
    let mut out = Vec::new();
    // SAFETY: the C library's utmpx iterator is process-global state; the
    // lock serializes every test that uses it. Each entry is copied out
    // before the next call overwrites it, and both names are live C strings.
    unsafe {
        assert_eq!(libc::utmpxname(name.as_ptr()), 0);
        libc::setutxent();
        loop {
            let ent = libc::getutxent();
            if ent.is_null() {
                break;
            }
            out.push(*ent);
        }
        libc::endutxent();
        libc::utmpxname(default.as_ptr());
    }
    out
}

fn read_wtmp(path: &Path) -> Vec<libc::utmpx> {
    let bytes = std::fs::read(path).unwrap();
    let size = std::mem::size_of::<libc::utmpx>();
    assert_eq!(bytes.len() % size, 0, "wtmp holds whole records");
    bytes
        .chunks_exact(size)
        // SAFETY: each chunk is exactly one record's size, utmpx is plain
        // data (any bytes are a value), and read_unaligned allows any address.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<libc::utmpx>()) })
        .collect()
}

fn text(field: &[c_char]) -> String {
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).unwrap()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn alice(tty: &str, pid: i32) -> LoginRecord {
    LoginRecord {
        tty: PathBuf::from(tty),
        user: "alice".into(),
        host: "192.0.2.7".into(),
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        pid,
    }
}

#[test]
fn login_and_logout_records_in_utmp_and_wtmp() {
    let files = temp_files("roundtrip");
    let (utmp, wtmp) = (&files.utmp, &files.wtmp);
    record_login_in(utmp, wtmp, &alice("/dev/pts/3", 4242)).unwrap();

    let entries = read_utmp(utmp);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.ut_type, libc::USER_PROCESS);
    assert_eq!(text(&e.ut_line), "pts/3");
    assert_eq!(text(&e.ut_id), "ts/3");
    assert_eq!(text(&e.ut_user), "alice");
    assert_eq!(text(&e.ut_host), "192.0.2.7");
    assert_eq!(e.ut_pid, 4242);
    assert_eq!(e.ut_session as i64, 4242);
    assert_eq!(e.ut_addr_v6, [i32::from_ne_bytes([192, 0, 2, 7]), 0, 0, 0]);
    assert!((now_secs() - e.ut_tv.tv_sec as i64).abs() < 5);

    record_logout_in(utmp, wtmp, Path::new("/dev/pts/3"), 4242).unwrap();
    let entries = read_utmp(utmp);
    assert_eq!(entries.len(), 1, "logout replaces the login entry");
    let e = &entries[0];
    assert_eq!(e.ut_type, libc::DEAD_PROCESS);
    assert_eq!(text(&e.ut_line), "pts/3");
    assert_eq!(text(&e.ut_user), "");
    assert_eq!(text(&e.ut_host), "");
    assert_eq!(e.ut_pid, 4242);

    let log = read_wtmp(wtmp);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].ut_type, libc::USER_PROCESS);
    assert_eq!(text(&log[0].ut_line), "pts/3");
    assert_eq!(text(&log[0].ut_user), "alice");
    assert_eq!(text(&log[0].ut_host), "192.0.2.7");
    assert_eq!(log[0].ut_pid, 4242);
    assert_eq!(log[1].ut_type, libc::DEAD_PROCESS);
    assert_eq!(text(&log[1].ut_line), "pts/3");
    assert_eq!(text(&log[1].ut_user), "");
    assert_eq!(log[1].ut_pid, 4242);
}

#[test]
fn logout_leaves_other_lines_alone() {
    let files = temp_files("two-lines");
    let (utmp, wtmp) = (&files.utmp, &files.wtmp);
    record_login_in(utmp, wtmp, &alice("/dev/pts/3", 10)).unwrap();
    record_login_in(utmp, wtmp, &alice("/dev/pts/13", 11)).unwrap();
    record_logout_in(utmp, wtmp, Path::new("/dev/pts/3"), 10).unwrap();
    let entries = read_utmp(utmp);
    assert_eq!(entries.len(), 2);
    let kind = |line: &str| {
        entries
            .iter()
            .find(|e| text(&e.ut_line) == line)
            .map(|e| e.ut_type)
    };
    assert_eq!(kind("pts/3"), Some(libc::DEAD_PROCESS));
    assert_eq!(kind("pts/13"), Some(libc::USER_PROCESS));
    assert_eq!(read_wtmp(wtmp).len(), 3);
}

#[test]
fn missing_files_are_skipped() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/utmp-test");
    let utmp = dir.join("absent.utmp");
    let wtmp = dir.join("absent.wtmp");
    record_login_in(&utmp, &wtmp, &alice("/dev/pts/3", 1)).unwrap();
    record_logout_in(&utmp, &wtmp, Path::new("/dev/pts/3"), 1).unwrap();
    assert!(
        !utmp.exists() && !wtmp.exists(),
        "skipping must not create them"
    );

    // One present, one absent: the present one is still written.
    let files = temp_files("only-utmp");
    let utmp = &files.utmp;
    record_login_in(utmp, &wtmp, &alice("/dev/pts/4", 1)).unwrap();
    assert_eq!(read_utmp(utmp).len(), 1);
}

#[test]
fn bad_ttys_are_refused_not_truncated() {
    let files = temp_files("bad-tty");
    let (utmp, wtmp) = (&files.utmp, &files.wtmp);
    let long = format!("/dev/{}", "x".repeat(libc::__UT_LINESIZE + 1));
    assert!(record_login_in(utmp, wtmp, &alice(&long, 1)).is_err());
    assert!(record_login_in(utmp, wtmp, &alice("/dev/", 1)).is_err());
    assert!(record_logout_in(utmp, wtmp, Path::new(&long), 1).is_err());
    assert!(read_utmp(utmp).is_empty());
}

#[test]
fn line_and_id_conventions() {
    assert_eq!(tty_line(Path::new("/dev/pts/3")).unwrap(), b"pts/3");
    assert_eq!(tty_line(Path::new("pts/7")).unwrap(), b"pts/7");
    assert_eq!(line_id(b"pts/3"), b"ts/3");
    assert_eq!(line_id(b"pts/123"), b"/123");
    assert_eq!(line_id(b"tty"), b"tty");
}

#[test]
fn addresses_in_network_order() {
    let v4 = Ipv4Addr::new(10, 1, 2, 3);
    let expect = [i32::from_ne_bytes([10, 1, 2, 3]), 0, 0, 0];
    assert_eq!(addr_words(IpAddr::V4(v4)), expect);
    assert_eq!(addr_words(IpAddr::V6(v4.to_ipv6_mapped())), expect);
    let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let words = addr_words(IpAddr::V6(v6));
    assert_eq!(words[0], i32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]));
    assert_eq!(words[3], i32::from_ne_bytes([0, 0, 0, 1]));
}

#[test]
fn long_fields_are_truncated_safely() {
    let files = temp_files("long-fields");
    let (utmp, wtmp) = (&files.utmp, &files.wtmp);
    let mut rec = alice("/dev/pts/5", 1);
    rec.user = "u".repeat(100);
    rec.host = "h".repeat(1000);
    record_login_in(utmp, wtmp, &rec).unwrap();
    let e = read_utmp(utmp)[0];
    assert!(e.ut_user.iter().all(|&c| c == b'u' as c_char));
    // Longer than `-u` allows (sshd's default 65): the address instead.
    assert_eq!(text(&e.ut_host), "192.0.2.7");
}

/// `-u`: a host name longer than the limit, or any with `-u0`, is recorded
/// as the address.
#[test]
fn host_length_limit_records_the_address() {
    let files = temp_files("host-len");
    let (utmp, wtmp) = (&files.utmp, &files.wtmp);
    let mut rec = alice("/dev/pts/8", 1);
    rec.host = "a-rather-long-name.example.org".into();
    let host_of = |rec: &LoginRecord| {
        record_login_in(utmp, wtmp, rec).unwrap();
        let e = read_utmp(utmp)
            .into_iter()
            .find(|e| text(&e.ut_line) == "pts/8")
            .unwrap();
        text(&e.ut_host)
    };
    // One test changes the process-wide value, and restores it.
    set_host_len(10);
    let short = host_of(&rec);
    set_host_len(0);
    rec.host = "h".into();
    let zero = host_of(&rec);
    set_host_len(DEFAULT_HOST_LEN);
    let default = host_of(&rec);
    assert_eq!(short, "192.0.2.7", "longer than -u 10: the address");
    assert_eq!(zero, "192.0.2.7", "-u0: always the address");
    assert_eq!(default, "h");
}

#[test]
fn accounting_off_is_explained() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/utmp-test");
    let reason = off_reason(&dir.join("absent.utmp")).unwrap();
    assert!(reason.contains("does not exist"), "{reason}");
    let files = temp_files("writable");
    assert_eq!(off_reason(&files.utmp), None);
}

fn run(cmd: &str, args: &[&Path]) -> Option<String> {
    match Command::new(cmd).args(args).output() {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
        Ok(out) => panic!("{cmd} failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            crate::testing::skip(&format!("{cmd} cannot run: {e}"));
            None
        }
    }
}

/// The files must be readable by the real tools, not just by our reader.
#[test]
fn who_and_last_read_the_files() {
    let files = temp_files("tools");
    let (utmp, wtmp) = (&files.utmp, &files.wtmp);
    let line_listed = |out: &str| {
        out.lines()
            .any(|l| l.contains("alice") && l.contains("pts/6"))
    };
    record_login_in(utmp, wtmp, &alice("/dev/pts/6", std::process::id() as i32)).unwrap();
    if let Some(out) = run("who", &[utmp]) {
        assert!(line_listed(&out), "who lists the login: {out:?}");
    }
    record_logout_in(
        utmp,
        wtmp,
        Path::new("/dev/pts/6"),
        std::process::id() as i32,
    )
    .unwrap();
    if let Some(out) = run("who", &[utmp]) {
        assert!(!line_listed(&out), "who no longer lists it: {out:?}");
    }
    let f = Path::new("-f");
    if let Some(out) = run("last", &[f, wtmp]) {
        let entry = out
            .lines()
            .find(|l| l.contains("alice") && l.contains("pts/6"));
        let entry = entry.unwrap_or_else(|| panic!("last lists the session: {out:?}"));
        assert!(
            !entry.contains("still logged in"),
            "last sees the logout: {entry:?}"
        );
    }
}

/// Against the system's own utmp, with the real entry points.
#[test]
fn system_who_sees_login_and_logout() {
    if !nix::unistd::geteuid().is_root() {
        crate::testing::skip("writing the system utmp needs root");
        return;
    }
    if !Path::new(UTMP_PATH).exists() {
        crate::testing::skip(&format!("{UTMP_PATH} does not exist (.ci/run creates it)"));
        return;
    }
    // `who` without a file argument drops entries whose pid is dead, so use ours.
    let pid = std::process::id() as i32;
    let tty = PathBuf::from(format!("/dev/pts/{}", 9000 + pid % 1000));
    let line = format!("pts/{}", 9000 + pid % 1000);
    let rec = LoginRecord {
        tty: tty.clone(),
        user: "rsshd-test".into(),
        host: "192.0.2.9".into(),
        addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
        pid,
    };
    let listed = || {
        run("who", &[]).map(|out| {
            out.lines()
                .any(|l| l.contains("rsshd-test") && l.contains(&line))
        })
    };
    record_login(&rec).unwrap();
    let after_login = listed();
    record_logout(&tty, pid).unwrap();
    let after_logout = listed();
    if let (Some(a), Some(b)) = (after_login, after_logout) {
        assert!(a, "who lists {line} after record_login");
        assert!(!b, "who does not list {line} after record_logout");
    }
}
