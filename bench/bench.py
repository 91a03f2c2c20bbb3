#!/usr/bin/env python3
"""Side-by-side benchmark of rsshd, OpenSSH sshd and Dropbear on 127.0.0.1.

Every figure is measured in the same run against all three servers, which this
script starts itself (never as system services) and stops by PID. Results go to
BENCHMARKS.md and bench/memory.png. Run as root (it creates the user rsshd-bench):

    cargo build --release && python3 bench/bench.py            # full run
    python3 bench/bench.py --quick                              # smoke run, tiny counts
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RSSHD = ROOT / "target/release/rsshd"
LOADGEN = ROOT / "target/release/rsshd-loadgen"
# Where the servers' logs go (the run's work directory), once main has made it.
LOG_DIR = None
# `--rsshd-before`: an older build measured beside the current one.
RSSHD_BEFORE = None
USER = "rsshd-bench"
TICK = os.sysconf("SC_CLK_TCK")


def sh(*args, **kw):
    return subprocess.run(list(args), check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


CGROUP = Path("/sys/fs/cgroup/cpuacct")


def cpu_seconds(srv):
    """CPU of the server and everything it started: its cpuacct cgroup where the
    machine has one (children counted whether or not they were reaped), else
    utime+stime+cutime+cstime of the main process (reaped children only)."""
    if srv.cgroup:
        return int((srv.cgroup / "cpuacct.usage").read_text()) / 1e9
    f = open(f"/proc/{srv.pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15]) / TICK


def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree(pid):
    """pid and all its descendants, from one pass over /proc (20,000 processes are
    expected when OpenSSH holds 10,000 connections)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(kids.get(p, ()))
    return seen


def comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


class Server:
    def __init__(self, name, cmd, port, pidfile=None, names=()):
        self.name, self.port, self.names = name, port, names
        # Each server's log is kept in the work directory (printed at the start),
        # to find out why a phase lost connections.
        log = open(LOG_DIR / f"{name}-{port}.log", "wb") if LOG_DIR else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if LOG_DIR:
            log.close()
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"{name} did not start")
        self.pid = self.proc.pid
        self.cgroup = None
        if CGROUP.is_dir():
            cg = CGROUP / f"rsshd-bench-{name}-{self.pid}"
            try:
                cg.mkdir()
                (cg / "cgroup.procs").write_text(str(self.pid))
                self.cgroup = cg
            except OSError:
                self.cgroup = None

    def server_pids(self):
        """The server's own processes (not the users' shells and commands)."""
        return [p for p in tree(self.pid) if comm(p) in self.names]

    def stop(self):
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except Exception:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
        if self.cgroup:
            for _ in range(50):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def setup(work):
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        sh("useradd", "--create-home", "--shell", "/bin/sh", USER)
    # No password, but not locked: OpenSSH refuses locked ("!") accounts even for keys.
    sh("usermod", "-p", "*", USER)
    home = Path(f"/home/{USER}")
    key = work / "client_key"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text((work / "client_key.pub").read_text())
    shutil.chown(ssh_dir, USER, USER)
    shutil.chown(ssh_dir / "authorized_keys", USER, USER)
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    return key


def start_servers(work, idle=None, with_before=False):
    """Start the three servers (four with `--rsshd-before`, for the phases that
    compare rsshd with an older build of itself); with `idle` (seconds), each with its own way of
    ending an idle connection that has no channel: rsshd IdleTimeout, OpenSSH
    UnusedConnectionTimeout, Dropbear -I."""
    hk = work / "host_ed25519"
    if not hk.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hk))
    servers = {}
    p = free_port()
    (work / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {p}\nHostKey {hk}\nUsePAM no\nPidFile {work}/sshd.pid\n"
        "MaxStartups 2000\nMaxSessions 2000\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        + (f"UnusedConnectionTimeout {idle}s\n" if idle else ""))
    Path("/run/sshd").mkdir(exist_ok=True)
    servers["OpenSSH"] = Server("OpenSSH", ["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")], p,
                                names=("sshd",))
    p = free_port()
    dbk = work / "dropbear_ed25519"
    if not dbk.exists():
        sh("dropbearkey", "-t", "ed25519", "-f", str(dbk))
    servers["Dropbear"] = Server("Dropbear", ["/usr/sbin/dropbear", "-F", "-E", "-s", "-p", f"127.0.0.1:{p}",
                                              "-r", str(dbk), "-P", str(work / "dropbear.pid")]
                                 + (["-I", str(idle)] if idle else []), p,
                                 names=("dropbear",))
    p = free_port()
    (work / "rsshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {p}\nHostKey {hk}\nUsePAM no\nMaxStartups 2000\nMaxSessions 2000\n"
        f"ControlSocket {work}/rsshd.sock\nIdleTimeout {f'{idle}s' if idle else 'none'}\n"
        "PrintMotd no\nPrintLastLog no\n")
    # The monitor and the network process both count; a network process started
    # through /proc/self/exe would be named "exe".
    rsshd_names = ("rsshd", "exe")
    # The binary's own name too: `--rsshd` may name a copy such as rsshd-abc123.
    servers["rsshd"] = Server("rsshd", [str(RSSHD), "-D", "-e", "-f", str(work / "rsshd_config")], p,
                              names=rsshd_names + (RSSHD.name[:15],))
    if with_before and RSSHD_BEFORE:
        p = free_port()
        cfg = (work / "rsshd_config").read_text().replace(f"Port {servers['rsshd'].port}\n", f"Port {p}\n")
        cfg = cfg.replace(f"ControlSocket {work}/rsshd.sock", f"ControlSocket {work}/rsshd-before.sock")
        (work / "rsshd_before_config").write_text(cfg)
        servers["rsshd_before"] = Server("rsshd_before", [str(RSSHD_BEFORE), "-D", "-e", "-f",
                                                          str(work / "rsshd_before_config")], p,
                                         names=rsshd_names + (RSSHD_BEFORE.name[:15],))
    return servers


