//! Issue 12: `ChrootDirectory` and the sftp-only jail recipe, from the admin's
//! and the user's side, with the real `sftp`, `scp` and `sshfs`:
//!
//! ```text
//! Match Group sftponly
//!   ChrootDirectory /srv/%u
//!   ForceCommand internal-sftp
//!   AllowTcpForwarding no
//!   X11Forwarding no
//! ```
//!
//! The jail holds no programs at all: rsshd serves SFTP in-process. Where sshd's
//! behaviour is observable (working directory, listings, refusals, a shell in a
//! jail without one), OpenSSH's sshd gets the same configuration and the same
//! client commands, and the two must answer alike.

mod sftp_common;
mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use sftp_common::*;
use support::*;

/// Debian's stock sftp line: the forced internal-sftp wins over it, and the jail
/// needs no sftp-server binary.
const STOCK_SUBSYSTEM: &str = "Subsystem sftp /usr/lib/openssh/sftp-server";

/// The recipe, for the test user's own group (the account's primary group, so
/// no group has to be created on a machine other tests share).
fn recipe(jail: &Jail) -> String {
    format!(
        "Match Group {TEST_USER}\n  ChrootDirectory {}\n  ForceCommand internal-sftp\n  \
         AllowTcpForwarding no\n  X11Forwarding no\n",
        jail.pattern()
    )
}

#[test]
fn the_sftp_only_recipe_serves_the_jail_and_nothing_outside_it() {
    if skip_unless_ready(&["sftp", "ssh"]) {
        return;
    }
    let jail = Jail::new("recipe");
    // Something outside the jail the user could read if the jail leaked.
    let outside = jail.base.join("outside.txt");
    std::fs::write(&outside, "outside\n").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A link the admin left in the jail, pointing out of it.
    std::os::unix::fs::symlink("/etc", jail.root.join("etc-link")).unwrap();
    let srv = Server::start_with_tail(STOCK_SUBSYSTEM, &recipe(&jail));
    let local = srv.dir.join("local.txt");
    std::fs::write(&local, "jailed data\n").unwrap();
    let back = srv.dir.join("back.txt");
    let script = format!(
        "pwd\nls /\ncd upload\nput {} f.txt\nmkdir d\nrename f.txt d/g.txt\nls d\nget d/g.txt {}\n\
         rm d/g.txt\nrmdir d\nput {} keep.txt\ndf /\n",
        local.display(),
        back.display(),
        local.display()
    );
    let o = sftp(srv.port, &srv.client_key, TEST_USER, &script);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}\n{}", text(&o), srv.log());
    assert!(out.contains("Remote working directory: /\n"), "{out}");
    // The listing of / is the jail's.
    let after_ls = out.split("sftp> ls /\n").nth(1).unwrap_or("");
    let listing: Vec<&str> = after_ls
        .lines()
        .take_while(|l| !l.starts_with("sftp>"))
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert_eq!(listing, ["/etc-link", "/upload"], "{out}");
    assert!(out.contains("d/g.txt"), "{out}");
    // statvfs@openssh.com
    assert!(out.contains("%Capacity"), "{out}");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "jailed data\n");
    // What the user wrote is in the jail, theirs; what they removed is gone.
    let kept = jail.upload.join("keep.txt");
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "jailed data\n");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().uid(),
        test_user().uid.as_raw()
    );
    assert!(!jail.upload.join("d").exists() && !jail.upload.join("f.txt").exists());

    // Ways out, each of which must fail: the host's files by name, `..` from
    // the root, the admin's link (it resolves inside the jail), and links the
    // user makes.
    for (setup, path) in [
        ("", "/etc/passwd"),
        ("", "../outside.txt"),
        ("", "/../outside.txt"),
        ("", "/etc-link/passwd"),
        ("ln -s /etc/passwd /upload/pw\n", "/upload/pw"),
        ("ln -s ../../outside.txt /upload/out\n", "/upload/out"),
        ("ln -s ../../../../etc /upload/etc\n", "/upload/etc/passwd"),
    ] {
        let target = srv.dir.join("escaped");
        let script = format!("{setup}get {path} {}\n", target.display());
        let o = sftp(srv.port, &srv.client_key, TEST_USER, &script);
        assert!(!o.status.success(), "{path} was fetched: {}", text(&o));
        assert!(!target.exists(), "{path} was fetched");
        // SSH_FX_NO_SUCH_FILE, as sftp words it for a glob or for a stat.
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("not found") || err.contains("No such file or directory"),
            "{path}: {}",
            text(&o)
        );
    }
    // Nor listed.
    let o = sftp(srv.port, &srv.client_key, TEST_USER, "ls /etc-link/\n");
    assert!(!o.status.success(), "{}", text(&o));
    // `cd ..` at the root stays there.
    let o = sftp(
        srv.port,
        &srv.client_key,
        TEST_USER,
        "cd ..\npwd\ncd /..\npwd\n",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.matches("Remote working directory: /\n").count(),
        2,
        "{}",
        text(&o)
    );

    // A shell or command is refused the way sshd refuses it.
    for command in [None, Some("cat /etc/passwd")] {
        let o = ssh(srv.port, &srv.client_key, TEST_USER, command);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "This service allows sftp connections only.\n"
        );
    }
    assert!(
        srv.wait_log(
            &format!("error: Connection from user {TEST_USER} 127.0.0.1 port "),
            Duration::from_secs(5)
        ) && srv.log().contains(": refusing non-sftp session"),
        "{}",
        srv.log()
    );
    // AllowTcpForwarding no holds inside the recipe's Match block.
    let fwd = Command::new("ssh")
        .args(client_opts(&srv.client_key))
        .args(["-p", &srv.port.to_string(), "-N", "-W", "127.0.0.1:9"])
        .arg(format!("{TEST_USER}@127.0.0.1"))
        .output()
        .unwrap();
    assert!(!fwd.status.success(), "{}", text(&fwd));
}

