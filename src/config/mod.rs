//! sshd_config -> typed, validated [`Settings`].
//!
//! A file is read once into a list of validated directives, each tagged with the `Match`
//! conditions it sits under (through `Include`s too). The global settings are computed
//! once; a connection's settings are the global ones with every matching conditional
//! directive applied on top, first value winning among them, which is how sshd
//! re-parses its config per connection.

pub(crate) mod algorithms;
mod defaults;
mod dump;
mod keywords;
mod lexer;
pub(crate) use lexer::split_args;
mod matching;
mod persource;
mod replay;
mod settings;
mod time;

pub use dump::{dump, implemented_keywords};
pub use matching::system_groups;
pub use persource::Penalties;
#[cfg(test)]
pub(crate) use persource::apply_penalties;
pub use replay::Recorded;
pub use settings::*;
pub use time::{format_time, parse_time};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keywords::{Args, Class, Keyword, Pass, Policy, Value, Verdict};
use matching::{Groups, MatchLine};

/// How deep `Include` may nest (sshd's `SERVCONF_MAX_DEPTH`).
const MAX_INCLUDE_DEPTH: usize = 16;

/// The file name messages use for `-o` options, as sshd.
const CMDLINE: &str = "command-line";

/// The file name messages use for the embedded defaults.
const EMBEDDED_NAME: &str = "[embedded]";

/// rsshd's built-in configuration when no file exists: safe to start
/// anywhere, loopback only, on an unprivileged port; `sftp` (and so modern `scp`)
/// works; no PID file (a quick start is a foreground process).
const EMBEDDED: &str = "\
ListenAddress 127.0.0.1
Port 2222
IdleTimeout 15m
IdleWarning 1m
Subsystem sftp internal-sftp
PidFile none
";

/// A connection as `Match` sees it (`-C user=..,host=..,addr=..,laddr=..,lport=..`).
/// Unset attributes make the criteria that need them false.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnSpec {
    pub user: Option<String>,
    pub host: Option<String>,
    pub addr: Option<IpAddr>,
    pub laddr: Option<IpAddr>,
    pub lport: Option<u16>,
    /// The routing domain (on Linux the VRF device the connection's socket is bound
    /// to, `""` when none, as sshd's `get_rdomain`); `None` when unknown (a
    /// connection on pipes), which no `Match RDomain` matches.
    pub rdomain: Option<String>,
    /// The user's group names when the caller already has them; `None` = look them up
    /// in the system databases when a `Match Group` needs them.
    pub groups: Option<Vec<String>>,
}

impl ConnSpec {
    /// The criteria of a connection from `peer` to `local`, whose client is
    /// known as `host` (its address, or its confirmed name under UseDNS), for
    /// `user` once known. An unspecified address (a connection on pipes) is
    /// left unset, so no address criterion matches it.
    pub(crate) fn of_connection(
        user: Option<&str>,
        host: String,
        peer: std::net::SocketAddr,
        local: std::net::SocketAddr,
        rdomain: Option<String>,
        groups: Option<Vec<String>>,
    ) -> ConnSpec {
        ConnSpec {
            user: user.map(str::to_string),
            host: Some(host),
            addr: Some(peer.ip()).filter(|a| !a.is_unspecified()),
            laddr: Some(local.ip()).filter(|a| !a.is_unspecified()),
            lport: Some(local.port()),
            rdomain,
            groups,
        }
    }
}

impl ConnSpec {
    /// Parse sshd's `-C` syntax: comma-separated `key=value` with keys `user`, `host`,
    /// `addr`, `laddr`, `lport` and `rdomain`.
    pub fn parse_cli(s: &str) -> Result<ConnSpec, ConfigError> {
        let err = |what: String| ConfigError::Spec {
            spec: s.to_string(),
            what,
        };
        let ip = |k: &str, v: &str| {
            v.parse::<IpAddr>()
                .map_err(|_| err(format!("{k}: invalid address \"{v}\"")))
        };
        let mut c = ConnSpec::default();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("\"{part}\" is not key=value")))?;
            match k {
                "user" => c.user = Some(v.to_string()),
                "host" => c.host = Some(v.to_string()),
                "addr" => c.addr = Some(ip(k, v)?),
                "laddr" => c.laddr = Some(ip(k, v)?),
                "lport" => {
                    c.lport = Some(keywords::parse_port(v).map_err(|e| err(format!("lport: {e}")))?)
                }
                "rdomain" => c.rdomain = Some(v.to_string()),
                _ => return Err(err(format!("unknown key \"{k}\""))),
            }
        }
        Ok(c)
    }
}

