//! A mutation fuzzer without coverage feedback, for the stable toolchain and the test
//! suite: it runs every seed, then mutants of the seeds (byte edits, dictionary
//! tokens, splices, repeated runs that look for blow-ups) until its time is up. An
//! input that panics, or takes longer than the per-input limit, is saved and fails the
//! run; one that never returns is caught by a watchdog, which saves it and aborts.
//! The coverage-guided engine is libFuzzer (fuzz/run.sh); this one checks on every
//! test run that the seeds and their near neighbours still pass.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one run goes.
pub struct Options {
    /// Total time for the mutants (the seeds always all run).
    pub budget: Duration,
    /// The most one input may take; a slower one is a finding.
    pub slow: Duration,
    /// Mutants are cut to this many bytes.
    pub max_len: usize,
    /// The generator's seed, so a run can be repeated.
    pub seed: u64,
    /// Where a failing input is saved.
    pub artifacts: PathBuf,
}

/// What a run did.
pub struct Outcome {
    pub seeds: usize,
    pub execs: u64,
}

/// Every file in `dir`, in name order (a missing directory is empty).
pub fn load_dir(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Tokens of a libFuzzer/AFL dictionary: one `"token"` (optionally `name="token"`)
/// per line, with `\\`, `\"` and `\xNN` escapes; `#` lines are comments.
pub fn load_dict(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (Some(start), Some(end)) = (line.find('"'), line.rfind('"')) else {
            continue;
        };
        if line.starts_with('#') || end <= start {
            continue;
        }
        let body = &line.as_bytes()[start + 1..end];
        let mut token = Vec::new();
        let mut i = 0;
        while i < body.len() {
            match (body[i], body.get(i + 1)) {
                (b'\\', Some(b'x')) => {
                    let hex = std::str::from_utf8(body.get(i + 2..i + 4).unwrap_or(b""))
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(b) => {
                            token.push(b);
                            i += 4;
                        }
                        None => {
                            token.push(b'\\');
                            i += 1;
                        }
                    }
                }
                (b'\\', Some(&c)) => {
                    token.push(c);
                    i += 2;
                }
                (c, _) => {
                    token.push(c);
                    i += 1;
                }
            }
        }
        out.push(token);
    }
    out
}

/// The input being run and since when, for the watchdog.
type Running = Option<(Instant, Vec<u8>)>;

/// Run `target` on every seed, then on mutants until the budget is spent. Panics with
/// the saved path and a printable copy of the first failing input.
pub fn run(
    name: &str,
    target: fn(&[u8]),
    seeds: &[Vec<u8>],
    dict: &[Vec<u8>],
    opts: &Options,
) -> Outcome {
    let current: Arc<Mutex<Running>> = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done) = (Arc::clone(&current), Arc::clone(&done));
        let (name, artifacts, limit) = (name.to_string(), opts.artifacts.clone(), opts.slow * 10);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let stuck = current
                    .lock()
                    .ok()
                    .and_then(|c| c.as_ref().filter(|(t, _)| t.elapsed() > limit).cloned());
                if let Some((_, input)) = stuck {
                    let path = save(&artifacts, &name, "hang", &input);
                    eprintln!(
                        "fuzz {name}: an input ran for more than {limit:?}; saved as {}\n{}",
                        path.display(),
                        printable(&input)
                    );
                    std::process::abort();
                }
            }
        })
    };
    let exec = |input: &[u8]| {
        if let Ok(mut c) = current.lock() {
            *c = Some((Instant::now(), input.to_vec()));
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| target(input));
        let took = started.elapsed();
        if let Ok(mut c) = current.lock() {
            *c = None;
        }
        let kind = match result {
            Err(_) => "crash",
            Ok(()) if took > opts.slow => "slow",
            Ok(()) => return,
        };
        done.store(true, Ordering::Relaxed);
        let path = save(&opts.artifacts, name, kind, input);
        panic!(
            "fuzz {name}: {kind} input ({took:?}), saved as {}\n{}",
            path.display(),
            printable(input)
        );
    };
    for seed in seeds {
        exec(seed);
    }
    let mut rng = Rng(opts.seed | 1);
    let mut recent: Vec<Vec<u8>> = Vec::new();
    let mut execs = seeds.len() as u64;
    let start = Instant::now();
    let empty = [Vec::new()];
    let pool = if seeds.is_empty() { &empty[..] } else { seeds };
    while start.elapsed() < opts.budget {
        // Half the time build on a recent mutant, so edits stack up.
        let mut input = if !recent.is_empty() && rng.below(2) == 0 {
            recent[rng.below(recent.len())].clone()
        } else {
            pool[rng.below(pool.len())].clone()
        };
        for _ in 0..=rng.below(6) {
            mutate(&mut input, pool, dict, &mut rng, opts.max_len);
        }
        exec(&input);
        execs += 1;
        if recent.len() < 64 {
            recent.push(input);
        } else {
            let i = rng.below(recent.len());
            recent[i] = input;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    Outcome {
        seeds: seeds.len(),
        execs,
    }
}

/// Bytes that mean something to one of the parsers.
const SPECIAL: &[u8] = b" \t\n\r\x0c,!*?\"'\\=#/%:@[]{}0-";

fn mutate(input: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[Vec<u8>], rng: &mut Rng, max: usize) {
    let len = input.len();
    let at = rng.below(len + 1);
    match rng.below(10) {
        0 if len > 0 => input[at.min(len - 1)] ^= 1 << rng.below(8),
        1 if len > 0 => input[at.min(len - 1)] = rng.byte(),
        2 => input.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
        3 if len > 0 => {
            let n = 1 + rng.below((len - at.min(len - 1)).min(16));
            input.drain(at.min(len - 1)..(at.min(len - 1) + n).min(len));
        }
        4 if !dict.is_empty() => {
            let token = &dict[rng.below(dict.len())];
            input.splice(at..at, token.iter().copied());
        }
        5 if len > 0 => {
            // Copy a chunk elsewhere.
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(64));
            let chunk = input[from..from + n].to_vec();
            input.splice(at..at, chunk);
        }
        6 if len > 0 => {
            // Repeat a short chunk many times: nesting, long lists, quadratic paths.
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(8));
            let chunk = input[from..from + n].to_vec();
            let times = 1 + rng.below(2000);
            let mut run = Vec::with_capacity(n * times);
            for _ in 0..times {
                run.extend_from_slice(&chunk);
            }
            input.splice(at..at, run);
        }
        7 => {
            // Splice: this input's head, another's tail.
            let other = &pool[rng.below(pool.len())];
            let cut = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[cut..]);
        }
        8 if len > 0 => input.truncate(at),
        _ => input.insert(at, rng.byte()),
    }
    input.truncate(max);
}

/// xorshift64*: small, fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn save(dir: &Path, name: &str, kind: &str, input: &[u8]) -> PathBuf {
    // FNV-1a names the file by content, so a repeat finding overwrites itself.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let path = dir.join(format!("{kind}-{name}-{hash:016x}"));
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(&path, input);
    path
}

/// The input as a Rust byte-string literal body, cut to 2,000 bytes.
fn printable(input: &[u8]) -> String {
    let shown: String = input
        .iter()
        .take(2000)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if input.len() > 2000 {
        format!("b\"{shown}\"... ({} bytes)", input.len())
    } else {
        format!("b\"{shown}\"")
    }
}
