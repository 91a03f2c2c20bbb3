//! Table glue for sshd 9.8's per-source limits; the values themselves are parsed and
//! printed by `crate::config::persource`.

use super::values::kv;
use super::{Args, Pass};
use crate::config::persource;
use crate::config::settings::Settings;

pub(super) fn set_max_startups(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    s.per_source_max_startups = persource::parse_max_startups(a.one()?)?;
    Ok(())
}

pub(super) fn dump_max_startups(s: &Settings, k: &str, o: &mut String) {
    kv(
        o,
        k,
        persource::format_max_startups(s.per_source_max_startups),
    );
}

pub(super) fn set_net_block_size(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    s.per_source_net_block_size = persource::parse_net_block_size(a.one()?)?;
    Ok(())
}

pub(super) fn dump_net_block_size(s: &Settings, k: &str, o: &mut String) {
    let (v4, v6) = s.per_source_net_block_size;
    kv(o, k, format!("{v4}:{v6}"));
}

/// Each line is applied; each sub-option keeps its first value.
pub(super) fn set_penalties(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    persource::apply_penalties(&mut s.per_source_penalties, a.all()?)
}

pub(super) fn dump_penalties(s: &Settings, k: &str, o: &mut String) {
    kv(o, k, persource::format_penalties(&s.per_source_penalties));
}

pub(super) fn set_exempt_list(s: &mut Settings, a: &Args, _: &mut Pass) -> Result<(), String> {
    let list = a.one()?;
    persource::check_exempt_list(list)?;
    s.per_source_penalty_exempt_list = Some(list.to_string());
    Ok(())
}

pub(super) fn dump_exempt_list(s: &Settings, k: &str, o: &mut String) {
    let v = s.per_source_penalty_exempt_list.as_deref();
    kv(o, k, v.unwrap_or("none"));
}