/// Something accepted but worth telling the admin (unsupported or deprecated keyword).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A line that is wrong: `file:line: Keyword: what`.
    #[error("{}:{line}: {keyword}: {what}", file.display())]
    Invalid {
        file: PathBuf,
        line: usize,
        keyword: String,
        what: String,
    },
    /// The top-level file could not be read.
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bad `-C` connection spec.
    #[error("invalid connection spec \"{spec}\": {what}")]
    Spec { spec: String, what: String },
}

/// One validated directive, where it was written, and the `Match` conditions (all
/// must hold) it sits under.
#[derive(Debug, Clone)]
struct Directive {
    kw: &'static Keyword,
    args: Vec<String>,
    rest: String,
    cond: Vec<Arc<MatchLine>>,
    file: Arc<Path>,
    line: usize,
}

/// A parsed configuration: the global settings plus what `Match` may change.
#[derive(Debug, Clone)]
pub struct Config {
    global: Arc<Settings>,
    conditional: Vec<Directive>,
    /// On the embedded defaults with no `HostKey`: the key rsshd generates.
    generated_host_key: Option<PathBuf>,
}

/// Per-pass bookkeeping: which keywords already have their (first) value.
#[derive(Default)]
struct PassState {
    assigned: HashSet<&'static str>,
    pass: Pass,
}

impl PassState {
    fn apply(&mut self, s: &mut Settings, d: &Directive) -> Result<(), String> {
        let Value::Field { set, policy, .. } = d.kw.value else {
            return Ok(());
        };
        let first = self.assigned.insert(d.kw.name);
        if policy == Policy::First && !first {
            return Ok(());
        }
        self.pass.first = first;
        let args = Args {
            args: &d.args,
            rest: &d.rest,
        };
        set(s, &args, &mut self.pass)
    }
}

struct Loader {
    /// Where relative `Include` paths are resolved (the main file's directory).
    base_dir: PathBuf,
    directives: Vec<Directive>,
    warnings: Vec<Warning>,
    /// Keywords the command line already set, whose file lines are skipped: `Port` (as
    /// sshd's `-p`) and, for the embedded defaults, everything.
    skip: HashSet<&'static str>,
    /// The file system, or a recording of it (see `replay`).
    fs: replay::Fs,
}

fn invalid(file: &Path, line: usize, keyword: &str, what: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        line,
        keyword: keyword.to_string(),
        what: what.into(),
    }
}

impl Loader {
    fn new(base_dir: PathBuf, fs: replay::Fs) -> Self {
        Loader {
            base_dir,
            directives: Vec::new(),
            warnings: Vec::new(),
            skip: HashSet::new(),
            fs,
        }
    }

    fn overrides(&mut self, overrides: &[String]) -> Result<(), ConfigError> {
        let file = Path::new(CMDLINE);
        for (i, o) in overrides.iter().enumerate() {
            let line =
                lexer::lex_line(o, i + 1).map_err(|e| invalid(file, e.line, &e.keyword, e.what))?;
            if let Some(line) = line {
                self.line(file, line, &mut Vec::new(), 0, true)?;
            }
        }
        Ok(())
    }

