//! `internal-sftp` and sftp-server's arguments (`-R`, `-P`, `-p`, `-u`, `-d`, `-l`,
//! `-f`, `-e`), as `Subsystem` and as `ForceCommand`, driven by the real `sftp`
//! against rsshd and against OpenSSH's sshd with the same configuration; and
//! the helper that serves it: the user's identity, inside the jail, no
//! privileges, and only the session's descriptors.

mod sftp_common;
mod support;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sftp_common::*;
use support::*;

/// The upload directory's entries (name, mode), sorted.
fn snapshot(dir: &Path) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().mode() & 0o7777;
            (e.file_name().to_string_lossy().into_owned(), mode)
        })
        .collect();
    v.sort();
    v
}

/// Back to one file, `a.txt`, owned by the user.
fn reset(upload: &Path) {
    for e in std::fs::read_dir(upload).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let a = upload.join("a.txt");
    std::fs::write(&a, "a\n").unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o644)).unwrap();
    let u = test_user();
    std::os::unix::fs::chown(&a, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
}

/// Run `script` against rsshd and sshd, both configured with `config`, from the
/// same starting state; the transcripts and what each left on disk must be
/// equal. Returns rsshd's transcript and what it left.
fn same_as_sshd(jail: &Jail, config: &str, script: &str) -> (Vec<String>, Vec<(String, u32)>) {
    let srv = Server::start_with_tail("", config);
    let reference = RefSshd::start(
        &srv.dir,
        &srv.dir.join("authorized_keys"),
        &format!("UsePAM no\n{config}"),
    );
    reset(&jail.upload);
    let ours = sftp(srv.port, &srv.client_key, TEST_USER, script);
    let ours_left = snapshot(&jail.upload);
    reset(&jail.upload);
    let theirs = sftp(reference.port, &srv.client_key, TEST_USER, script);
    let theirs_left = snapshot(&jail.upload);
    assert_eq!(
        (transcript(&ours), ours.status.code()),
        (transcript(&theirs), theirs.status.code()),
        "config:\n{config}\nrsshd log:\n{}",
        srv.log()
    );
    assert_eq!(ours_left, theirs_left, "config:\n{config}");
    (transcript(&ours), ours_left)
}

