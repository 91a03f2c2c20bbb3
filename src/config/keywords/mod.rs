//! The keyword table's machinery. Every keyword OpenSSH 9.x knows (plus Debian's and
//! rsshd's own) is one entry in [`KEYWORDS`] (`table.rs`), and that entry alone says
//! how its arguments parse, whether `Match` may set it, what happens when it appears
//! twice, how `-T` prints it, and which class it is in:
//!
//! - [`Class::Implemented`]: rsshd does what sshd does with it;
//! - [`Class::Refused`]: not implemented, and ignoring it could grant more than the
//!   admin wrote, so any value but the one rsshd already honours (sshd's default) is a
//!   load error;
//! - [`Class::Warned`]: not implemented, and ignoring it cannot widen access, so it is
//!   accepted with a warning (silently for the values rsshd honours anyway);
//! - [`Class::Deprecated`]: obsolete in OpenSSH too.
//!
//! The loader (`config/mod.rs`), `-T` (`dump.rs`) and the class test read only this
//! table, so they cannot disagree.

#[macro_use]
mod macros;
mod names;
mod persource;
mod table;
mod transport;
mod values;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::settings::Settings;
use super::time::parse_time;

pub(crate) use table::KEYWORDS;
pub(crate) use values::parse_port;

/// The arguments of one directive, as the lexer produced them.
pub(crate) struct Args<'a> {
    pub args: &'a [String],
    /// The verbatim rest of the line, for keywords that take a whole command.
    pub rest: &'a str,
}

impl Args<'_> {
    pub(crate) fn one(&self) -> Result<&str, String> {
        match self.args {
            [] => Err("missing argument".into()),
            [a] => Ok(a),
            _ => Err("extra arguments at end of line".into()),
        }
    }

    pub(crate) fn flag(&self) -> Result<bool, String> {
        let a = self.one()?;
        if a.eq_ignore_ascii_case("yes") {
            Ok(true)
        } else if a.eq_ignore_ascii_case("no") {
            Ok(false)
        } else {
            Err(format!("invalid value \"{a}\" (expected yes or no)"))
        }
    }

    pub(crate) fn time(&self) -> Result<Duration, String> {
        let a = self.one()?;
        parse_time(a).ok_or_else(|| format!("invalid time value \"{a}\""))
    }

    /// A time where `none` (or 0) means "no limit", as `UnusedConnectionTimeout`.
    pub(crate) fn opt_time(&self) -> Result<Option<Duration>, String> {
        if self.one()?.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        Ok(Some(self.time()?).filter(|d| !d.is_zero()))
    }

    pub(crate) fn uint(&self) -> Result<u32, String> {
        let a = self.one()?;
        a.parse::<u32>()
            .ok()
            .filter(|n| i32::try_from(*n).is_ok())
            .ok_or_else(|| format!("invalid integer \"{a}\""))
    }

    pub(crate) fn choice<T: Copy>(&self, opts: &[(&str, T)]) -> Result<T, String> {
        let a = self.one()?;
        opts.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(a))
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = opts.iter().map(|(k, _)| *k).collect();
                format!("invalid value \"{a}\" (expected {})", names.join(", "))
            })
    }

    /// A path, or `none` for "not set".
    pub(crate) fn opt_path(&self) -> Result<Option<PathBuf>, String> {
        let a = self.one()?;
        Ok((!a.eq_ignore_ascii_case("none")).then(|| PathBuf::from(a)))
    }

    pub(crate) fn all(&self) -> Result<&[String], String> {
        if self.args.is_empty() {
            return Err("missing argument".into());
        }
        if let Some(e) = self.args.iter().find(|a| a.is_empty()) {
            return Err(format!("empty argument \"{e}\""));
        }
        Ok(self.args)
    }

    /// The arguments as one space-separated value, for comparing with the values a
    /// keyword honours.
    fn joined(&self) -> String {
        self.args.join(" ")
    }
}

/// State of one parsing pass (the global pass, or one connection's `Match` pass).
#[derive(Default)]
pub(crate) struct Pass {
    /// True when this keyword has not been set yet in this pass: list keywords use it
    /// to replace, rather than extend, the default or the global value.
    pub first: bool,
    /// Subsystem names defined in this pass: the first definition of a name wins.
    pub subsystems: HashSet<String>,
}

