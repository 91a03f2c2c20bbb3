//! sftp-server's command line (`sftp-server(8)`, OpenSSH 9.2), which
//! `internal-sftp` takes too: `[-ehR] [-d start_directory] [-f log_facility]
//! [-l log_level] [-P denied_requests] [-p allowed_requests] [-u umask]`, and
//! `-Q requests`. Parsed as getopt does (`-Re`, `-dDIR`, `--`); `-c` ends option
//! parsing (sftp-server started as a shell).

/// sshd's log levels, in order of verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Quiet,
    Fatal,
    Error,
    Info,
    Verbose,
    Debug1,
    Debug2,
    Debug3,
}

/// `log.c`'s level names (`DEBUG` is `DEBUG1`), compared without case.
const LEVELS: &[(&str, Level)] = &[
    ("QUIET", Level::Quiet),
    ("FATAL", Level::Fatal),
    ("ERROR", Level::Error),
    ("INFO", Level::Info),
    ("VERBOSE", Level::Verbose),
    ("DEBUG", Level::Debug1),
    ("DEBUG1", Level::Debug1),
    ("DEBUG2", Level::Debug2),
    ("DEBUG3", Level::Debug3),
];

/// `log.c`'s facility names.
const FACILITIES: &[(&str, libc::c_int)] = &[
    ("DAEMON", libc::LOG_DAEMON),
    ("USER", libc::LOG_USER),
    ("AUTH", libc::LOG_AUTH),
    ("AUTHPRIV", libc::LOG_AUTHPRIV),
    ("LOCAL0", libc::LOG_LOCAL0),
    ("LOCAL1", libc::LOG_LOCAL1),
    ("LOCAL2", libc::LOG_LOCAL2),
    ("LOCAL3", libc::LOG_LOCAL3),
    ("LOCAL4", libc::LOG_LOCAL4),
    ("LOCAL5", libc::LOG_LOCAL5),
    ("LOCAL6", libc::LOG_LOCAL6),
    ("LOCAL7", libc::LOG_LOCAL7),
];

/// Request names for `-P`/`-p` and `-Q requests`, in sftp-server's order.
pub(crate) const REQUESTS: &[&str] = &[
    "open",
    "close",
    "read",
    "write",
    "lstat",
    "fstat",
    "setstat",
    "fsetstat",
    "opendir",
    "readdir",
    "remove",
    "mkdir",
    "rmdir",
    "realpath",
    "stat",
    "rename",
    "readlink",
    "symlink",
    "posix-rename",
    "statvfs",
    "fstatvfs",
    "hardlink",
    "fsync",
    "lsetstat",
    "limits",
    "expand-path",
    "copy-data",
    "home-directory",
    "users-groups-by-id",
];

/// What the arguments ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// `-R`: refuse every request that writes.
    pub readonly: bool,
    pub level: Level,
    pub facility: libc::c_int,
    /// `-e`: log to stderr (the session's stderr channel) instead of syslog.
    pub stderr: bool,
    /// `-d`, tokens not yet expanded.
    pub start_dir: Option<String>,
    /// `-u`.
    pub umask: Option<u32>,
    /// `-p`: only these requests (comma list of names).
    pub allow: Option<String>,
    /// `-P`: never these.
    pub deny: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            readonly: false,
            level: Level::Error,
            facility: libc::LOG_AUTH,
            stderr: false,
            start_dir: None,
            umask: None,
            allow: None,
            deny: None,
        }
    }
}

/// The outcome of parsing: serve, or stop with an exit code and what to print.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    Serve(Options),
    Exit {
        code: i32,
        stdout: String,
        stderr: String,
    },
}

fn usage(progname: &str) -> Parsed {
    Parsed::Exit {
        code: 1,
        stdout: String::new(),
        stderr: format!(
            "usage: {progname} [-ehR] [-d start_directory] [-f log_facility] [-l log_level]\n\
             \t[-P denied_requests] [-p allowed_requests] [-u umask]\n       \
             {progname} -Q protocol_feature\n"
        ),
    }
}

fn fail(code: i32, msg: String) -> Parsed {
    Parsed::Exit {
        code,
        stdout: String::new(),
        stderr: format!("{msg}\n"),
    }
}

