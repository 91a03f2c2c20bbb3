//! A second process for the benchmark: it opens many authenticated SSH connections
//! that then sit idle, so the server's per-connection cost and its idle timers can be
//! measured at a scale no fleet of `ssh` processes reaches on one machine.
//!
//! Every connection authenticates with a public key and opens no channel: it is the
//! cheapest thing a client can hold open, so what is measured is the server's cost.
//!
//! Output is JSON lines on stdout: `ready` once the ramp is over, `done` at the end.
//! Without `--expect-idle`, the connections are held until stdin closes, so a caller
//! can measure the server while they are held. With `--expect-idle SECS`, the program
//! waits for the server to end each connection and reports how far each ending fell
//! from its deadline (the moment authentication succeeded, plus SECS).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use russh::client::{self, AuthResult, DisconnectReason};
use russh::keys::{self, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc};

#[derive(Parser)]
#[command(
    name = "rsshd-loadgen",
    about = "Hold many idle authenticated SSH connections"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    user: String,
    /// Private key (unencrypted) whose public half is in the user's authorized_keys.
    #[arg(long)]
    key: PathBuf,
    /// Connections to open.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Handshakes in flight at once. Servers limit unauthenticated connections per
    /// address (Dropbear: 5), so this stays below their limit.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The server's idle timeout in seconds: wait for the server to end every
    /// connection and report each ending against its deadline.
    #[arg(long)]
    expect_idle: Option<f64>,
    /// Stop opening connections after this many seconds.
    #[arg(long, default_value_t = 900)]
    ramp_limit: u64,
    /// Per-connection limit on connect plus authentication, in seconds.
    #[arg(long, default_value_t = 60)]
    connect_timeout: u64,
    /// With --expect-idle: how long past the last deadline to wait before counting
    /// a connection as never ended.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// Without --expect-idle: the longest hold, in case stdin never closes.
    #[arg(long, default_value_t = 3600)]
    hold_limit: u64,
}

/// Records when the server ended the connection, however it did so.
struct Watch {
    idx: usize,
    ended: mpsc::UnboundedSender<(usize, Instant)>,
}

impl client::Handler for Watch {
    type Error = russh::Error;

    /// The benchmark starts the server itself on loopback; there is no host to verify.
    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let _ = self.ended.send((self.idx, Instant::now()));
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

struct Held {
    /// Kept so the connection stays open: dropping the handle ends the session.
    _handle: client::Handle<Watch>,
    auth_sent: Instant,
    auth_ok: Instant,
}

struct Target {
    host: String,
    port: u16,
    user: String,
    key: Arc<PrivateKey>,
    config: Arc<client::Config>,
}

async fn open(
    target: &Target,
    idx: usize,
    ended: mpsc::UnboundedSender<(usize, Instant)>,
) -> Result<Held, String> {
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let mut handle = client::connect_stream(target.config.clone(), stream, Watch { idx, ended })
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let auth_sent = Instant::now();
    let result = handle
        .authenticate_publickey(
            target.user.clone(),
            PrivateKeyWithHashAlg::new(target.key.clone(), None),
        )
        .await
        .map_err(|e| format!("auth: {e}"))?;
    let auth_ok = Instant::now();
    match result {
        AuthResult::Success => Ok(Held {
            _handle: handle,
            auth_sent,
            auth_ok,
        }),
        AuthResult::Failure { .. } => Err("auth: refused".into()),
    }
}

/// 10,000 sockets need more descriptors than the usual soft limit of 1024.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn ms(d: f64) -> f64 {
    (d * 1000.0 * 10.0).round() / 10.0
}

/// min, p50, p90, p99, max of a sample, in milliseconds.
fn summary(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({
        "n": v.len(),
        "min_ms": ms(v[0]),
        "p50_ms": ms(at(0.5)),
        "p90_ms": ms(at(0.9)),
        "p99_ms": ms(at(0.99)),
        "max_ms": ms(v[v.len() - 1]),
    })
}