pub(crate) type Setter = fn(&mut Settings, &Args, &mut Pass) -> Result<(), String>;
pub(crate) type Dumper = fn(&Settings, &str, &mut String);
/// A warning about a value rsshd accepts but applies only in part.
pub(crate) type Caveat = fn(&Args) -> Option<String>;

/// What happens when a keyword appears more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// The first value obtained wins (sshd's rule for almost everything).
    First,
    /// Every occurrence adds to the list (`AllowUsers`, `AcceptEnv`, `Port`, ...).
    Append,
    /// Every occurrence overwrites (sshd's `MaxStartups` quirk).
    Last,
}

/// The shape of the arguments of a keyword rsshd keeps no value for: enough to
/// catch the typos sshd would catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Flag,
    Int,
    /// One word.
    Word,
    /// One or more words.
    Words,
    /// The rest of the line.
    Line,
}

/// What rsshd does with a keyword (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Implemented,
    Refused,
    Warned,
    Deprecated,
    /// `Include` and `Match`, which the loader handles itself.
    Structural,
    /// Another spelling of the named keyword, which has the class.
    Alias(&'static str),
}

/// How a keyword's value is kept.
#[derive(Clone, Copy)]
pub(crate) enum Value {
    /// In a [`Settings`] field, by `set`; `-T` prints it with `dump`.
    Field {
        policy: Policy,
        set: Setter,
        dump: Dumper,
    },
    /// Not kept: the value is checked against `kind`, and compared (ignoring case)
    /// with the values rsshd honours by doing nothing. `-T` prints `in_force`.
    Shape {
        kind: Kind,
        honoured: &'static [&'static str],
        in_force: Option<&'static str>,
    },
    /// Handled elsewhere (aliases, `Include`, `Match`, deprecated keywords).
    Nothing,
}

pub(crate) struct Keyword {
    /// Canonical spelling, used in messages; `-T` prints it lower-cased.
    pub name: &'static str,
    /// Allowed inside `Match` (sshd's `SSHCFG_ALL`).
    pub matchable: bool,
    pub class: Class,
    pub value: Value,
    /// Values accepted but applied only in part get this warning.
    pub caveat: Option<Caveat>,
    /// Applied before the user name is known, so `Match User`/`Group` cannot set it.
    pub pre_auth: bool,
    /// As `pre_auth`, for a limit: a `Match User`/`Group` setting it is refused
    /// rather than ignored.
    pub pre_auth_only: bool,
    /// Read once at start from the global section: a `Match` line setting it warns
    /// that it is not applied per connection (only for keywords where ignoring it
    /// cannot widen access, such as `LogLevel`).
    pub global_only: bool,
}

impl std::fmt::Debug for Keyword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Where a keyword may appear (`M`: also inside `Match`; `G`: global only).
pub(crate) const M: bool = true;
pub(crate) const G: bool = false;

impl Keyword {
    pub(crate) const fn field(
        name: &'static str,
        matchable: bool,
        policy: Policy,
        set: Setter,
        dump: Dumper,
    ) -> Keyword {
        Keyword {
            name,
            matchable,
            class: Class::Implemented,
            value: Value::Field { policy, set, dump },
            caveat: None,
            pre_auth: false,
            pre_auth_only: false,
            global_only: false,
        }
    }

    pub(crate) const fn shape(
        name: &'static str,
        kind: Kind,
        matchable: bool,
        class: Class,
        honoured: &'static [&'static str],
        in_force: Option<&'static str>,
    ) -> Keyword {
        Keyword {
            name,
            matchable,
            class,
            value: Value::Shape {
                kind,
                honoured,
                in_force,
            },
            caveat: None,
            pre_auth: false,
            pre_auth_only: false,
            global_only: false,
        }
    }

    pub(crate) const fn other(name: &'static str, matchable: bool, class: Class) -> Keyword {
        Keyword {
            name,
            matchable,
            class,
            value: Value::Nothing,
            caveat: None,
            pre_auth: false,
            pre_auth_only: false,
            global_only: false,
        }
    }

    /// Applied when the connection starts: a `Match` on the user cannot set it,
    /// and since it limits something, such a line is refused.
    pub(crate) const fn pre_auth_only(mut self) -> Keyword {
        self.pre_auth_only = true;
        self
    }

    /// See [`Keyword::global_only`].
    pub(crate) const fn global_only(mut self) -> Keyword {
        self.global_only = true;
        self
    }

    pub(crate) const fn caveat(mut self, c: Caveat) -> Keyword {
        self.caveat = Some(c);
        self
    }

    pub(crate) const fn pre_auth(mut self) -> Keyword {
        self.pre_auth = true;
        self
    }
}

