//! A handshake flood for the benchmark, in the style of DHEat (ssh-audit --dheat):
//! many parallel connections that each make the server do its half of a key
//! exchange and then go away, while the flooder itself does almost no work.
//!
//! Each connection sends an identification line and a KEXINIT offering one key
//! exchange method, then the client's key-exchange message with a public value
//! that costs nothing to make (random bytes for curve25519; a random number just
//! below the group's prime for the finite-field groups, whose primes all start
//! with 64 one bits). The server computes its key pair, the shared secret and the
//! exchange hash, signs it with its host key and answers with its reply; on that
//! reply the flooder closes the connection and opens the next. No NEWKEYS is ever
//! sent, so nothing after the key exchange is measured.
//!
//! Output: one JSON line at the end with the counts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
#[command(
    name = "rsshd-flood",
    about = "Flood an SSH server with cheap-to-send key exchanges"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long)]
    port: u16,
    /// Source address to connect from (e.g. 127.0.0.2), so limits per source can be
    /// told apart from global ones.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// The key exchange to ask for: curve25519-sha256, curve25519-sha256@libssh.org,
    /// diffie-hellman-group14-sha256, -group16-sha512 or -group18-sha512.
    #[arg(long, default_value = "curve25519-sha256")]
    kex: String,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to flood, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Limit on one connection (connect to reply), in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// Bits of the group's prime for the finite-field methods; `None` for curve25519.
fn group_bits(kex: &str) -> Result<Option<usize>, String> {
    Ok(match kex {
        "curve25519-sha256" | "curve25519-sha256@libssh.org" => None,
        "diffie-hellman-group14-sha256" | "diffie-hellman-group14-sha1" => Some(2048),
        "diffie-hellman-group16-sha512" => Some(4096),
        "diffie-hellman-group18-sha512" => Some(8192),
        other => return Err(format!("unsupported key exchange {other}")),
    })
}

/// A small generator for public values nobody needs to keep secret.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

/// An unencrypted binary packet (RFC 4253 section 6) around `payload`.
fn packet(payload: &[u8]) -> Vec<u8> {
    let mut pad = 8 - (5 + payload.len()) % 8;
    if pad < 4 {
        pad += 8;
    }
    let mut out = Vec::with_capacity(5 + payload.len() + pad);
    put_u32(&mut out, (1 + payload.len() + pad) as u32);
    out.push(pad as u8);
    out.extend_from_slice(payload);
    out.extend(std::iter::repeat_n(0u8, pad));
    out
}

fn kexinit(kex: &str) -> Vec<u8> {
    let mut p = vec![20u8];
    p.extend_from_slice(&[0u8; 16]);
    let ciphers: &[u8] =
        b"aes128-ctr,aes256-ctr,chacha20-poly1305@openssh.com,aes128-gcm@openssh.com";
    let macs: &[u8] = b"hmac-sha2-256,hmac-sha2-512,hmac-sha2-256-etm@openssh.com";
    for list in [
        kex.as_bytes(),
        b"ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256",
        ciphers,
        ciphers,
        macs,
        macs,
        b"none",
        b"none",
        b"",
        b"",
    ] {
        put_string(&mut p, list);
    }
    p.push(0); // first_kex_packet_follows
    put_u32(&mut p, 0);
    packet(&p)
}

/// SSH_MSG_KEX_ECDH_INIT / SSH_MSG_KEXDH_INIT (both number 30).
fn kex_init(bits: Option<usize>, rng: &mut XorShift) -> Vec<u8> {
    let mut p = vec![30u8];
    match bits {
        None => {
            let mut q = [0u8; 32];
            rng.fill(&mut q);
            put_string(&mut p, &q);
        }
        Some(bits) => {
            // 0x7f... is below every MODP prime of that size (they begin with 64
            // one bits) and positive as an mpint, with plenty of bits set.
            let mut e = vec![0u8; bits / 8];
            rng.fill(&mut e);
            e[0] = 0x7f;
            put_string(&mut p, &e);
        }
    }
    packet(&p)
}

/// Read packets until the server's key exchange reply (number 31).
async fn until_reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Result<(), String> {
    loop {
        let len = r
            .read_u32()
            .await
            .map_err(|e| format!("read: {}", e.kind()))? as usize;
        if !(5..=256 * 1024).contains(&len) {
            return Err("bad packet length".into());
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)
            .await
            .map_err(|e| format!("read: {}", e.kind()))?;
        match body.get(1) {
            Some(31) => return Ok(()),
            Some(1) => return Err("disconnect".into()),
            _ => {}
        }
    }
}

/// One connection: returns Ok when the server answered the key exchange.
async fn one(args: &Args, kex: &[u8], bits: Option<usize>, seed: u64) -> Result<(), String> {
    let addr = SocketAddr::new(args.host, args.port);
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {}", e.kind()))?;
    if let Some(b) = args.bind {
        socket
            .bind(SocketAddr::new(b, 0))
            .map_err(|e| format!("bind: {}", e.kind()))?;
    }
    let stream: TcpStream = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut r = BufReader::new(read);
    write
        .write_all(b"SSH-2.0-rsshd_flood\r\n")
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    // The server's identification; other lines before it are allowed (and a
    // refusal such as sshd's "Not allowed at this time" arrives as one).
    let mut seen = 0usize;
    loop {
        let mut line = Vec::new();
        loop {
            let b = r.read_u8().await.map_err(|_| "refused".to_string())?;
            line.push(b);
            seen += 1;
            if b == b'\n' || seen > 8192 {
                break;
            }
        }
        if line.starts_with(b"SSH-") {
            break;
        }
        if seen > 8192 {
            return Err("no identification".into());
        }
    }
    let mut rng = XorShift(seed | 1);
    let mut out = kex.to_vec();
    out.extend_from_slice(&kex_init(bits, &mut rng));
    write
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {}", e.kind()))?;
    until_reply(&mut r).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(Args::parse());
    let bits = group_bits(&args.kex)?;
    let kex = Arc::new(kexinit(&args.kex));
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency.max(1) {
        let (args, kex, done) = (Arc::clone(&args), Arc::clone(&kex), Arc::clone(&done));
        workers.spawn(async move {
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let seed = (w as u64) << 40 ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let limit = Duration::from_secs_f64(args.timeout);
                match tokio::time::timeout(limit, one(&args, &kex, bits, seed)).await {
                    Ok(Ok(())) => {
                        done.fetch_add(1, Relaxed);
                    }
                    Ok(Err(e)) => {
                        *errors.entry(e).or_default() += 1;
                        // A refused connection costs the server little; do not
                        // spin on it faster than a real flood would.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => *errors.entry("timeout".into()).or_default() += 1,
                }
            }
            errors
        });
    }
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(r) = workers.join_next().await {
        for (k, v) in r? {
            *errors.entry(k).or_default() += v;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Relaxed);
    println!(
        "{}",
        json!({
            "kex": args.kex,
            "handshakes": n,
            "per_s": (n as f64 / secs * 10.0).round() / 10.0,
            "errors": errors,
            "seconds": (secs * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
