"""The `flood` phase of bench.py: how an established session fares while one
source floods the server with key exchanges.

For each server, one `ssh -T host cat` session is opened with the bench key, and
a byte is echoed through it every 20 ms: the time from write to echo is the round
trip. It is measured first with no load, then while `rsshd-flood` (bench/loadgen,
a second process) runs 64 connections at a time from 127.0.0.1, each asking for
one key exchange method, sending a public value that costs it nothing, waiting
for the server's signed reply and closing (the DHEat pattern of ssh-audit
--dheat, generalised to curve25519, which all three servers offer). Every server
runs with its default limits (MaxStartups 10:30:100; Dropbear's 5 unauthenticated
connections per address), as a flood would find it.
"""
import json, os, select, signal, subprocess, time
from pathlib import Path

FLOODS = (("curve25519-sha256", "curve25519"), ("diffie-hellman-group18-sha512", "group18 (DHEat)"))
CONCURRENCY = 64
INTERVAL = 0.02


def echo_session(ssh_cmd, key, port):
    p = subprocess.Popen(ssh_cmd(key, port, ["-T"]) + ["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, bufsize=0)
    try:
        rtt = echo_once(p, timeout=30)
    except OSError:
        rtt = None
    if rtt is None:
        p.kill()
        p.wait()
        raise SystemExit(f"echo session on port {port} did not start")
    return p


def echo_once(p, timeout=10.0):
    """One byte through the session and back; seconds, or None on timeout."""
    t = time.perf_counter()
    try:
        os.write(p.stdin.fileno(), b"x")
        r, _, _ = select.select([p.stdout], [], [], timeout)
        if not r or os.read(p.stdout.fileno(), 64) == b"":
            return None
    except OSError:
        return None
    return time.perf_counter() - t


def measure(p, seconds):
    """Round trips in ms over `seconds`; a lost echo counts as the time waited."""
    out, end = [], time.time() + seconds
    while time.time() < end:
        rtt = echo_once(p)
        out.append(1000.0 * (rtt if rtt is not None else 10.0))
        if rtt is None and p.poll() is not None:
            break  # the session is gone; its loss is already counted
        time.sleep(INTERVAL)
    return out


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round((len(v) - 1) * q)))] if v else None


def summary(v):
    return {"n": len(v), "p50": pct(v, 0.5), "p99": pct(v, 0.99), "max": max(v) if v else None}