    fn text(
        &mut self,
        file: &Path,
        text: &str,
        outer: &[Arc<MatchLine>],
        depth: usize,
    ) -> Result<(), ConfigError> {
        let lines = lexer::lex(text).map_err(|e| invalid(file, e.line, &e.keyword, e.what))?;
        // A Match inside this file lasts until the next Match or the end of this file,
        // and stays nested in the conditions of the place that included the file.
        let mut cond = outer.to_vec();
        for l in lines {
            if cond.len() > outer.len() && l.keyword.eq_ignore_ascii_case("match") {
                cond.truncate(outer.len());
            }
            self.line(file, l, &mut cond, depth, false)?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        file: &Path,
        l: lexer::Line,
        cond: &mut Vec<Arc<MatchLine>>,
        depth: usize,
        cmdline: bool,
    ) -> Result<(), ConfigError> {
        let err = |kw: &str, what: String| invalid(file, l.line, kw, what);
        let Some(found) = keywords::lookup(&l.keyword) else {
            return Err(err(&l.keyword, "unknown keyword".into()));
        };
        let (kw, shown) = (found.kw, found.shown);
        if l.args.is_empty() {
            return Err(err(shown, "missing argument".into()));
        }
        if !cond.is_empty() && !found.matchable {
            return Err(err(
                shown,
                format!("Directive '{shown}' is not allowed within a Match block"),
            ));
        }
        let warn = |msg: String| Warning {
            file: file.to_path_buf(),
            line: l.line,
            message: format!("{shown}: {msg}"),
        };
        if kw.class == Class::Structural {
            if cmdline {
                return Err(err(shown, "not allowed on the command line".into()));
            }
            if kw.name == "Match" {
                let m = matching::parse_match(&l.args).map_err(|e| err(shown, e))?;
                cond.push(Arc::new(m));
            } else {
                for pat in &l.args {
                    self.include(file, l.line, pat, cond, depth)?;
                }
            }
            return Ok(());
        }
        let args = Args {
            args: &l.args,
            rest: &l.rest,
        };
        match keywords::check(kw, &args).map_err(|e| err(shown, e))? {
            Verdict::Quiet => return Ok(()),
            Verdict::Warn(msg) => {
                self.warnings.push(warn(msg));
                return Ok(());
            }
            Verdict::Keep => {}
        }
        if let Some(msg) = kw.caveat.and_then(|c| c(&args)) {
            self.warnings.push(warn(msg));
        }
        if kw.pre_auth_only && cond.iter().any(|m| m.needs_user()) {
            return Err(err(
                shown,
                "rsshd applies it when the connection starts, before the user name is \
                 known, so a Match on User or Group cannot set it; refused because ignoring \
                 it could allow more than configured"
                    .into(),
            ));
        }
        if kw.global_only && !cond.is_empty() {
            self.warnings.push(warn(
                "rsshd applies only the global value (read at start), so a Match \
                 block does not change it"
                    .into(),
            ));
        }
        if kw.pre_auth && cond.iter().any(|m| m.needs_user()) {
            self.warnings.push(warn(
                "applies before the user name is known, so a Match on User or Group \
                 does not change it"
                    .into(),
            ));
        }
        if cmdline {
            self.skip.insert(kw.name);
        } else if self.skip.contains(kw.name) {
            return Ok(());
        }
        self.directives.push(Directive {
            kw,
            args: l.args,
            rest: l.rest,
            cond: cond.clone(),
            file: Arc::from(file),
            line: l.line,
        });
        Ok(())
    }

    fn include(
        &mut self,
        file: &Path,
        line: usize,
        pat: &str,
        cond: &[Arc<MatchLine>],
        depth: usize,
    ) -> Result<(), ConfigError> {
        let err = |what: String| invalid(file, line, "Include", what);
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(err("too many nested includes".into()));
        }
        let full = if Path::new(pat).is_absolute() {
            PathBuf::from(pat)
        } else {
            self.base_dir.join(pat)
        };
        let full_s = full.to_string_lossy().into_owned();
        let files = self
            .fs
            .glob(&full_s)
            .map_err(|e| err(format!("bad pattern \"{pat}\": {e}")))?;
        for f in files {
            let text = self
                .fs
                .read(&f)
                .map_err(|e| err(format!("cannot read {}: {e}", f.display())))?;
            self.text(&f, &text, cond, depth + 1)?;
        }
        Ok(())
    }

    fn finish(
        mut self,
        embedded: bool,
    ) -> Result<(Config, Vec<Warning>, replay::Recording), ConfigError> {
        let mut global = Settings::default();
        let mut st = PassState::default();
        let (unconditional, conditional): (Vec<Directive>, Vec<Directive>) =
            self.directives.into_iter().partition(|d| d.cond.is_empty());
        for d in &unconditional {
            // Already validated; an error here would be a bug in the table.
            let _ = st.apply(&mut global, d);
        }
        let generated_host_key = defaults::fill(&mut global, embedded, &mut self.fs);
        let mut warnings = self.warnings;
        warnings.extend(defaults::idle_conflicts(
            &global,
            &unconditional,
            &conditional,
        ));
        warnings.extend(defaults::auth_methods_conflict(&global, &unconditional));
        Ok((
            Config {
                global: Arc::new(global),
                conditional,
                generated_host_key,
            },
            warnings,
            self.fs.into_recording(),
        ))
    }
}

impl Config {
    /// Parse a file (Includes resolved); `overrides` are `-o 'Keyword value'` lines,
    /// applied before the file so that they win, reported as file "command-line".
    pub fn load_file(
        path: &Path,
        overrides: &[String],
    ) -> Result<(Config, Vec<Warning>), ConfigError> {
        Self::load_recorded(Some(path), overrides).map(|(c, w, _)| (c, w))
    }