/// A keyword as written: the entry that defines its behaviour (an alias resolves to
/// its target), the spelling for messages, and whether `Match` may hold it.
pub(crate) struct Found {
    pub kw: &'static Keyword,
    pub shown: &'static str,
    pub matchable: bool,
}

/// Find a keyword case-insensitively.
pub(crate) fn lookup(word: &str) -> Option<Found> {
    let k = KEYWORDS
        .iter()
        .find(|k| k.name.eq_ignore_ascii_case(word))?;
    let kw = match k.class {
        Class::Alias(target) => KEYWORDS.iter().find(|t| t.name == target)?,
        _ => k,
    };
    Some(Found {
        kw,
        shown: k.name,
        matchable: k.matchable,
    })
}

/// What the loader should do with a directive after [`check`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Keep it: its value goes into [`Settings`].
    Keep,
    /// Nothing to keep, nothing to say.
    Quiet,
    /// Nothing to keep; tell the admin.
    Warn(String),
}

/// Validate a directive's arguments as sshd would, then apply the keyword's class:
/// an `Err` is the message after `file:line: Keyword: `.
pub(crate) fn check(k: &Keyword, a: &Args) -> Result<Verdict, String> {
    match (k.class, k.value) {
        (Class::Deprecated, _) => Ok(Verdict::Warn("deprecated, ignored".into())),
        (_, Value::Field { set, .. }) => {
            // Validate now, whether or not this value will ever be used, so that an
            // error in a Match block is reported at load time as sshd does.
            let mut scratch = Settings::default();
            let mut pass = Pass {
                first: true,
                ..Pass::default()
            };
            set(&mut scratch, a, &mut pass)?;
            if k.class == Class::Refused && scratch != Settings::default() {
                return Err(refusal(k));
            }
            Ok(Verdict::Keep)
        }
        (class, Value::Shape { kind, honoured, .. }) => {
            check_kind(kind, a)?;
            let v = a.joined();
            if honoured.iter().any(|h| h.eq_ignore_ascii_case(&v)) {
                return Ok(Verdict::Quiet);
            }
            match class {
                Class::Refused => Err(refusal(k)),
                _ => Ok(Verdict::Warn("not supported by rsshd, ignored".into())),
            }
        }
        (_, Value::Nothing) => Ok(Verdict::Quiet),
    }
}

fn check_kind(kind: Kind, a: &Args) -> Result<(), String> {
    match kind {
        Kind::Flag => a.flag().map(drop),
        Kind::Int => a.uint().map(drop),
        Kind::Word => a.one().map(drop),
        Kind::Words | Kind::Line => a.all().map(drop),
    }
}

/// The value of a refused keyword that rsshd accepts because it already behaves that
/// way (sshd's default), as `-T` would print it.
pub(crate) fn accepted_value(k: &Keyword) -> Option<String> {
    match k.value {
        Value::Field { dump, .. } => {
            let mut out = String::new();
            dump(&Settings::default(), "", &mut out);
            let v = out.lines().next()?.trim().to_string();
            (!v.is_empty()).then_some(v)
        }
        Value::Shape { honoured, .. } => honoured.first().map(|h| h.to_string()),
        Value::Nothing => None,
    }
}

/// The error for a refused keyword's value (after `file:line: Keyword: `).
pub(crate) fn refusal(k: &Keyword) -> String {
    let why = "not implemented by rsshd; refused because ignoring it could allow more than \
               configured";
    match accepted_value(k) {
        Some(v) => format!("{why} (remove it; only \"{v}\" is accepted)"),
        None => format!("{why} (remove it)"),
    }
}

#[cfg(test)]
mod tests;