def offered_kex(port):
    """The server's KEX list, from `ssh -vv`'s log of its KEXINIT."""
    p = subprocess.run(["ssh", "-vv", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no",
                        "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                        "-p", str(port), "nobody@127.0.0.1", "true"], capture_output=True, text=True, timeout=30)
    seen_peer = False
    for line in p.stderr.splitlines():
        if "peer server KEXINIT proposal" in line:
            seen_peer = True
        elif seen_peer and "KEX algorithms:" in line:
            return line.split("KEX algorithms:", 1)[1].strip().split(",")
    return []


def run_server(name, srv, ssh_cmd, key, cpu_seconds, flood_bin, seconds, floods):
    out = {}
    p = echo_session(ssh_cmd, key, srv.port)
    try:
        out["idle"] = summary(measure(p, 3))
        kexes = offered_kex(srv.port)
        for kex in floods:
            if kex not in kexes:
                out[kex] = {"not_offered": True}
                continue
            f = subprocess.Popen([str(flood_bin), "--port", str(srv.port), "--kex", kex, "--concurrency",
                                  str(CONCURRENCY), "--duration", str(seconds + 1)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(1)
            c0, t0 = cpu_seconds(srv), time.time()
            rtts = measure(p, seconds)
            c1, t1 = cpu_seconds(srv), time.time()
            stats = json.loads(f.communicate(timeout=120)[0] or "{}")
            out[kex] = dict(summary(rtts), handshakes_per_s=stats.get("per_s"), flood_errors=stats.get("errors"),
                            cpu_pct=100.0 * (c1 - c0) / (t1 - t0))
            print(name, kex, json.dumps(out[kex]), flush=True)
            # Let the server drop what the flood left before the next one.
            time.sleep(3)
            if echo_once(p, timeout=30) is None:
                out[kex]["session_lost"] = True
                p.kill()
                try:
                    p = echo_session(ssh_cmd, key, srv.port)
                except SystemExit:
                    break
    finally:
        p.kill()
        p.wait()
    return out


def start(bench, name, work, hk, before_bin):
    port = bench.free_port()
    if name == "OpenSSH":
        (work / "flood_sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nUsePAM no\nPidFile {work}/flood_sshd.pid\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n")
        Path("/run/sshd").mkdir(exist_ok=True)
        return bench.Server(name, ["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "flood_sshd_config")], port,
                            names=("sshd",))
    if name == "Dropbear":
        dbk = work / "dropbear_ed25519"
        if not dbk.exists():
            bench.sh("dropbearkey", "-t", "ed25519", "-f", str(dbk))
        return bench.Server(name, ["/usr/sbin/dropbear", "-F", "-E", "-s", "-p", f"127.0.0.1:{port}", "-r", str(dbk),
                                   "-P", str(work / "flood_dropbear.pid")], port, names=("dropbear",))
    binary = before_bin if name == "rsshd_before" else bench.RSSHD
    extra = "PerSourcePenalties no\n" if name == "rsshd_nopenalty" else ""
    cfg = work / f"flood_{name}_config"
    cfg.write_text(f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nUsePAM no\n"
                   f"ControlSocket {work}/flood_{name}.sock\nPrintMotd no\nPrintLastLog no\n{extra}")
    return bench.Server(name, [str(binary), "-D", "-e", "-f", str(cfg)], port, names=("rsshd",))


def run(bench, work, key, seconds, reps, before_bin=None):
    """`reps` rounds over the servers, each freshly started (no penalty or backlog
    carried over), one at a time (a flooded server would disturb another's
    figures), so that the machine's other load falls on all of them alike. An old
    rsshd that offers diffie-hellman-group18-sha512 is flooded with it once, last:
    it is still computing long after the flood stops."""
    hk = work / "host_ed25519"
    if not hk.exists():
        bench.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hk))
    flood_bin = bench.ROOT / "target/release/rsshd-flood"
    names = ["OpenSSH", "Dropbear", "rsshd", "rsshd_nopenalty"] + (["rsshd_before"] if before_bin else [])
    runs = {n: [] for n in names}
    curve, group18 = FLOODS[0][0], FLOODS[1][0]
    for rep in range(reps):
        for name in names:
            floods = [curve]
            if name != "rsshd_before" or rep == reps - 1:
                floods.append(group18)
            srv = start(bench, name, work, hk, before_bin)
            try:
                runs[name].append(run_server(name, srv, bench.ssh_cmd, key, bench.cpu_seconds, flood_bin,
                                             seconds, floods))
            finally:
                srv.stop()
    return {n: aggregate(r) for n, r in runs.items()}


def aggregate(runs):
    """Per figure: (median, min, max) over the reps that have it."""
    import statistics
    out = {}
    for section in {k for r in runs for k in r}:
        parts = [r[section] for r in runs if isinstance(r.get(section), dict)]
        if any(p.get("not_offered") for p in parts):
            out[section] = {"not_offered": True}
            continue
        agg = {}
        for key in ("p50", "p99", "max", "handshakes_per_s", "cpu_pct"):
            vals = [p[key] for p in parts if p.get(key) is not None]
            if vals:
                agg[key] = (statistics.median(vals), min(vals), max(vals))
        agg["reps"] = len(parts)
        agg["lost"] = sum(1 for p in parts if p.get("session_lost"))
        out[section] = agg
    return out


def rows(flood):
    """Table rows (label, {column: (value,)*3}) for BENCHMARKS.md: OpenSSH, Dropbear
    and rsshd in their columns; rsshd's other builds and settings in rows of their
    own (rsshd column only)."""
    def v(name, kex, key):
        x = (flood.get(name) or {}).get(kex) or {}
        if x.get("not_offered"):
            return "not offered"
        val = x.get(key)
        return None if val is None else tuple(val)

    def idle(name, key):
        val = ((flood.get(name) or {}).get("idle") or {}).get(key)
        return None if val is None else tuple(val)

    out = [("echo round trip, no flood, p50 (ms)", {n: idle(n, "p50") for n in ("OpenSSH", "Dropbear", "rsshd")}, 2),
           ("echo round trip, no flood, p99 (ms)", {n: idle(n, "p99") for n in ("OpenSSH", "Dropbear", "rsshd")}, 2)]
    for kex, label in FLOODS:
        for key, what, digits in (("handshakes_per_s", "key exchanges completed per second", 0),
                                  ("cpu_pct", "server CPU (% of one core)", 0),
                                  ("p50", "echo round trip p50 (ms)", 2),
                                  ("p99", "echo round trip p99 (ms)", 2),
                                  ("max", "echo round trip max (ms)", 1)):
            out.append((f"{label} flood: {what}", {n: v(n, kex, key) for n in ("OpenSSH", "Dropbear", "rsshd")},
                        digits))
    for name, what in (("rsshd_nopenalty", "rsshd, `PerSourcePenalties no`"),
                       ("rsshd_before", "rsshd before (main: russh's KEX list, FFDH included)")):
        if name not in flood:
            continue
        for kex, label in FLOODS:
            if (flood[name].get(kex) or {}).get("not_offered") or kex not in flood[name]:
                continue
            for key, unit, digits in (("handshakes_per_s", "key exchanges completed per second", 0),
                                      ("cpu_pct", "server CPU (% of one core)", 0),
                                      ("p50", "echo round trip p50 (ms)", 2),
                                      ("p99", "echo round trip p99 (ms)", 2),
                                      ("max", "echo round trip max (ms)", 1)):
                out.append((f"{what}, {label} flood: {unit}", {"rsshd": v(name, kex, key)}, digits))
    return out
