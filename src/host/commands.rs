//! `Commands`: what each session is running, for the WHAT column of `rsshd
//! sessions`, read from `/proc` by the host. The network side asks because,
//! split, it has no `/proc` (it is chrooted to an empty directory); it may only
//! ask about the session programs the host itself started and has not reaped.

use std::collections::HashSet;

use super::HostError;
use super::service::Service;

/// The most programs one `Commands` asks about, and the longest command line
/// answered (`w` cuts it shorter still): 128 answers of 256 bytes stay well
/// inside one monitor frame.
pub(crate) const COMMANDS_MAX: usize = 128;
pub(crate) const COMMAND_BYTES: usize = 256;

impl Service {
    /// The foreground command of each session whose leader is `pids[i]`; `None`
    /// for a pid that is not a live session program of the host's.
    pub(super) async fn commands(&self, pids: Vec<i32>) -> Result<Vec<Option<String>>, HostError> {
        if pids.len() > COMMANDS_MAX {
            tracing::error!(
                "host: refused Commands for {} programs (at most {COMMANDS_MAX})",
                pids.len()
            );
            return Err(HostError::NotPermitted("too many programs".into()));
        }
        let live: HashSet<i32> = self.live_leaders().into_iter().collect();
        // Off the async workers: reading a process's command line waits for its
        // memory map's lock, which a stuck process can hold (ps hangs on it too).
        tokio::task::spawn_blocking(move || {
            pids.into_iter()
                .map(|pid| {
                    live.contains(&pid)
                        .then(|| foreground_command(pid))
                        .flatten()
                })
                .collect()
        })
        .await
        .map_err(|e| HostError::NotPermitted(format!("commands: {e}")))
    }
}

/// The command line of the terminal's foreground process group, as `w` shows
/// it; for a session without a terminal, the leader's own command.
fn foreground_command(leader: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{leader}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // state ppid pgrp session tty_nr tpgid
    let tpgid: i32 = rest.split_whitespace().nth(5)?.parse().ok()?;
    let pid = if tpgid > 0 { tpgid } else { leader };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let text = cut(text.join(" "));
    (!text.is_empty()).then_some(text)
}

/// `text` cut to [`COMMAND_BYTES`], on a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > COMMAND_BYTES {
        let mut end = COMMAND_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_command_line_is_cut_on_a_character() {
        // 255 ASCII bytes, then a two-byte character across the limit.
        let long = format!("{}é tail", "a".repeat(COMMAND_BYTES - 1));
        assert_eq!(cut(long), "a".repeat(COMMAND_BYTES - 1));
        assert_eq!(cut("vim notes".into()), "vim notes");
    }
}