/// The same read-only session against rsshd and OpenSSH's sshd, both with the
/// recipe, must read the same: working directory, listings with owners and
/// modes, what `..` and the host's files give.
#[test]
fn the_jail_looks_the_same_as_under_sshd() {
    if skip_unless_ready(&["sftp", "ssh"]) {
        return;
    }
    let jail = Jail::new("same");
    std::fs::write(jail.upload.join("a.txt"), "a\n").unwrap();
    std::fs::create_dir(jail.root.join("pub")).unwrap();
    std::fs::set_permissions(
        jail.root.join("pub"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let compare = |tail: &str, script: &str| {
        let srv = Server::start_with_tail(STOCK_SUBSYSTEM, tail);
        let reference = RefSshd::start(
            &srv.dir,
            &srv.dir.join("authorized_keys"),
            &format!("UsePAM no\n{STOCK_SUBSYSTEM}\n{tail}"),
        );
        let ours = sftp(srv.port, &srv.client_key, TEST_USER, script);
        let theirs = sftp(reference.port, &srv.client_key, TEST_USER, script);
        assert_eq!(transcript(&ours), transcript(&theirs), "{}", srv.log());
        String::from_utf8_lossy(&ours.stdout).into_owned()
    };
    let script = "pwd\nls -la /\nls -l /upload\ncd ..\npwd\n-get /etc/passwd /dev/null\n\
                  -cd /etc\npwd\n";
    let out = compare(&recipe(&jail), script);
    assert!(out.contains("a.txt"), "{out}");
    // A `-d` start directory: one that exists, one (with a token) that does not.
    let with_d = |d: &str| recipe(&jail).replace("internal-sftp", &format!("internal-sftp -d {d}"));
    let out = compare(&with_d("/upload"), "pwd\nls\n");
    assert!(out.contains("Remote working directory: /upload\n"), "{out}");
    let out = compare(&with_d("/upload/%u-missing"), "pwd\n");
    assert!(out.contains("Remote working directory: /\n"), "{out}");
}

#[test]
fn scp_copies_both_ways_inside_the_jail_only() {
    if skip_unless_ready(&["scp", "ssh"]) {
        return;
    }
    let jail = Jail::new("scp");
    let srv = Server::start_with_tail(STOCK_SUBSYSTEM, &recipe(&jail));
    let local = srv.dir.join("scp-in.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let scp = |args: &[String]| {
        Command::new("scp")
            .args(client_opts(&srv.client_key))
            .args(["-P", &srv.port.to_string()])
            .args(args)
            .output()
            .unwrap()
    };
    let remote = |p: &str| format!("{TEST_USER}@127.0.0.1:{p}");
    // OpenSSH 9's scp speaks SFTP by default.
    let o = scp(&[local.display().to_string(), remote("/upload/in.bin")]);
    assert!(o.status.success(), "{}\n{}", text(&o), srv.log());
    assert_eq!(std::fs::read(jail.upload.join("in.bin")).unwrap(), data);
    let back = srv.dir.join("scp-back.bin");
    let o = scp(&[remote("upload/in.bin"), back.display().to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // Nothing outside: not the host's files, not through `..`.
    for outside in [
        "/etc/passwd",
        "../../etc/passwd",
        "/upload/../../etc/hostname",
    ] {
        let stolen = srv.dir.join("stolen");
        let o = scp(&[remote(outside), stolen.display().to_string()]);
        assert!(
            !o.status.success() && !stolen.exists(),
            "{outside}: {}",
            text(&o)
        );
    }
    // The legacy protocol runs a command, which the forced internal-sftp refuses.
    let o = scp(&[
        "-O".into(),
        local.display().to_string(),
        remote("/upload/legacy.bin"),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!jail.upload.join("legacy.bin").exists());
}

#[test]
fn sshfs_mounts_the_jail() {
    if skip_unless_ready(&["sshfs", "ssh"]) {
        return;
    }
    if !std::path::Path::new("/dev/fuse").exists() {
        skip("no /dev/fuse: FUSE is not available here");
        return;
    }
    let jail = Jail::new("sshfs");
    std::fs::write(jail.upload.join("there.txt"), "from the server\n").unwrap();
    let srv = Server::start_with_tail(STOCK_SUBSYSTEM, &recipe(&jail));
    let mnt = srv.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ssh_command = format!("ssh {}", client_opts(&srv.client_key).join(" "));
    let o = Command::new("sshfs")
        .arg(format!("{TEST_USER}@127.0.0.1:/"))
        .arg(&mnt)
        .args(["-p", &srv.port.to_string()])
        .args(["-o", &format!("ssh_command={ssh_command}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", text(&o), srv.log());
    struct Mounted(std::path::PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let mounted = Mounted(mnt.clone());
    let mut top: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["upload"]);
    assert_eq!(
        std::fs::read_to_string(mnt.join("upload/there.txt")).unwrap(),
        "from the server\n"
    );
    std::fs::write(mnt.join("upload/written.txt"), "through fuse\n").unwrap();
    std::fs::rename(mnt.join("upload/written.txt"), mnt.join("upload/moved.txt")).unwrap();
    std::fs::create_dir(mnt.join("upload/dir")).unwrap();
    std::fs::remove_file(mnt.join("upload/there.txt")).unwrap();
    // Outside the jail: nothing, and the user cannot write in the jail's root.
    assert!(std::fs::metadata(mnt.join("etc/passwd")).is_err());
    assert!(std::fs::write(mnt.join("planted.txt"), "x").is_err());
    drop(mounted);
    let on_disk = jail.upload.join("moved.txt");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), "through fuse\n");
    assert_eq!(
        std::fs::metadata(&on_disk).unwrap().uid(),
        test_user().uid.as_raw()
    );
    assert!(jail.upload.join("dir").is_dir());
    assert!(!jail.upload.join("there.txt").exists());
    assert!(!jail.root.join("planted.txt").exists());
}

/// sshd's checks on every component: a jail that someone other than root could
/// change refuses the session, with sshd's log line.
#[test]
fn a_jail_others_could_change_refuses_the_session() {
    if skip_unless_ready(&["sftp"]) {
        return;
    }
    let jail = Jail::new("badmode");
    let srv = Server::start_with_tail(STOCK_SUBSYSTEM, &recipe(&jail));
    let ok = sftp(srv.port, &srv.client_key, TEST_USER, "pwd\n");
    assert!(ok.status.success(), "{}", text(&ok));
    // A group-writable directory on the way.
    std::fs::set_permissions(&jail.base, std::fs::Permissions::from_mode(0o775)).unwrap();
    let o = sftp(srv.port, &srv.client_key, TEST_USER, "pwd\n");
    assert!(!o.status.success(), "{}", text(&o));
    let line = format!(
        "bad ownership or modes for chroot directory component \"{}/\"",
        jail.base.display()
    );
    assert!(srv.wait_log(&line, Duration::from_secs(5)), "{}", srv.log());
    std::fs::set_permissions(&jail.base, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The jail itself owned by the user.
    let u = test_user();
    std::os::unix::fs::chown(&jail.root, Some(u.uid.as_raw()), None).unwrap();
    let o = sftp(srv.port, &srv.client_key, TEST_USER, "pwd\n");
    assert!(!o.status.success(), "{}", text(&o));
    let line = format!(
        "bad ownership or modes for chroot directory \"{}\"",
        jail.root.display()
    );
    assert!(srv.wait_log(&line, Duration::from_secs(5)), "{}", srv.log());
    // A jail that does not exist.
    std::fs::remove_dir_all(&jail.root).unwrap();
    let o = sftp(srv.port, &srv.client_key, TEST_USER, "pwd\n");
    assert!(!o.status.success(), "{}", text(&o));
    let line = format!(
        "safely_chroot: stat(\"{}\"): No such file or directory",
        jail.root.display()
    );
    assert!(srv.wait_log(&line, Duration::from_secs(5)), "{}", srv.log());
}

/// Without ForceCommand, a jail serves SFTP through `Subsystem sftp
/// internal-sftp`, and a shell or command needs programs inside the jail: with
/// none there, the session fails as under sshd (`/bin/bash: No such file or
/// directory`, exit status 1); with a shell copied in, commands run inside.
#[test]
fn sessions_other_than_sftp_need_programs_in_the_jail() {
    if skip_unless_ready(&["sftp", "ssh", "ldd"]) {
        return;
    }
    let jail = Jail::new("shell");
    let tail = format!(
        "Match User {TEST_USER}\n  ChrootDirectory {}\n",
        jail.pattern()
    );
    let extra = "Subsystem sftp internal-sftp";
    let srv = Server::start_with_tail(extra, &tail);
    let reference = RefSshd::start(
        &srv.dir,
        &srv.dir.join("authorized_keys"),
        &format!("UsePAM no\n{extra}\n{tail}"),
    );
    let o = sftp(srv.port, &srv.client_key, TEST_USER, "ls /\n");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("upload"),
        "{}",
        text(&o)
    );
    for command in [None, Some("id")] {
        let ours = ssh(srv.port, &srv.client_key, TEST_USER, command);
        let theirs = ssh(reference.port, &srv.client_key, TEST_USER, command);
        assert_eq!(ours.status.code(), Some(1), "{}", text(&ours));
        assert_eq!(
            String::from_utf8_lossy(&ours.stderr),
            "/bin/bash: No such file or directory\n"
        );
        assert_eq!(
            (ours.status.code(), &ours.stdout, &ours.stderr),
            (theirs.status.code(), &theirs.stdout, &theirs.stderr)
        );
    }
    // The classic jail: bash and the libraries it needs.
    copy_with_libraries(std::path::Path::new("/bin/bash"), &jail.root);
    let script = "pwd; echo /*; cd ..; pwd; echo ~";
    let ours = ssh(srv.port, &srv.client_key, TEST_USER, Some(script));
    assert!(ours.status.success(), "{}", text(&ours));
    let out = String::from_utf8_lossy(&ours.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    // No home inside the jail: the session starts at its root.
    assert_eq!(lines[0], "/", "{out}");
    assert!(lines[1].split(' ').any(|e| e == "/upload"), "{out}");
    assert!(
        !lines[1].split(' ').any(|e| e == "/etc" || e == "/home"),
        "{out}"
    );
    let theirs = ssh(reference.port, &srv.client_key, TEST_USER, Some(script));
    assert_eq!(
        out,
        String::from_utf8_lossy(&theirs.stdout),
        "{}",
        text(&theirs)
    );
    // With the home directory inside the jail, the session starts there.
    let home = jail.root.join(test_user().dir.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&home).unwrap();
    let u = test_user();
    std::os::unix::fs::chown(&home, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
    let ours = ssh(srv.port, &srv.client_key, TEST_USER, Some("pwd"));
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout).trim(),
        test_user().dir.display().to_string(),
        "{}",
        text(&ours)
    );
}

/// Copy `program` into `root` at the same path, with every library `ldd` names.
fn copy_with_libraries(program: &std::path::Path, root: &std::path::Path) {
    let o = Command::new("ldd").arg(program).output().unwrap();
    let mut files = vec![program.to_path_buf()];
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push(p.into());
        }
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let mut d = dest.parent().unwrap().to_path_buf();
        while d != root {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            d = d.parent().unwrap().to_path_buf();
        }
        std::fs::copy(&f, &dest).unwrap();
    }
}