#[test]
fn arguments_act_as_under_sshd() {
    if skip_unless_ready(&["sftp", "ssh"]) {
        return;
    }
    let jail = Jail::new("args");
    let local = support::temp_dir("sftp-args").join("local.txt");
    std::fs::write(&local, "local\n").unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = format!(
        "pwd\nls\n-put {} new.txt\n-mkdir d\n-rename a.txt b.txt\n-rename b.txt a.txt\nls\n\
         -get a.txt /dev/null\n-rm new.txt\n-rmdir d\nls\n",
        local.display()
    );
    let upload = jail.upload.display().to_string();
    let subsystem = |args: &str| format!("Subsystem sftp internal-sftp -d {upload} {args}\n");
    let has = |t: &[String], needle: &str| t.iter().any(|l| l.contains(needle));

    // No arguments but -d: everything works, and -d is where the session starts.
    let (t, left) = same_as_sshd(&jail, &subsystem(""), &script);
    assert!(
        has(&t, &format!("Remote working directory: {upload}")),
        "{t:#?}"
    );
    assert!(!has(&t, "Permission denied"), "{t:#?}");
    assert_eq!(left, [("a.txt".to_string(), 0o644)]);

    // -R: reads only.
    let (t, left) = same_as_sshd(&jail, &subsystem("-R"), &script);
    assert!(has(&t, "Permission denied"), "{t:#?}");
    assert!(has(&t, "sftp> -get a.txt /dev/null"), "{t:#?}");
    assert_eq!(left, [("a.txt".to_string(), 0o644)]);

    // -P: the denied requests fail, the rest work (the upload stays).
    let (t, left) = same_as_sshd(&jail, &subsystem("-P remove,rmdir"), &script);
    assert!(has(&t, "Permission denied"), "{t:#?}");
    let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a.txt", "d", "new.txt"]);

    // -p: only the allowed requests (reading); writes are refused.
    let allowed = "-p open,close,read,realpath,stat,lstat,fstat,opendir,readdir";
    let (t, left) = same_as_sshd(&jail, &subsystem(allowed), &script);
    assert!(has(&t, "Permission denied"), "{t:#?}");
    // open is allowed, so the upload's file is created; write is not, so it
    // stays empty, and remove is not, so it stays.
    let names: Vec<&str> = left.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a.txt", "new.txt"], "{t:#?}");
    assert!(has(&t, "write remote"), "{t:#?}");

    // -u: the umask for what the user creates (the upload is 0666 locally).
    let keep = script.replace("-rm new.txt\n", "");
    let (_, left) = same_as_sshd(&jail, &subsystem("-u 027"), &keep);
    assert!(left.contains(&("new.txt".to_string(), 0o640)), "{left:?}");
    assert!(left.contains(&("d".to_string(), 0o750)) || !left.iter().any(|(n, _)| n == "d"));

    // -l and -f with -e: the log goes to the session's stderr (as sftp-server's
    // does; sshd's internal-sftp sends it to sshd's own log instead), at the
    // level asked, in sftp-server's words.
    let config = subsystem("-e -l INFO -f LOCAL3");
    let srv = Server::start_with_tail("", &config);
    reset(&jail.upload);
    let o = sftp(srv.port, &srv.client_key, TEST_USER, &script);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let new_txt = format!("{upload}/new.txt");
    for line in [
        format!("session opened for local user {TEST_USER} from [127.0.0.1]"),
        format!("open \"{new_txt}\" flags WRITE,CREATE,TRUNCATE mode 0666"),
        format!("close \"{new_txt}\" bytes read 0 written 6"),
        format!("remove name \"{new_txt}\""),
        format!("session closed for local user {TEST_USER} from [127.0.0.1]"),
    ] {
        assert!(err.lines().any(|l| l == line), "{line}\n{}", text(&o));
    }
    // VERBOSE lines are below INFO.
    assert!(!err.contains("realpath \""), "{}", text(&o));
    drop(srv);
    // An unknown facility or level stops the server with sftp-server's words
    // (on the session's stderr; sshd's internal-sftp logs them in sshd's log),
    // and the client sees the same as under sshd.
    for (args, words) in [
        ("-f LOCAL9", "Invalid log facility \"LOCAL9\""),
        ("-l LOUD", "Invalid log level \"LOUD\""),
    ] {
        let config = subsystem(args);
        let srv = Server::start_with_tail("", &config);
        let reference = RefSshd::start(
            &srv.dir,
            &srv.dir.join("authorized_keys"),
            &format!("UsePAM no\n{config}"),
        );
        let ours = sftp(srv.port, &srv.client_key, TEST_USER, "pwd\n");
        let theirs = sftp(reference.port, &srv.client_key, TEST_USER, "pwd\n");
        let mut t = transcript(&ours);
        let said = format!("stderr: {words}");
        assert!(t.contains(&said), "{t:#?}");
        t.retain(|l| *l != said);
        assert_eq!(
            (t, ours.status.code()),
            (transcript(&theirs), theirs.status.code())
        );
    }

    // As ForceCommand, without a jail: the arguments hold the same way.
    let forced = format!(
        "Subsystem sftp /usr/lib/openssh/sftp-server\nMatch User {TEST_USER}\n  \
         ForceCommand internal-sftp -R -d {upload}\n"
    );
    let (t, left) = same_as_sshd(&jail, &forced, &script);
    assert!(
        has(&t, &format!("Remote working directory: {upload}")),
        "{t:#?}"
    );
    assert!(has(&t, "Permission denied"), "{t:#?}");
    assert_eq!(left, [("a.txt".to_string(), 0o644)]);
}

/// The helper that serves a jailed session: the user's ids and no
/// capabilities, its root the jail, only rsshd's own binary in the session's
/// process tree, and no descriptor the daemon holds (0-2 from the session,
/// plus its own event-loop descriptors and duplicates of 0 and 1).
#[test]
fn the_helper_is_the_user_inside_the_jail_with_stdio_only() {
    if skip_unless_ready(&["sftp", "ssh"]) {
        return;
    }
    let jail = Jail::new("helper");
    let tail = format!(
        "Subsystem sftp /usr/lib/openssh/sftp-server\nMatch User {TEST_USER}\n  \
         ChrootDirectory {}\n  ForceCommand internal-sftp -e\n",
        jail.pattern()
    );
    let srv = Server::start_with_tail("", &tail);
    let mut client = Command::new("sftp")
        .args(client_opts(&srv.client_key))
        .args(["-P", &srv.port.to_string(), "-b", "-"])
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = client.stdin.take().unwrap();
    input.write_all(b"pwd\n").unwrap();
    input.flush().unwrap();
    // The helper, once it has dropped root.
    let u = test_user();
    let deadline = Instant::now() + Duration::from_secs(15);
    let helper = loop {
        let found = descendants(srv.pid())
            .into_iter()
            .find(|(_, _, cmd, status)| {
                cmd.contains("__internal-sftp")
                    && status.contains(&format!("\nUid:\t{0}\t{0}\t{0}\t{0}\n", u.uid))
            });
        if let Some(h) = found {
            break h;
        }
        assert!(Instant::now() < deadline, "no helper; log:\n{}", srv.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let (pid, _, _, status) = &helper;
    assert!(
        status.contains(&format!("\nGid:\t{0}\t{0}\t{0}\t{0}\n", u.gid)),
        "{status}"
    );
    assert!(status.contains("\nCapEff:\t0000000000000000\n"), "{status}");
    assert!(status.contains("\nCapPrm:\t0000000000000000\n"), "{status}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        jail.root
    );
    // Nothing but rsshd itself ran for the session (no program in the jail).
    let rsshd = std::fs::canonicalize(env!("CARGO_BIN_EXE_rsshd")).unwrap();
    for (p, exe, cmd, _) in descendants(srv.pid()) {
        assert_eq!(Path::new(&exe), rsshd, "process {p} ({cmd}) is not rsshd");
    }
    // Descriptors: 0-2 (pipes), and beyond them only the helper's own (its
    // event loop's, duplicates of 0 and 1): nothing the daemon holds.
    let fds = |pid: u32| -> Vec<(String, String)> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        let t = std::fs::read_link(e.path())
                            .map(|l| l.display().to_string())
                            .unwrap_or_default();
                        (n, t)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let helper_fds = fds(*pid);
    let daemon_fds: Vec<String> = fds(srv.pid()).into_iter().map(|(_, t)| t).collect();
    let stdio: Vec<String> = helper_fds
        .iter()
        .filter(|(n, _)| ["0", "1", "2"].contains(&n.as_str()))
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(stdio.len(), 3, "{helper_fds:?}");
    assert!(
        stdio.iter().all(|t| t.starts_with("pipe:")),
        "{helper_fds:?}"
    );
    for (n, t) in &helper_fds {
        let shared = !t.starts_with("anon_inode:") && !stdio.contains(t) && daemon_fds.contains(t);
        assert!(
            !shared,
            "helper fd {n} -> {t} is the daemon's: {helper_fds:?}"
        );
    }
    assert!(
        !helper_fds
            .iter()
            .any(|(_, t)| t.starts_with('/') || t.contains("TCP")),
        "{helper_fds:?}"
    );
    drop(input);
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Remote working directory: /\n"),
        "{}",
        text(&out)
    );
}

/// With `UsePAM yes` the helper runs under the PAM session's helper, and the
/// recipe works the same: the jail, the user's files, nothing outside.
#[test]
fn the_recipe_works_inside_a_pam_session() {
    if skip_unless_ready(&["sftp", "ssh"]) {
        return;
    }
    let jail = Jail::new("pam");
    let tail = format!(
        "Match User {TEST_USER}\n  ChrootDirectory {}\n  ForceCommand internal-sftp\n",
        jail.pattern()
    );
    let srv = Server::start_with_tail(
        "UsePAM yes\nSubsystem sftp /usr/lib/openssh/sftp-server",
        &tail,
    );
    let local = srv.dir.join("pam-local.txt");
    std::fs::write(&local, "under pam\n").unwrap();
    let script = format!(
        "pwd\nput {} /upload/p.txt\nls /\n-get /etc/passwd /dev/null\n",
        local.display()
    );
    let o = sftp(srv.port, &srv.client_key, TEST_USER, &script);
    assert!(o.status.success(), "{}\n{}", text(&o), srv.log());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Remote working directory: /\n"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("\"/etc/passwd\" not found"),
        "{}",
        text(&o)
    );
    let on_disk = jail.upload.join("p.txt");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), "under pam\n");
    assert_eq!(
        std::fs::metadata(&on_disk).unwrap().uid(),
        test_user().uid.as_raw()
    );
}
