//! Splits sshd_config text into keyword + arguments, with sshd's quoting rules, so that
//! every later stage works on tokens that already know their line number.

/// One non-empty, non-comment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// 1-based line number within its file.
    pub line: usize,
    /// As written; keywords are matched case-insensitively later.
    pub keyword: String,
    /// Unquoted, unescaped arguments; a `#` at the start of a token ends the line.
    pub args: Vec<String>,
    /// Everything after the keyword separator, verbatim: `ForceCommand` and friends take
    /// the rest of the line as one shell command, quotes and all, as sshd does.
    pub rest: String,
}

/// A line that cannot be tokenised; `keyword` is empty when even that was unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub line: usize,
    pub keyword: String,
    pub what: String,
}

/// Tokenise a whole file. Lines are numbered from 1.
pub(crate) fn lex(text: &str) -> Result<Vec<Line>, LexError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if let Some(l) = lex_line(raw, i + 1)? {
            out.push(l);
        }
    }
    Ok(out)
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\x0c')
}

/// Tokenise one line; `Ok(None)` for blank lines and comments.
pub(crate) fn lex_line(raw: &str, line: usize) -> Result<Option<Line>, LexError> {
    let s = raw.trim_matches(is_ws);
    if s.is_empty() || s.starts_with('#') {
        return Ok(None);
    }
    // The keyword ends at whitespace or at one `=`, which may itself be surrounded by
    // whitespace (`Port 22`, `Port=22`, `Port = 22`).
    let end = s.find(|c: char| is_ws(c) || c == '=').unwrap_or(s.len());
    let keyword = s[..end].to_string();
    let mut rest = &s[end..];
    let had_eq = rest.starts_with('=');
    if had_eq {
        rest = &rest[1..];
    }
    rest = rest.trim_start_matches(is_ws);
    if !had_eq && let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start_matches(is_ws);
    }
    let args = split_args(rest).map_err(|what| LexError {
        line,
        keyword: keyword.clone(),
        what,
    })?;
    Ok(Some(Line {
        line,
        keyword,
        args,
        rest: rest.to_string(),
    }))
}

/// OpenSSH's `argv_split`: whitespace separates, `"` and `'` quote, a backslash escapes a
/// quote, a backslash or (outside quotes) a space, and `#` at a token start is a comment.
pub(crate) fn split_args(s: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut args = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ' ' || chars[i] == '\t' {
            i += 1;
            continue;
        }
        if chars[i] == '#' {
            break;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' && i + 1 < chars.len() {
                let n = chars[i + 1];
                if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') {
                    arg.push(n);
                    i += 2;
                    continue;
                }
                arg.push(c);
            } else if quote.is_none() && (c == ' ' || c == '\t') {
                break;
            } else if quote.is_none() && (c == '"' || c == '\'') {
                quote = Some(c);
            } else if quote == Some(c) {
                quote = None;
            } else {
                arg.push(c);
            }
            i += 1;
        }
        if quote.is_some() {
            return Err("unterminated quote".to_string());
        }
        args.push(arg);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Line {
        lex_line(s, 7).unwrap().unwrap()
    }

    #[test]
    fn separators() {
        for s in [
            "Port 22",
            "Port=22",
            "Port = 22",
            "  Port\t22  ",
            "Port= 22",
            "Port =22",
        ] {
            let l = one(s);
            assert_eq!(
                (l.keyword.as_str(), l.args.clone()),
                ("Port", vec!["22".to_string()]),
                "{s:?}"
            );
            assert_eq!(l.line, 7);
        }
        // Only one `=` is a separator; a second is part of the value.
        assert_eq!(one("SetEnv = A=1").args, vec!["A=1"]);
    }

    #[test]
    fn comments_and_blank() {
        assert_eq!(lex_line("", 1).unwrap(), None);
        assert_eq!(lex_line("   ", 1).unwrap(), None);
        assert_eq!(lex_line("# Port 22", 1).unwrap(), None);
        assert_eq!(lex_line("   #Port 22", 1).unwrap(), None);
        assert_eq!(one("AcceptEnv LANG # LC_*").args, vec!["LANG"]);
        // `#` inside a token is literal, as in sshd.
        assert_eq!(one("Banner /tmp/a#b").args, vec!["/tmp/a#b"]);
    }

    #[test]
    fn quotes() {
        let l = one(r#"SetEnv "B=two words" 'C=x y' D\ E=1"#);
        assert_eq!(l.args, vec!["B=two words", "C=x y", "D E=1"]);
        assert_eq!(one(r#"Banner "a \"q\" b""#).args, vec![r#"a "q" b"#]);
        assert_eq!(one(r#"Banner """#).args, vec![""]);
        let e = lex_line(r#"Banner "unterminated"#, 3).unwrap_err();
        assert_eq!(
            (e.line, e.keyword.as_str(), e.what.as_str()),
            (3, "Banner", "unterminated quote")
        );
    }

    #[test]
    fn rest_is_verbatim() {
        let l = one(r#"ForceCommand echo "hi there"  # c"#);
        assert_eq!(l.rest, r#"echo "hi there"  # c"#);
    }

    #[test]
    fn whole_file_numbers_lines() {
        let v = lex("# c\n\nPort 22\n  ListenAddress ::1\n").unwrap();
        assert_eq!(v.iter().map(|l| l.line).collect::<Vec<_>>(), vec![3, 4]);
    }
}
