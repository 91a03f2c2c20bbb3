//! One macro per kind of keyword, so each table entry is one line: the macro supplies
//! the parser and the `-T` printer for the field's type; the line names the keyword,
//! where it may appear and the field.

/// `yes`/`no` into a `bool` field.
macro_rules! flag {
    ($name:literal, $scope:expr, $f:ident) => {
        Keyword::field(
            $name,
            $scope,
            Policy::First,
            |s, a, _| {
                s.$f = a.flag()?;
                Ok(())
            },
            |s, k, o| kv(o, k, yn(s.$f)),
        )
    };
}

/// A non-negative integer into a `u32` field.
macro_rules! int {
    ($name:literal, $scope:expr, $f:ident) => {
        Keyword::field(
            $name,
            $scope,
            Policy::First,
            |s, a, _| {
                s.$f = a.uint()?;
                Ok(())
            },
            |s, k, o| kv(o, k, s.$f),
        )
    };
}

/// A TIME FORMATS value into a `Duration` field; `-T` prints seconds.
macro_rules! time {
    ($name:literal, $scope:expr, $f:ident) => {
        Keyword::field(
            $name,
            $scope,
            Policy::First,
            |s, a, _| {
                s.$f = a.time()?;
                Ok(())
            },
            |s, k, o| kv(o, k, s.$f.as_secs()),
        )
    };
}

/// A time where `none` or 0 means "never", into an `Option<Duration>` field; `-T`
/// prints what `dump` (a `fn(&Settings) -> Option<Duration>`) says is in force.
macro_rules! opt_time {
    ($name:literal, $scope:expr, $f:ident) => {
        opt_time!($name, $scope, $f, |s: &Settings| s.$f)
    };
    ($name:literal, $scope:expr, $f:ident, $in_force:expr) => {
        Keyword::field(
            $name,
            $scope,
            Policy::First,
            |s, a, _| {
                s.$f = a.opt_time()?;
                Ok(())
            },
            |s, k, o| kv(o, k, opt_secs($in_force(s))),
        )
    };
}

/// A path or `none` into an `Option<PathBuf>` field; with `tokens`, the `%`
/// tokens the path may use.
macro_rules! opt_path {
    ($name:literal, $scope:expr, $f:ident, tokens $known:literal) => {
        Keyword::field(
            $name,
            $scope,
            Policy::First,
            |s, a, _| {
                s.$f = a.opt_path()?;
                if let Some(p) = &s.$f {
                    tokens(&p.to_string_lossy(), $known)?;
                }
                Ok(())
            },
            |s, k, o| kv(o, k, opt_path(&s.$f)),
        )
    };
    ($name:literal, $scope:expr, $f:ident) => {
        Keyword::field(
            $name,
            $scope,
            Policy::First,
            |s, a, _| {
                s.$f = a.opt_path()?;
                Ok(())
            },
            |s, k, o| kv(o, k, opt_path(&s.$f)),
        )
    };
}

/// One of a table of `(name, value)` into a field whose type knows its sshd name
/// ([`SshdName`]).
macro_rules! choice {
    ($name:literal, $scope:expr, $f:ident, $table:expr) => {
        Keyword::field(
            $name,
            $scope,
            Policy::First,
            |s, a, _| {
                s.$f = a.choice($table)?.into();
                Ok(())
            },
            |s, k, o| kv(o, k, s.$f.sshd_name()),
        )
    };
}

/// Words that add to a `Vec<String>` field, line after line, each checked by
/// `$check`; `-T` prints one line per entry.
macro_rules! list {
    ($name:literal, $scope:expr, $f:ident, $check:expr) => {
        Keyword::field(
            $name,
            $scope,
            Policy::Append,
            |s, a, p| {
                a.all()?.iter().try_for_each(|w| $check(w))?;
                push_list(&mut s.$f, a.args, p);
                Ok(())
            },
            |s, k, o| s.$f.iter().for_each(|v| kv(o, k, v)),
        )
    };
}

/// An algorithm list (`config::algorithms`): sshd's `+`/`-`/`^`/pattern forms,
/// assembled at parse time against the default (in a `Match` too, as sshd does);
/// `-T` prints the comma-joined result.
macro_rules! algos {
    ($name:literal, $scope:expr, $f:ident, $list:expr) => {
        Keyword::field(
            $name,
            $scope,
            Policy::First,
            |s, a, _| {
                s.$f = algorithm_list($list, a)?;
                Ok(())
            },
            |s, k, o| dump_list(&s.$f, k, o),
        )
        .caveat(|a| algorithm_caveat($list, a))
    };
}

/// Anything else: a setter and a printer of its own (`values.rs`).
macro_rules! custom {
    ($name:literal, $scope:expr, $policy:ident, $set:expr, $dump:expr) => {
        Keyword::field($name, $scope, Policy::$policy, $set, $dump)
    };
}

/// Not implemented; ignoring it could widen access: any value but `$honoured` (what
/// rsshd does anyway, sshd's default) is a load error. `-T` prints the first honoured
/// value as the one in force, unless `hidden`.
macro_rules! refuse {
    ($name:literal, $kind:ident, $scope:expr) => {
        Keyword::shape($name, Kind::$kind, $scope, Class::Refused, &[], None)
    };
    ($name:literal, $kind:ident, $scope:expr, [$first:literal $(, $h:literal)*]) => {
        Keyword::shape(
            $name,
            Kind::$kind,
            $scope,
            Class::Refused,
            &[$first $(, $h)*],
            Some($first),
        )
    };
    ($name:literal, $kind:ident, $scope:expr, [$($h:literal),+], hidden) => {
        Keyword::shape($name, Kind::$kind, $scope, Class::Refused, &[$($h),+], None)
    };
}

/// Not implemented; ignoring it cannot widen access: accepted with a warning, and
/// silently for `$honoured` (what rsshd does anyway). `-T` prints the first honoured
/// value as the one in force, unless `hidden` (where the keyword is moot in rsshd).
macro_rules! warn {
    ($name:literal, $kind:ident, $scope:expr) => {
        Keyword::shape($name, Kind::$kind, $scope, Class::Warned, &[], None)
    };
    ($name:literal, $kind:ident, $scope:expr, [$first:literal $(, $h:literal)*]) => {
        Keyword::shape(
            $name,
            Kind::$kind,
            $scope,
            Class::Warned,
            &[$first $(, $h)*],
            Some($first),
        )
    };
    ($name:literal, $kind:ident, $scope:expr, [$($h:literal),+], hidden) => {
        Keyword::shape($name, Kind::$kind, $scope, Class::Warned, &[$($h),+], None)
    };
}

/// Obsolete in OpenSSH as well: "deprecated, ignored".
macro_rules! deprecated {
    ($name:literal, $scope:expr) => {
        Keyword::other($name, $scope, Class::Deprecated)
    };
}

/// Another spelling of `$target`; `$scope` is sshd's for the old spelling.
macro_rules! alias {
    ($name:literal, $target:literal, $scope:expr) => {
        Keyword::other($name, $scope, Class::Alias($target))
    };
}