    /// As [`Config::load_file`] (`None`: the embedded defaults, as
    /// [`Config::embedded`]), also returning what the load read, so that another
    /// process can repeat it with [`Config::replay`].
    pub fn load_recorded(
        path: Option<&Path>,
        overrides: &[String],
    ) -> Result<(Config, Vec<Warning>, Recorded), ConfigError> {
        let mut fs = replay::Fs::Record(Default::default());
        let (c, w, rec) = match path {
            Some(path) => {
                let text = fs.read(path).map_err(|source| ConfigError::Io {
                    file: path.to_path_buf(),
                    source,
                })?;
                Self::parse_with_base(path, &text, overrides, false, fs)?
            }
            None => Self::parse_with_base(Path::new(EMBEDDED_NAME), EMBEDDED, overrides, true, fs)?,
        };
        let recorded = Recorded {
            file: path.map(Path::to_path_buf),
            overrides: overrides.to_vec(),
            fs: rec,
        };
        Ok((c, w, recorded))
    }

    /// The load `recorded` describes, again, without touching the file system:
    /// the same text through the same parser gives the same configuration.
    pub fn replay(recorded: &Recorded) -> Result<(Config, Vec<Warning>), ConfigError> {
        let mut fs = replay::Fs::Replay(recorded.fs.clone());
        let (c, w, _) = match &recorded.file {
            Some(path) => {
                let text = fs.read(path).map_err(|source| ConfigError::Io {
                    file: path.to_path_buf(),
                    source,
                })?;
                Self::parse_with_base(path, &text, &recorded.overrides, false, fs)?
            }
            None => Self::parse_with_base(
                Path::new(EMBEDDED_NAME),
                EMBEDDED,
                &recorded.overrides,
                true,
                fs,
            )?,
        };
        Ok((c, w))
    }

    /// Same from a string; `name` is used in messages, and its directory (if any) is
    /// where relative `Include`s are looked for.
    pub fn parse_str(
        name: &str,
        text: &str,
        overrides: &[String],
    ) -> Result<(Config, Vec<Warning>), ConfigError> {
        let fs = replay::Fs::Record(Default::default());
        Self::parse_with_base(Path::new(name), text, overrides, false, fs).map(|(c, w, _)| (c, w))
    }

    /// rsshd's embedded defaults, used when no config file exists.
    /// An override of any keyword replaces the embedded value instead of adding to it.
    pub fn embedded(overrides: &[String]) -> Result<(Config, Vec<Warning>), ConfigError> {
        Self::load_recorded(None, overrides).map(|(c, w, _)| (c, w))
    }

    fn parse_with_base(
        path: &Path,
        text: &str,
        overrides: &[String],
        defaults_only: bool,
        fs: replay::Fs,
    ) -> Result<(Config, Vec<Warning>, replay::Recording), ConfigError> {
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut loader = Loader::new(base, fs);
        loader.overrides(overrides)?;
        if !defaults_only {
            // Like sshd's -p, ports from the command line replace the file's.
            let cmdline_port = loader.skip.contains("Port");
            loader.skip.clear();
            if cmdline_port {
                loader.skip.insert("Port");
            }
        }
        loader.text(path, text, &[], 0)?;
        loader.finish(defaults_only)
    }

    /// Settings with no `Match` applied.
    pub fn global(&self) -> &Settings {
        &self.global
    }

    /// On the embedded defaults with no `HostKey`: the key file rsshd generates on
    /// first start (it is also the one `host_key` names).
    pub fn generated_host_key(&self) -> Option<&Path> {
        self.generated_host_key.as_deref()
    }

    /// Settings for one connection: every directive under matching `Match` blocks,
    /// first value winning among them, replaces the global value (sshd's semantics,
    /// including that a list set in a Match replaces the global list).
    pub fn resolve(&self, spec: &ConnSpec) -> Settings {
        Arc::unwrap_or_clone(self.resolve_shared(spec))
    }

    /// As [`Config::resolve`], shared: where no `Match` block applies (the
    /// common case), every connection holds the one global `Settings` instead
    /// of a copy of its own. A copy is several kB of lists and strings, and the
    /// host and the network side each keep the resolved settings of every
    /// logged-in connection.
    pub fn resolve_shared(&self, spec: &ConnSpec) -> Arc<Settings> {
        let mut s: Option<Settings> = None;
        let mut st = PassState::default();
        let mut groups = Groups::new(spec);
        let mut seen: HashMap<*const MatchLine, bool> = HashMap::new();
        for d in &self.conditional {
            let ok = d.cond.iter().all(|m| {
                *seen
                    .entry(Arc::as_ptr(m))
                    .or_insert_with(|| m.matches(spec, &mut groups))
            });
            if ok {
                let s = s.get_or_insert_with(|| (*self.global).clone());
                let _ = st.apply(s, d);
            }
        }
        s.map_or_else(|| Arc::clone(&self.global), Arc::new)
    }
}

#[cfg(test)]
mod tests;