def ssh_cmd(key, port, extra=()):
    return ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-p", str(port), *extra, f"{USER}@127.0.0.1"]


def settle(srv, timeout=10.0):
    """Wait until the server has reaped every per-connection process, so their CPU
    has reached its cutime/cstime."""
    end = time.time() + timeout
    while time.time() < end and len(tree(srv.pid)) > 1:
        time.sleep(0.05)


def connection_cost(srv, key, n, parallel, wait=True):
    """Server CPU per `ssh host true` and connections per second."""
    def worker(count, fails):
        for _ in range(count):
            if subprocess.run(ssh_cmd(key, srv.port) + ["true"], capture_output=True).returncode != 0:
                fails.append(1)
    fails = []
    c0, t0 = cpu_seconds(srv), time.time()
    threads = [threading.Thread(target=worker, args=(n // parallel, fails)) for _ in range(parallel)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    dt = time.time() - t0
    if wait:
        settle(srv)
    else:
        time.sleep(1)
    dc = cpu_seconds(srv) - c0
    done = (n // parallel) * parallel - len(fails)
    return {"ms_per_conn": 1000.0 * dc / max(done, 1), "conn_per_s": done / dt, "failed": len(fails)}


def ipc_per_login(work, key, logins=10):
    """Privileged requests per login (`ssh host true`, public key), on dedicated
    servers because the debug logs this reads cost CPU: each monitor request of
    OpenSSH's unprivileged child (LogLevel DEBUG3 logs `monitor_read: checking
    request N` in the monitor, pre- and post-authentication) and each round trip
    of rsshd's network process to its monitor (LogLevel DEBUG logs the running
    total when each connection closes; the difference between two consecutive
    connections is one login). Dropbear has no privilege separation."""
    hk = work / "host_ed25519"
    out = {}
    port = free_port()
    log = work / "ipc-sshd.log"
    cfg = work / "ipc_sshd_config"
    cfg.write_text(f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nUsePAM no\nPidFile none\n"
                   "LogLevel DEBUG3\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n")
    srv = Server("OpenSSH-ipc", ["/usr/sbin/sshd", "-D", "-E", str(log), "-f", str(cfg)], port, names=("sshd",))
    counts = []
    try:
        for _ in range(logins):
            before = log.read_text(errors="replace").count("monitor_read: checking request")
            ok = subprocess.run(ssh_cmd(key, port) + ["true"], capture_output=True).returncode == 0
            settle(srv)
            after = log.read_text(errors="replace").count("monitor_read: checking request")
            if ok:
                counts.append(after - before)
    finally:
        srv.stop()
    out["OpenSSH"] = med(counts)
    port = free_port()
    log = work / "ipc-rsshd.log"
    cfg = work / "ipc_rsshd_config"
    cfg.write_text(f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nUsePAM no\nPidFile none\n"
                   f"LogLevel DEBUG\nControlSocket {work}/ipc-rsshd.sock\nPrintMotd no\nPrintLastLog no\n")
    srv = Server("rsshd-ipc", [str(RSSHD), "-D", "-E", str(log), "-f", str(cfg)], port, names=("rsshd", "exe"))
    try:
        for _ in range(logins):
            subprocess.run(ssh_cmd(key, port) + ["true"], capture_output=True)
        time.sleep(1)
        totals = [int(m) for m in re.findall(r"closed; (\d+) monitor round trips so far", log.read_text(errors="replace"))]
    finally:
        srv.stop()
    out["rsshd"] = med([b - a for a, b in zip(totals, totals[1:])])
    return out


def throughput(srv, key, cipher, direction, size):
    extra = ["-c", cipher]
    c0, t0 = cpu_seconds(srv), time.time()
    if direction == "up":
        p = subprocess.run(f"head -c {size} /dev/zero | " + " ".join(ssh_cmd(key, srv.port, extra)) + " 'cat >/dev/null'",
                           shell=True, capture_output=True)
        ok = p.returncode == 0
    else:
        p = subprocess.run(" ".join(ssh_cmd(key, srv.port, extra)) + f" 'head -c {size} /dev/zero' | wc -c",
                           shell=True, capture_output=True, text=True)
        ok = p.returncode == 0 and p.stdout.strip() == str(size)
    dt = time.time() - t0
    settle(srv)
    dc = cpu_seconds(srv) - c0
    if not ok:
        return None
    return {"mb_s": size / 1e6 / dt, "cpu_s_per_gib": dc * (1 << 30) / size}


def duplex_input(work, size):
    """A file of `size` random bytes for the duplex phase (random, so gzip works
    for its output), and the checksums each consumer must print."""
    path = work / f"duplex-{size}"
    if not path.exists():
        with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
            left = size
            while left:
                chunk = src.read(min(left, 1 << 20))
                dst.write(chunk)
                left -= len(chunk)
    expect = {}
    for name, consumer in DUPLEX_CONSUMERS:
        expect[name] = subprocess.run(f"cat {path} | {consumer}", shell=True, check=True, capture_output=True,
                                      text=True).stdout.split()[0]
    return path, expect


# What reads the echoed data on the client side: a fast consumer, and one slower
# than the link (gzip -1 takes 4.7 s for 100 MiB of random data here), so the server's
# output waits for the client's window while its input keeps coming.
DUPLEX_CONSUMERS = (("sha256", "sha256sum"), ("gzip", "gzip -1 | sha256sum"))


def duplex(srv, key, path, consumer, expect):
    """Both directions at once through one channel: `ssh -T host cat < file | consumer`,
    timed end to end, with the server's CPU; None if the output was wrong."""
    c0, t0 = cpu_seconds(srv), time.time()
    p = subprocess.run(" ".join(ssh_cmd(key, srv.port, ["-T"])) + f" cat < {path} | {consumer}",
                       shell=True, capture_output=True, text=True)
    dt = time.time() - t0
    settle(srv)
    dc = cpu_seconds(srv) - c0
    if p.returncode != 0 or p.stdout.split()[:1] != [expect]:
        return None
    return {"s": dt, "cpu_s": dc}


def idle_memory(srv, key, k):
    """Server PSS per idle `ssh -tt` session, the users' programs not counted."""
    base = pss_kb(srv.server_pids())
    clients = []
    ready = 0
    # Dropbear in batches of 4: it drops a fifth concurrent unauthenticated
    # connection from one address (its MAX_UNAUTH_PER_IP is 5).
    step = 4 if srv.name == "Dropbear" else 16
    for start in range(0, k, step):
        batch = []
        for _ in range(min(step, k - start)):
            batch.append(subprocess.Popen(ssh_cmd(key, srv.port, ["-tt"]) + ["echo READY; exec sleep 3600"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL))
        for c in batch:
            ready += b"READY" in c.stdout.readline()
        clients.extend(batch)
    time.sleep(1)
    total = pss_kb(srv.server_pids())
    for c in clients:
        c.kill()
    for c in clients:
        c.wait()
    time.sleep(2)
    # The server should have ended every session whose client went away.
    left = session_leftovers(srv.port)
    return {"sessions": ready, "pss_kb_per_session": (total - base) / max(ready, 1), "pss_kb_total": total,
            "left_running": len(left)}


def session_leftovers(port):
    """The `sleep 3600` session programs a server on `port` started that still run
    (their SSH_CLIENT names the server's port)."""
    import pwd
    uid = pwd.getpwnam(USER).pw_uid
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid != uid:
                    continue
                cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").strip()
            except OSError:
                continue
            if cmd != b"sleep 3600":
                continue
            try:
                env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            client = [e for e in env if e.startswith(b"SSH_CLIENT=")]
            if client and client[0].split()[-1] == str(port).encode():
                out.append(int(d))
    return out


def loadgen(srv, key, n, idle=None, ramp_limit=300):
    """N authenticated idle connections with no channel, from rsshd-loadgen in its
    own process. Without `idle`: hold them and measure the server's memory and CPU.
    With `idle`: wait for the server to end each one and time it against its
    deadline (authentication + idle seconds)."""
    cmd = [str(LOADGEN), "--port", str(srv.port), "--user", USER, "--key", str(key), "--count", str(n),
           "--concurrency", "4" if srv.name == "Dropbear" else "8", "--ramp-limit", str(ramp_limit)]
    if idle:
        cmd += ["--expect-idle", str(idle)]
    base = pss_kb(srv.server_pids())
    base_rss = rss_kb(srv.server_pids())
    c0 = cpu_seconds(srv)
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = json.loads(p.stdout.readline())
        t1, c1 = time.time(), cpu_seconds(srv)
        up = max(ready["established"], 1)
        out = {"established": ready["established"], "failed": ready["failed"], "errors": ready["errors"],
               "conn_per_s": ready["per_s"], "ramp_cpu_ms_per_conn": 1000.0 * (c1 - c0) / up}
        if idle is None:
            time.sleep(2)
            c2, t2 = cpu_seconds(srv), time.time()
            time.sleep(10)
            c3, t3 = cpu_seconds(srv), time.time()
            pids = srv.server_pids()
            total = pss_kb(pids)
            out.update(pss_kb_total=total, pss_kb_per_conn=(total - base) / up, processes=len(pids),
                       held_cpu_pct=100.0 * (c3 - c2) / (t3 - t2))
            # New logins while the server holds them all: a daemon that forks
            # from a large process pays for its size on every session.
            x = connection_cost(srv, key, 40, 8, wait=False)
            out.update(busy_cpu_ms_per_conn=x["ms_per_conn"], busy_conn_per_s=x["conn_per_s"])
            out["rss_peak_kb"] = rss_kb(pids)
            p.stdin.close()
            done = json.loads(p.stdout.readline())
            out["held"] = done["held"]
            out.update(rss_after_load(srv, base_rss))
        else:
            done = json.loads(p.stdout.readline())
            t2, c2 = time.time(), cpu_seconds(srv)
            out.update(done)
            out["wait_cpu_pct"] = 100.0 * (c2 - c1) / max(t2 - t1, 1e-3)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    time.sleep(3)
    return out


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def rss_after_load(srv, base_rss, seconds=60, step=5):
    """Resident memory of the server's own processes for `seconds` after the load
    generator closed its connections: does a burst leave the daemon fat? Also the
    first moment it was back within 2x of its idle size."""
    t0 = time.time()
    samples, back = [], None
    while True:
        t = time.time() - t0
        kb = rss_kb(srv.server_pids())
        samples.append((round(t, 1), kb))
        if back is None and kb <= 2 * base_rss:
            back = t
        if t >= seconds:
            break
        time.sleep(min(step, seconds - t))
    return {"rss_idle_kb": base_rss, "rss_after_kb": samples[-1][1], "rss_after_s": seconds,
            "rss_samples": samples, "rss_back_within_2x_s": back}


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return (statistics.median(values), min(values), max(values))


PHASES = ("cost", "bulk", "duplex", "memory", "scale", "flood")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny counts, for a smoke run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=PHASES, action="append",
                    help="run only these phases, keeping the others' figures from bench/results.json")
    ap.add_argument("--conns", type=int, help="idle connections from the load generator (default 10000)")
    ap.add_argument("--report-only", action="store_true", help="rewrite BENCHMARKS.md from bench/results.json")
    ap.add_argument("--flood-seconds", type=float, help="echo measurement per flood (default 15)")
    ap.add_argument("--rsshd-before", type=Path,
                    help="also measure this rsshd binary (a build of an older commit) in the cost, memory, "
                         "scale and flood phases; the report gives it its own column")
    ap.add_argument("--rsshd", type=Path, help="the rsshd binary to measure (default target/release/rsshd)")
    args = ap.parse_args()
    global RSSHD, RSSHD_BEFORE, LOG_DIR
    RSSHD = (args.rsshd or RSSHD).resolve()
    RSSHD_BEFORE = args.rsshd_before.resolve() if args.rsshd_before else None
    saved_path = ROOT / "bench/results.json"
    if args.report_only:
        results = json.loads(saved_path.read_text())
        write_report(results)
        plot(results)
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates the user rsshd-bench")
    if not RSSHD.exists() or not LOADGEN.exists():
        raise SystemExit("build first: cargo build --release --workspace")
    phases = args.only or PHASES
    results = json.loads(saved_path.read_text()) if args.only and saved_path.exists() else {}
    meta = results.setdefault("_meta", {})
    reps = 1 if args.quick else args.reps
    conns = 8 if args.quick else 80
    size = (16 << 20) if args.quick else (1 << 30)
    ks = [4] if args.quick else [50, 200, 1000]
    many = args.conns or (200 if args.quick else 10000)
    idle = 3 if args.quick else 30
    work = Path(tempfile.mkdtemp(prefix="rsshd-bench-"))
    LOG_DIR = work
    print(f"work directory (the servers' logs): {work}", flush=True)
    key = setup(work)
    for n in ("OpenSSH", "Dropbear", "rsshd") + (("rsshd_before",) if RSSHD_BEFORE else ()):
        results.setdefault(n, {})
    if "cost" in phases or "bulk" in phases:
        servers = start_servers(work, with_before="cost" in phases)
        try:
            for name, srv in servers.items():
                r = results[name]
                if "cost" in phases:
                    for label, par in (("seq", 1), ("par8", 8)):
                        runs = [connection_cost(srv, key, conns, par) for _ in range(reps)]
                        r[f"cpu_{label}"] = med([x["ms_per_conn"] for x in runs])
                        r[f"rate_{label}"] = med([x["conn_per_s"] for x in runs])
                if "bulk" in phases and name != "rsshd_before":
                    for cipher in CIPHERS:
                        for d in ("up", "down"):
                            runs = [throughput(srv, key, cipher, d, size) for _ in range(reps)]
                            r[f"mbs_{cipher}_{d}"] = med([x and x["mb_s"] for x in runs])
                            r[f"cpugib_{cipher}_{d}"] = med([x and x["cpu_s_per_gib"] for x in runs])
                print(name, json.dumps(r, default=str), flush=True)
        finally:
            for s in servers.values():
                s.stop()
        meta.update(reps=reps, conns=conns, size=size)
    if "cost" in phases:
        for name, v in ipc_per_login(work, key).items():
            results[name]["ipc_per_login"] = v
        print("ipc", {n: results[n].get("ipc_per_login") for n in NAMES}, flush=True)
    if "duplex" in phases:
        dsize = (8 << 20) if args.quick else (100 << 20)
        path, expect = duplex_input(work, dsize)
        servers = start_servers(work)
        try:
            # Reps interleave the servers: on a shared machine a slow minute then
            # costs each server one run, not one server all of its runs.
            runs = {(n, label): [] for n in servers for label, _ in DUPLEX_CONSUMERS}
            for _ in range(reps):
                for label, consumer in DUPLEX_CONSUMERS:
                    for name, srv in servers.items():
                        runs[name, label].append(duplex(srv, key, path, consumer, expect[label]))
            for name in servers:
                r = results[name]
                for label, _ in DUPLEX_CONSUMERS:
                    r[f"duplex_{label}_s"] = med([x and x["s"] for x in runs[name, label]])
                    r[f"duplex_{label}_cpu"] = med([x and x["cpu_s"] for x in runs[name, label]])
                print(name, json.dumps({k: v for k, v in r.items() if k.startswith("duplex")}), flush=True)
        finally:
            for s in servers.values():
                s.stop()
        meta.update(duplex_reps=reps, duplex_size=dsize)
    if "memory" in phases:
        # Memory on freshly started servers, so earlier transfers' heap does not hide
        # what sessions cost. One rep per size: K sessions are already K samples.
        for n in [n for n in NAMES + ("rsshd_before",) if n in results]:
            for k in [k for k in results[n] if k.startswith("pss_")]:
                del results[n][k]
        for k in ks:
            servers = start_servers(work, with_before=True)
            try:
                for name, srv in servers.items():
                    # One login first, so one-time start-up allocations are in the baseline.
                    subprocess.run(ssh_cmd(key, srv.port) + ["true"], capture_output=True)
                    settle(srv)
                    x = idle_memory(srv, key, k)
                    results[name][f"pss_{k}"] = med([x["pss_kb_per_session"]])
                    results[name][f"pss_total_{k}"] = med([x["pss_kb_total"]])
                    results[name][f"pss_sessions_{k}"] = x["sessions"]
                    results[name][f"pss_left_{k}"] = med([x["left_running"]])
                    print(name, k, x, flush=True)
            finally:
                for s in servers.values():
                    s.stop()
                # Stopping a server must not leave its sessions' programs behind
                # either; whatever is left is counted, then stopped by PID.
                time.sleep(2)
                for name, srv in servers.items():
                    orphans = session_leftovers(srv.port)
                    results[name][f"pss_orphans_{k}"] = med([len(orphans)])
                    for pid in orphans:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
        meta["ks"] = ks
    if "scale" in phases:
        # Each server fresh for each half: first held with no timeout, then ended by
        # its own idle timer.
        for phase_idle in (None, idle):
            servers = start_servers(work, idle=phase_idle, with_before=True)
            try:
                for name, srv in servers.items():
                    subprocess.run(ssh_cmd(key, srv.port) + ["true"], capture_output=True)
                    settle(srv)
                    x = loadgen(srv, key, many, idle=phase_idle)
                    results[name]["held" if phase_idle is None else "idle_end"] = x
                    print(name, "held" if phase_idle is None else "idle_end", json.dumps(x), flush=True)
            finally:
                for s in servers.values():
                    s.stop()
        meta.update(many=many, idle=idle)
    if "flood" in phases:
        import flood
        secs = args.flood_seconds or (3 if args.quick else 10)
        load_before = os.getloadavg()[0]
        results["_flood"] = flood.run(sys.modules[__name__], work, key, secs, reps,
                                      before_bin=args.rsshd_before)
        meta.update(flood_seconds=secs, flood_reps=reps, flood_load=[load_before, os.getloadavg()[0]])
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # A run with --only keeps the other phases' figures, so each phase keeps its own
    # date and the report says which rows are from when.
    dates = meta.setdefault("phase_dates", {p: meta.get("date", now) for p in PHASES})
    for p in phases:
        dates[p] = now
    meta.update(quick=args.quick, date=now, cores=os.cpu_count())
    saved_path.write_text(json.dumps(results, indent=1))
    write_report(results)
    plot(results)


CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")
NAMES = ("OpenSSH", "Dropbear", "rsshd")


def one(v):
    """A single measurement in the (median, min, max) shape of the table."""
    return None if v is None else (v, v, v)


def scale_value(results, name, phase, key):
    x = results.get(name, {}).get(phase)
    if not x:
        return None
    if key.startswith("offset."):
        return one((x.get("offset") or {}).get(key.split(".", 1)[1]))
    return one(x.get(key))


def phase_dates(meta):
    """`` (phases measured at: ...)`` when the phases were not all measured in one run."""
    dates = meta.get("phase_dates", {})
    if len(set(dates.values())) <= 1:
        return ""
    return " (phases measured at: " + ", ".join(f"{p} {d}" for p, d in sorted(dates.items())) + ")"


def write_report(results):
    meta = results.get("_meta", {})
    reps, conns, size = meta.get("reps", 3), meta.get("conns", 80), meta.get("size", 1 << 30)
    many, idle, ks = meta.get("many", 10000), meta.get("idle", 30), meta.get("ks", [])
    rows = [
        ("server CPU per connection, sequential (ms)", "cpu_seq", False, 1),
        ("server CPU per connection, 8 parallel (ms)", "cpu_par8", False, 1),
        ("connections/s, sequential", "rate_seq", True, 1),
        ("connections/s, 8 parallel", "rate_par8", True, 1),
        ("privileged requests per login, `ssh host true` (monitor round trips)", "ipc_per_login", None, 0),
    ]
    for cipher in CIPHERS:
        for d in ("up", "down"):
            rows.append((f"{cipher} {d} (MB/s)", f"mbs_{cipher}_{d}", True, 1))
            rows.append((f"{cipher} {d}, server CPU s/GiB", f"cpugib_{cipher}_{d}", False, 2))
    dmib = meta.get("duplex_size", 100 << 20) >> 20
    for label, consumer in DUPLEX_CONSUMERS:
        shown = consumer.replace("|", "\\|")
        rows.append((f"duplex: `ssh -T host cat < {dmib} MiB \\| {shown}` (s)", f"duplex_{label}_s", False, 2))
        rows.append((f"duplex into {consumer.split(' |')[0]}, server CPU (s)", f"duplex_{label}_cpu", False, 2))
    for k in ks:
        rows.append((f"server PSS per idle PTY session, {k} sessions (kB)", f"pss_{k}", False, 1))
    for k in ks:
        rows.append((f"of {k} sessions: programs still running 2 s after their clients were killed",
                     f"pss_left_{k}", False, 0))
        rows.append((f"of {k} sessions: programs still running after the server was stopped",
                     f"pss_orphans_{k}", False, 0))
    scale_rows = [
        (f"idle connections held, of {many} opened", "held", "held", True, 0),
        ("load generator: connections/s (handshake + public-key auth)", "held", "conn_per_s", True, 1),
        ("server CPU per connection, handshake + auth, no command (ms)", "held", "ramp_cpu_ms_per_conn", False, 2),
        ("server PSS per held idle connection (kB)", "held", "pss_kb_per_conn", False, 1),
        ("server PSS, all held connections (MB)", "held", "pss_mb_total", False, 0),
        ("server CPU while holding them idle (% of one core)", "held", "held_cpu_pct", False, 2),
        ("server RSS before the load, idle (MB)", "held", "rss_idle_mb", None, 1),
        ("server RSS holding them (MB)", "held", "rss_peak_mb", None, 0),
        ("server RSS 60 s after the load generator closed them (MB)", "held", "rss_after_mb", None, 1),
        ("seconds until back within 2x of the idle RSS", "held", "rss_back_within_2x_s", None, 1),
        ("while holding them: server CPU per new `ssh host true`, 8 parallel (ms)", "held", "busy_cpu_ms_per_conn", False, 1),
        ("while holding them: new `ssh host true` per second", "held", "busy_conn_per_s", True, 1),
        (f"idle timer: connections ended, of {many}", "idle_end", "ended", True, 0),
        ("idle timer: most connections open at once", "idle_end", "peak_concurrent", True, 0),
        ("idle timer: deadlines spread over (s, the load generator's ramp)", "idle_end", "deadlines_spread_s", None, 1),
        ("idle timer: ending - deadline, median (ms)", "idle_end", "offset.p50_ms", False, 1),
        ("idle timer: ending - deadline, p99 (ms)", "idle_end", "offset.p99_ms", False, 1),
        ("idle timer: ending - deadline, max (ms)", "idle_end", "offset.max_ms", False, 1),
        ("idle timer: ending - deadline, min (ms)", "idle_end", "offset.min_ms", None, 1),
        ("idle timer: ended more than 1 s late", "idle_end", "late_over_1s", False, 0),
        ("idle timer: ended before the deadline", "idle_end", "early", False, 0),
        ("server CPU while waiting for and ending them (% of one core)", "idle_end", "wait_cpu_pct", False, 2),
    ]
    for n in NAMES + ("rsshd_before",):
        h = results.get(n, {}).get("held")
        if h and "pss_kb_total" in h:
            h["pss_mb_total"] = h["pss_kb_total"] / 1024
        for k in ("rss_idle", "rss_peak", "rss_after"):
            if h and f"{k}_kb" in h:
                h[f"{k}_mb"] = h[f"{k}_kb"] / 1024

    def ratio(vals, higher):
        peers = [v[0] for n, v in vals.items() if n != "rsshd" and v is not None]
        if higher is None or not peers or vals["rsshd"] is None:
            return "n/a"
        best = max(peers) if higher else min(peers)
        if best <= 0:
            return "n/a"
        r = vals["rsshd"][0] / best
        return f"{r:.2f}" if r >= 0.1 else f"{r:.3f}"

    before = results.get("rsshd_before") or {}
    bcol = bool(before)
    head = ["| metric | OpenSSH | Dropbear | rsshd | ratio |" + (" rsshd before |" if bcol else ""),
            "|---|---|---|---|---|" + ("---|" if bcol else "")]

    def bcell(v, digits):
        return f" {fmt(v, digits)} |" if bcol else ""
    out = ["# Benchmarks", "",
           f"Generated by `python3 bench/bench.py{' --quick' if meta.get('quick') else ''}` on "
           f"{meta.get('date', '?')}, {meta.get('cores', '?')} cores{phase_dates(meta)}. All three servers ran on 127.0.0.1 in "
           "the same run, started by the script with their own config and ed25519 host key, as user "
           "rsshd-bench (shell /bin/sh). Ratio = rsshd / the better of OpenSSH and Dropbear (for MB/s, "
           "connections/s and counts held, higher is better; for CPU, memory and timer error, lower is "
           "better)." + (" The last column, rsshd before, is an older build of rsshd measured in the same "
                         "run (`--rsshd-before`), for before/after figures; it is not in the ratio." if bcol else ""), "",
           "## Connections, throughput, memory per session", "",
           f"Median (min-max) of {reps} rep(s); {conns} `ssh host true` per connection-cost rep; "
           f"{size >> 20} MiB per transfer; memory: one rep per K on freshly started servers, the "
           "users' shells not counted.", ""] + head
    for label, key, higher, digits in rows:
        vals = {n: results.get(n, {}).get(key) for n in NAMES}
        # A CPU figure of zero means the server's per-connection processes were not
        # reaped into its counters in time: say so rather than print a false zero.
        vals = {n: (None if v is not None and "cpu" in key and v[0] < 0.005 else v) for n, v in vals.items()}
        bv = before.get(key)
        bv = None if bv is not None and "cpu" in key and bv[0] < 0.005 else bv
        out.append(f"| {label} | {fmt(vals['OpenSSH'], digits)} | {fmt(vals['Dropbear'], digits)} | "
                   f"{fmt(vals['rsshd'], digits)} | {ratio(vals, higher)} |{bcell(bv, digits)}")
    out += ["", "![server memory against concurrent sessions](bench/memory.png)", "",
            "Server CPU is the cpuacct cgroup of each server (the server and every process it "
            "started, users' commands included, as the issue asks). n/a: Dropbear 2022.83 does "
            "not offer aes128-gcm.", "",
            f"## {many} idle connections from a load generator", "",
            f"`rsshd-loadgen` (bench/loadgen, russh's client, a second process) opens {many} "
            "connections, 8 handshakes at a time (4 for Dropbear, which drops a fifth unauthenticated "
            "connection from one address), each authenticated with an ed25519 key and opening no "
            "channel. First they are held with no timeout while the server's memory and CPU are read, "
            "then the load generator closes them and the resident size (VmRSS) of the server's own "
            "processes is followed for 60 s; "
            f"then, on freshly started servers, each server's own idle timer ({idle} s) ends them: "
            f"rsshd `IdleTimeout {idle}s`, OpenSSH `UnusedConnectionTimeout {idle}s` (its timer for a "
            f"connection with no channel), Dropbear `-I {idle}`. A connection's deadline is the moment "
            f"its authentication succeeded plus {idle} s, as the client saw it; its ending is when the "
            "client saw the DISCONNECT or the close. One rep: each figure is over all connections.", ""] + head
    for label, phase, key, higher, digits in scale_rows:
        vals = {n: scale_value(results, n, phase, key) for n in NAMES}
        # A peer that held fewer connections is not compared: its figures are for
        # a different load.
        mine = (results.get("rsshd", {}).get(phase) or {}).get("established")
        cmp_vals = {n: (v if n == "rsshd" or (results.get(n, {}).get(phase) or {}).get("established") == mine
                        else None) for n, v in vals.items()}
        out.append(f"| {label} | {fmt(vals['OpenSSH'], digits)} | {fmt(vals['Dropbear'], digits)} | "
                   f"{fmt(vals['rsshd'], digits)} | {ratio(cmp_vals, higher)} |"
                   f"{bcell(scale_value(results, 'rsshd_before', phase, key), digits)}")
    out += ["", "In this table a ratio compares rsshd only with a server that held as many connections."]
    if results.get("_flood"):
        import flood
        secs = meta.get("flood_seconds", 10)
        out += ["", "## An established session during a handshake flood", "",
                f"Median (min-max) of {meta.get('flood_reps', 1)} rep(s), each on freshly started servers, one "
                f"server at a time. One `ssh -T host cat` session per server echoes a byte every "
                f"{flood.INTERVAL * 1000:.0f} ms for 3 s with no load, then for "
                f"{secs:.0f} s while `rsshd-flood` (bench/loadgen) runs "
                f"{flood.CONCURRENCY} connections at a time from the same address, each sending a key exchange "
                "that costs it nothing and closing on the server's signed reply (the DHEat pattern). Each server "
                "runs with its default limits and key exchange list. Round trip = write to echo, as the client "
                "sees it; p99 and max over all echoes of the run; an echo not back within 10 s counts as 10 s. "
                "The machine is shared: its 1-minute load average was "
                f"{meta.get('flood_load', [0, 0])[0]:.1f} when the phase started and "
                f"{meta.get('flood_load', [0, 0])[1]:.1f} when it ended.", ""] + head
        for label, vals, digits in flood.rows(results["_flood"]):
            cells = []
            for n in NAMES:
                x = vals.get(n)
                cells.append(x if isinstance(x, str) else fmt(x, digits))
            nums = {n: (vals.get(n) if not isinstance(vals.get(n), str) else None) for n in NAMES}
            lower = None if "completed" in label else False
            out.append(f"| {label} | {cells[0]} | {cells[1]} | {cells[2]} | {ratio(nums, lower)} |"
                       + (" |" if bcol else ""))
    errs = {n: results.get(n, {}).get(ph, {}).get("errors") for n in NAMES for ph in ("held",)}
    errs = {n: e for n, e in errs.items() if e}
    if errs:
        out += ["", "Connections the load generator could not open: " +
                "; ".join(f"{n}: " + ", ".join(f"{k} x{v}" for k, v in e.items()) for n, e in errs.items()) + "."]
    analysis = ROOT / "bench/analysis.md"
    if analysis.exists():
        out += ["", analysis.read_text().rstrip()]
    out.append("")
    (ROOT / "BENCHMARKS.md").write_text("\n".join(out))


def fmt(t, digits=1):
    if t is None:
        return "n/a"
    m, lo, hi = t
    if lo == hi:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def plot(results):
    """Left: idle `ssh -tt` sessions; right: the load generator's idle connections."""
    venv = Path("/tmp/rsshd-bench-venv")
    py = venv / "bin/python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "matplotlib"], check=True)
    ks = results.get("_meta", {}).get("ks", [])
    sessions = {n: [(k, results[n][f"pss_total_{k}"][0] / 1024) for k in ks if results[n].get(f"pss_total_{k}")]
                for n in NAMES}
    held = {n: results[n]["held"] for n in NAMES if results[n].get("held", {}).get("pss_kb_total")}
    held = {n: [(h["held"], h["pss_kb_total"] / 1024)] for n, h in held.items()}
    script = (
        "import json,sys\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "s,h=json.loads(sys.argv[1]),json.loads(sys.argv[2])\n"
        "fig,(a,b)=plt.subplots(1,2,figsize=(11,4.5))\n"
        "for ax,d,x in ((a,s,'concurrent idle ssh -tt sessions'),(b,h,'idle authenticated connections held (load generator)')):\n"
        "    for i,(n,pts) in enumerate(d.items()):\n"
        "        ax.plot([p[0] for p in pts],[p[1] for p in pts],marker='o',markersize=8,label=n,color=f'C{i}')\n"
        "        if ax is b:\n"
        "            for p in pts: ax.annotate(f'{n}: {p[0]} held, {p[1]:.0f} MiB',p,textcoords='offset points',xytext=(-10,8),ha='right',fontsize=8)\n"
        "    ax.set_xlabel(x);ax.set_ylabel('server PSS (MiB)');ax.grid(True,alpha=.3);ax.legend()\n"
        "    ax.set_yscale('log')\n"
        "a.set_title('PTY sessions (users\\' shells excluded)');b.set_title('connections with no channel');b.set_xlim(left=0)\n"
        f"fig.tight_layout();fig.savefig('{ROOT / 'bench/memory.png'}',dpi=110)\n")
    subprocess.run([str(py), "-c", script, json.dumps(sessions), json.dumps(held)], check=True)


if __name__ == "__main__":
    main()