/// Parse `argv` (`argv[0]` is the program name, `internal-sftp`).
pub(crate) fn parse(argv: &[String]) -> Parsed {
    let progname = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_else(|| "internal-sftp".into());
    let mut o = Options::default();
    let mut i = 1;
    'args: while i < argv.len() {
        let arg = argv[i].as_str();
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            break;
        }
        let flags: Vec<char> = arg[1..].chars().collect();
        let mut j = 0;
        while j < flags.len() {
            let f = flags[j];
            j += 1;
            let takes_value = "dflPpQu".contains(f);
            let value = if takes_value {
                let rest: String = flags[j..].iter().collect();
                j = flags.len();
                if !rest.is_empty() {
                    rest
                } else if i + 1 < argv.len() {
                    i += 1;
                    argv[i].clone()
                } else {
                    return usage(&progname);
                }
            } else {
                String::new()
            };
            match f {
                'Q' => {
                    if !value.eq_ignore_ascii_case("requests") {
                        return fail(1, "Invalid query type".into());
                    }
                    let mut out = String::new();
                    for r in REQUESTS {
                        out.push_str(r);
                        out.push('\n');
                    }
                    return Parsed::Exit {
                        code: 0,
                        stdout: out,
                        stderr: String::new(),
                    };
                }
                'R' => o.readonly = true,
                'c' => break 'args,
                'e' => o.stderr = true,
                'l' => match LEVELS.iter().find(|(n, _)| n.eq_ignore_ascii_case(&value)) {
                    Some((_, l)) => o.level = *l,
                    None => return fail(1, format!("Invalid log level \"{value}\"")),
                },
                'f' => match FACILITIES
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&value))
                {
                    Some((_, f)) => o.facility = *f,
                    None => return fail(1, format!("Invalid log facility \"{value}\"")),
                },
                'd' => o.start_dir = Some(value),
                'p' => {
                    if o.allow.is_some() {
                        return fail(255, "Permitted requests already set".into());
                    }
                    o.allow = Some(value);
                }
                'P' => {
                    if o.deny.is_some() {
                        return fail(255, "Refused requests already set".into());
                    }
                    o.deny = Some(value);
                }
                'u' => match u32::from_str_radix(&value, 8) {
                    Ok(m) if m <= 0o777 && !value.is_empty() => o.umask = Some(m),
                    _ => return fail(255, format!("Invalid umask \"{value}\"")),
                },
                _ => return usage(&progname),
            }
        }
        i += 1;
    }
    Parsed::Serve(o)
}

/// sftp-server's `-d` tokens: `%d` (home), `%u` (user name), `%U` (uid), `%%`;
/// a leading `~` or `~/` is the home. Unknown tokens are an error.
pub(crate) fn expand_start_dir(
    dir: &str,
    home: &str,
    user: &str,
    uid: u32,
) -> Result<String, String> {
    let tilde = match dir.strip_prefix('~') {
        Some("") => home.to_string(),
        Some(rest) if rest.starts_with('/') => format!("{}{rest}", home.trim_end_matches('/')),
        Some(_) => return Err(format!("tilde expansion of \"{dir}\" is not supported")),
        None => dir.to_string(),
    };
    let uid = uid.to_string();
    let tokens = [('d', home), ('u', user), ('U', uid.as_str())];
    crate::percent::percent_expand(&tilde, &tokens).map_err(|e| format!("percent_expand: {e}"))
}

/// Whether `name` is in the comma list `list` (sshd's `match_list`: exact names).
pub(crate) fn in_list(name: &str, list: &str) -> bool {
    list.split(',').any(|n| n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Parsed {
        let mut v = vec!["internal-sftp".to_string()];
        v.extend(args.iter().map(|a| a.to_string()));
        parse(&v)
    }

    fn serve(args: &[&str]) -> Options {
        match p(args) {
            Parsed::Serve(o) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn getopt_forms() {
        assert_eq!(serve(&[]), Options::default());
        let o = serve(&["-Re", "-d/srv/x", "-l", "verbose", "-fLOCAL3", "-u", "027"]);
        assert!(o.readonly && o.stderr);
        assert_eq!(o.start_dir.as_deref(), Some("/srv/x"));
        assert_eq!(o.level, Level::Verbose);
        assert_eq!(o.facility, libc::LOG_LOCAL3);
        assert_eq!(o.umask, Some(0o027));
        let o = serve(&["-P", "write,remove", "-p", "open,read"]);
        assert_eq!(o.deny.as_deref(), Some("write,remove"));
        assert_eq!(o.allow.as_deref(), Some("open,read"));
        // -c ends parsing; so does the first operand or --.
        assert!(!serve(&["-c", "-R"]).readonly);
        assert!(!serve(&["--", "-R"]).readonly);
        assert!(!serve(&["x", "-R"]).readonly);
        assert_eq!(serve(&["-l", "DEBUG"]).level, Level::Debug1);
    }

    #[test]
    fn bad_arguments_stop_as_sftp_server_does() {
        let code = |a: &[&str]| match p(a) {
            Parsed::Exit { code, .. } => code,
            Parsed::Serve(_) => 0,
        };
        assert_eq!(code(&["-x"]), 1);
        assert_eq!(code(&["-h"]), 1);
        assert_eq!(code(&["-d"]), 1);
        assert_eq!(code(&["-l", "LOUD"]), 1);
        assert_eq!(code(&["-f", "KERN"]), 1);
        assert_eq!(code(&["-u", "999"]), 255);
        assert_eq!(code(&["-u", "8"]), 255);
        assert_eq!(code(&["-p", "a", "-p", "b"]), 255);
        match p(&["-Q", "requests"]) {
            Parsed::Exit { code, stdout, .. } => {
                assert_eq!(code, 0);
                assert!(stdout.starts_with("open\nclose\n"), "{stdout}");
                assert!(stdout.ends_with("users-groups-by-id\n"), "{stdout}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_dir_tokens() {
        let e = |d: &str| expand_start_dir(d, "/home/al", "al", 1000);
        assert_eq!(e("%d/in").unwrap(), "/home/al/in");
        assert_eq!(e("/srv/%u/%U/%%").unwrap(), "/srv/al/1000/%");
        assert_eq!(e("~").unwrap(), "/home/al");
        assert_eq!(e("~/x").unwrap(), "/home/al/x");
        assert!(e("%h").is_err());
        assert!(e("~bob/x").is_err());
    }

    #[test]
    fn request_lists_match_exact_names() {
        assert!(in_list("write", "read,write"));
        assert!(!in_list("writ", "read,write"));
        assert!(!in_list("posix-rename", "rename"));
    }
}
