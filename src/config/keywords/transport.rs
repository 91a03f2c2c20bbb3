//! Parsers and `-T` printers for the transport and logging keywords: the algorithm
//! lists, `RekeyLimit`, `Compression`, `FingerprintHash`, `ModuliFile`.

use std::time::Duration;

use super::Args;
use super::values::kv;
use crate::config::algorithms::{self, List};
use crate::config::settings::*;
use crate::config::time::parse_time;

/// One algorithm list keyword (first value wins, as sshd).
pub(super) fn algorithm_list(list: List, a: &Args) -> Result<Vec<&'static str>, String> {
    algorithms::parse(list, a.one()?)
}

/// The load warning for names OpenSSH has and rsshd lacks: left out of the list.
pub(super) fn algorithm_caveat(list: List, a: &Args) -> Option<String> {
    let missing = algorithms::not_implemented(list, a.args.first()?);
    (!missing.is_empty()).then(|| {
        let (is, it) = if missing.len() == 1 {
            ("is", "it")
        } else {
            ("are", "them")
        };
        format!(
            "{} {is} not implemented by rsshd (russh 0.65.1 does not have {it}); left out of the list",
            missing.join(", ")
        )
    })
}

pub(super) fn dump_list(v: &[&str], key: &str, out: &mut String) {
    kv(out, key, v.join(","));
}

/// OpenSSH's `scan_scaled`: a number with an optional fraction and a unit of
/// B, K, M, G, T, P or E (powers of 1024).
fn scaled(s: &str) -> Option<u64> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return None,
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() || (num.contains('.') && frac.is_empty()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut v = whole.checked_mul(1u64.checked_shl(shift)?)?;
    if !frac.is_empty() {
        // Only as many decimals as scan_scaled keeps (it stops at 1/10^n < unit).
        let digits: u64 = frac.parse().ok()?;
        let scale = 10u64.checked_pow(u32::try_from(frac.len()).ok()?)?;
        v = v.checked_add((u128::from(digits) << shift).checked_div(u128::from(scale))? as u64)?;
    }
    Some(v)
}

pub(super) fn set_rekey_limit(
    s: &mut Settings,
    a: &Args,
    _: &mut super::Pass,
) -> Result<(), String> {
    let args = a.all()?;
    if args.len() > 2 {
        return Err("extra arguments at end of line".into());
    }
    let bytes = if args[0] == "default" {
        0
    } else {
        let v = scaled(&args[0]).ok_or_else(|| format!("Bad RekeyLimit number '{}'", args[0]))?;
        if v != 0 && v < 16 {
            return Err("RekeyLimit too small".into());
        }
        v
    };
    // As in sshd the interval is a value of its own: a line without one (say in a
    // Match) leaves the one in force.
    let interval = match args.get(1).map(String::as_str) {
        None => s.rekey_limit.interval,
        Some("none") => None,
        Some(t) => Some(parse_time(t).ok_or_else(|| format!("invalid time value \"{t}\""))?)
            .filter(|d: &Duration| !d.is_zero()),
    };
    s.rekey_limit = RekeyLimit { bytes, interval };
    Ok(())
}

pub(super) fn dump_rekey_limit(s: &Settings, k: &str, o: &mut String) {
    let secs = s.rekey_limit.interval.map_or(0, |d| d.as_secs());
    kv(o, k, format!("{} {secs}", s.rekey_limit.bytes));
}

pub(super) const COMPRESSION: &[(&str, bool)] = &[("yes", true), ("delayed", true), ("no", false)];

pub(super) fn dump_compression(s: &Settings, k: &str, o: &mut String) {
    kv(o, k, if s.compression { "yes" } else { "no" });
}

pub(super) fn set_fingerprint_hash(
    s: &mut Settings,
    a: &Args,
    _: &mut super::Pass,
) -> Result<(), String> {
    let v = a.one()?;
    s.fingerprint_hash = match v.to_ascii_lowercase().as_str() {
        "md5" => FingerprintHash::Md5,
        "sha256" => FingerprintHash::Sha256,
        "sha1" | "sha384" | "sha512" => {
            return Err(format!(
                "{v} fingerprints are not supported by rsshd (md5 or sha256)"
            ));
        }
        _ => return Err(format!("Invalid FingerprintHash algorithm \"{v}\"")),
    };
    Ok(())
}

/// `PubkeyAuthOptions none | touch-required | verify-required ...`, as sshd
/// reads it (case-insensitive words, `none` adds nothing).
pub(super) fn set_pubkey_auth_options(
    s: &mut Settings,
    a: &Args,
    _: &mut super::Pass,
) -> Result<(), String> {
    let mut o = crate::config::PubkeyAuthOptions::default();
    for w in a.all()? {
        match w.to_ascii_lowercase().as_str() {
            "none" => {}
            "touch-required" => o.touch_required = true,
            "verify-required" => o.verify_required = true,
            _ => return Err(format!("unsupported option {w}")),
        }
    }
    s.pubkey_auth_options = o;
    Ok(())
}

pub(super) fn dump_pubkey_auth_options(s: &Settings, k: &str, o: &mut String) {
    let p = s.pubkey_auth_options;
    let mut v = Vec::new();
    if !p.touch_required && !p.verify_required {
        v.push("none");
    }
    if p.touch_required {
        v.push("touch-required");
    }
    if p.verify_required {
        v.push("verify-required");
    }
    kv(o, k, v.join(" "));
}

pub(super) fn dump_fingerprint_hash(s: &Settings, k: &str, o: &mut String) {
    let name = match s.fingerprint_hash {
        FingerprintHash::Md5 => "MD5",
        FingerprintHash::Sha256 => "SHA256",
    };
    kv(o, k, name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_numbers_read_as_scan_scaled() {
        assert_eq!(scaled("1G"), Some(1 << 30));
        assert_eq!(scaled("512m"), Some(512 << 20));
        assert_eq!(scaled("100K"), Some(102_400));
        assert_eq!(scaled("1.5K"), Some(1536));
        assert_eq!(scaled("4096"), Some(4096));
        assert_eq!(scaled("10B"), Some(10));
        assert_eq!(scaled("1X"), None);
        assert_eq!(scaled("G"), None);
        assert_eq!(scaled("1."), None);
        assert_eq!(scaled("99999999999E"), None);
    }
}