/// The most connections that were authenticated and not yet ended at one moment.
fn peak_concurrent(held: &[Option<Held>], ended: &[Option<Instant>]) -> usize {
    let mut events: Vec<(Instant, i32)> = Vec::new();
    for (h, e) in held.iter().zip(ended) {
        if let Some(h) = h {
            events.push((h.auth_ok, 1));
            if let Some(e) = e {
                events.push((*e, -1));
            }
        }
    }
    events.sort();
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, d) in events {
        now += i64::from(d);
        peak = peak.max(now);
    }
    peak as usize
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    raise_nofile();
    let key = keys::load_secret_key(&args.key, None)?;
    let target = Arc::new(Target {
        host: args.host.clone(),
        port: args.port,
        user: args.user.clone(),
        key: Arc::new(key),
        // No keepalives and no inactivity timer: the connections must be idle.
        config: Arc::new(client::Config {
            nodelay: true,
            ..Default::default()
        }),
    });

    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel();
    let mut ended: Vec<Option<Instant>> = vec![None; args.count];
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let ramp_limit = Duration::from_secs(args.ramp_limit);
    let mut launched = 0;
    for idx in 0..args.count {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        if start.elapsed() > ramp_limit {
            break;
        }
        let (target, ended_tx, done_tx) = (target.clone(), ended_tx.clone(), done_tx.clone());
        let limit = Duration::from_secs(args.connect_timeout);
        tokio::spawn(async move {
            let r = match tokio::time::timeout(limit, open(&target, idx, ended_tx)).await {
                Ok(r) => r,
                Err(_) => Err("timeout".to_string()),
            };
            drop(permit);
            let _ = done_tx.send((idx, r));
        });
        launched += 1;
        if launched % 1000 == 0 {
            eprintln!(
                "rsshd-loadgen: {launched} launched after {:.1}s",
                start.elapsed().as_secs_f64()
            );
        }
    }
    drop(done_tx);
    let mut held: Vec<Option<Held>> = (0..args.count).map(|_| None).collect();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    while let Some((idx, r)) = done_rx.recv().await {
        match r {
            Ok(h) => held[idx] = Some(h),
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    let ramp = start.elapsed().as_secs_f64();
    while let Ok((idx, at)) = ended_rx.try_recv() {
        ended[idx] = Some(at);
    }
    let established = held.iter().filter(|h| h.is_some()).count();
    let alive = held
        .iter()
        .zip(&ended)
        .filter(|(h, e)| h.is_some() && e.is_none())
        .count();
    let rtts: Vec<f64> = held
        .iter()
        .flatten()
        .map(|h| (h.auth_ok - h.auth_sent).as_secs_f64())
        .collect();
    println!(
        "{}",
        json!({
            "event": "ready",
            "launched": launched,
            "established": established,
            "alive": alive,
            "failed": launched - established,
            "errors": errors,
            "ramp_s": (ramp * 100.0).round() / 100.0,
            "per_s": (established as f64 / ramp * 10.0).round() / 10.0,
            "auth_round_trip": summary(rtts),
        })
    );

    match args.expect_idle {
        None => {
            // Hold until the caller closes stdin, noting anything the server drops.
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            let hold = tokio::time::sleep(Duration::from_secs(args.hold_limit));
            tokio::pin!(hold);
            loop {
                tokio::select! {
                    n = stdin.read(&mut buf) => if !matches!(n, Ok(n) if n > 0) { break },
                    Some((idx, at)) = ended_rx.recv() => ended[idx] = Some(at),
                    _ = &mut hold => break,
                }
            }
            while let Ok((idx, at)) = ended_rx.try_recv() {
                ended[idx] = Some(at);
            }
            let dropped = held
                .iter()
                .zip(&ended)
                .filter(|(h, e)| h.is_some() && e.is_some())
                .count();
            println!(
                "{}",
                json!({
                    "event": "done",
                    "held": established - dropped,
                    "dropped": dropped,
                    "held_for_s": ((start.elapsed().as_secs_f64() - ramp) * 10.0).round() / 10.0,
                })
            );
        }
        Some(idle) => {
            let idle = Duration::from_secs_f64(idle);
            let last_deadline = held.iter().flatten().map(|h| h.auth_ok + idle).max();
            let give_up =
                last_deadline.unwrap_or_else(Instant::now) + Duration::from_secs(args.grace);
            let mut open_left = alive;
            while open_left > 0 {
                match tokio::time::timeout_at(give_up.into(), ended_rx.recv()).await {
                    Ok(Some((idx, at))) => {
                        if held[idx].is_some() && ended[idx].is_none() {
                            open_left -= 1;
                        }
                        ended[idx] = Some(at);
                    }
                    _ => break,
                }
            }
            let mut offsets = Vec::new();
            let (mut early, mut late, mut never) = (0, 0, 0);
            for (h, e) in held.iter().zip(&ended) {
                let Some(h) = h else { continue };
                match e {
                    None => never += 1,
                    Some(e) => {
                        let deadline = h.auth_ok + idle;
                        let off = if *e >= deadline {
                            (*e - deadline).as_secs_f64()
                        } else {
                            -(deadline - *e).as_secs_f64()
                        };
                        // The server started its clock between our request and its
                        // answer, so an ending before the request's time is early.
                        if *e < h.auth_sent + idle {
                            early += 1;
                        }
                        if off > 1.0 {
                            late += 1;
                        }
                        offsets.push(off);
                    }
                }
            }
            let first = held.iter().flatten().map(|h| h.auth_ok).min();
            let spread = match (first, last_deadline) {
                (Some(f), Some(l)) => ((l - idle) - f).as_secs_f64(),
                _ => 0.0,
            };
            println!(
                "{}",
                json!({
                    "event": "done",
                    "idle_timeout_s": idle.as_secs_f64(),
                    "ended": offsets.len(),
                    "never_ended": never,
                    "early": early,
                    "late_over_1s": late,
                    "peak_concurrent": peak_concurrent(&held, &ended),
                    "deadlines_spread_s": (spread * 10.0).round() / 10.0,
                    "offset": summary(offsets),
                })
            );
        }
    }
    // Ending 10,000 sessions one by one is slow and measures nothing.
    std::process::exit(0);
}
