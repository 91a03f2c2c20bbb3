#!/usr/bin/env python3
"""Side-by-side benchmark of rsshd, OpenSSH sshd and Dropbear on 127.0.0.1.

Every figure is measured in the same run against all three servers, which this
script starts itself (never as system services) and stops by PID. Results go to
BENCHMARKS.md and bench/memory.png. Run as root (it creates the user rsshd-bench):

    cargo build --release && python3 bench/bench.py            # full run
    python3 bench/bench.py --quick                              # smoke run, tiny counts
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RSSHD = ROOT / "target/release/rsshd"
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


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                out.append(int(d))
    return out


def tree(pid):
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(children(p))
    return seen


def comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


class Server:
    def __init__(self, name, cmd, port, pidfile=None, names=()):
        self.name, self.port, self.names = name, port, names
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
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


def start_servers(work):
    hk = work / "host_ed25519"
    if not hk.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hk))
    servers = {}
    p = free_port()
    (work / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {p}\nHostKey {hk}\nUsePAM no\nPidFile {work}/sshd.pid\n"
        "MaxStartups 2000\nMaxSessions 2000\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    servers["OpenSSH"] = Server("OpenSSH", ["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")], p,
                                names=("sshd",))
    p = free_port()
    dbk = work / "dropbear_ed25519"
    if not dbk.exists():
        sh("dropbearkey", "-t", "ed25519", "-f", str(dbk))
    servers["Dropbear"] = Server("Dropbear", ["/usr/sbin/dropbear", "-F", "-E", "-s", "-p", f"127.0.0.1:{p}",
                                              "-r", str(dbk), "-P", str(work / "dropbear.pid")], p,
                                 names=("dropbear",))
    p = free_port()
    (work / "rsshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {p}\nHostKey {hk}\nUsePAM no\nMaxStartups 2000\nMaxSessions 2000\n"
        f"ControlSocket {work}/rsshd.sock\nIdleTimeout none\nPrintMotd no\nPrintLastLog no\n")
    servers["rsshd"] = Server("rsshd", [str(RSSHD), "-D", "-e", "-f", str(work / "rsshd_config")], p,
                              names=("rsshd",))
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


def connection_cost(srv, key, n, parallel):
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
    settle(srv)
    dc = cpu_seconds(srv) - c0
    done = (n // parallel) * parallel - len(fails)
    return {"ms_per_conn": 1000.0 * dc / max(done, 1), "conn_per_s": done / dt, "failed": len(fails)}


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


def idle_memory(srv, key, k):
    """Server PSS per idle `ssh -tt` session, the users' programs not counted."""
    base = pss_kb(srv.server_pids())
    clients = []
    ready = 0
    # In batches of 4: Dropbear drops a fifth concurrent unauthenticated
    # connection from one address (its MAX_UNAUTH_PER_IP is 5).
    for start in range(0, k, 4):
        batch = []
        for _ in range(min(4, k - start)):
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
    return {"sessions": ready, "pss_kb_per_session": (total - base) / max(ready, 1), "pss_kb_total": total}


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return (statistics.median(values), min(values), max(values))


def fmt(t, digits=1):
    if t is None:
        return "n/a"
    m, lo, hi = t
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny counts, for a smoke run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--report-only", action="store_true", help="rewrite BENCHMARKS.md from bench/results.json")
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads((ROOT / "bench/results.json").read_text())
        ks = sorted(int(k.split("_")[1]) for k in saved["rsshd"] if k.startswith("pss_") and "total" not in k)
        write_report(saved, ks, args.reps, 1 << 30, 80, False)
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates the user rsshd-bench")
    if not RSSHD.exists():
        raise SystemExit("build first: cargo build --release")
    reps = 1 if args.quick else args.reps
    conns = 8 if args.quick else 80
    size = (16 << 20) if args.quick else (1 << 30)
    ks = [4] if args.quick else [50, 100, 200]
    work = Path(tempfile.mkdtemp(prefix="rsshd-bench-"))
    key = setup(work)
    servers = start_servers(work)
    results = {}
    try:
        for name, srv in servers.items():
            r = results.setdefault(name, {})
            for label, par in (("seq", 1), ("par8", 8)):
                runs = [connection_cost(srv, key, conns, par) for _ in range(reps)]
                r[f"cpu_{label}"] = med([x["ms_per_conn"] for x in runs])
                r[f"rate_{label}"] = med([x["conn_per_s"] for x in runs])
            for cipher in ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"):
                for d in ("up", "down"):
                    runs = [throughput(srv, key, cipher, d, size) for _ in range(reps)]
                    r[f"mbs_{cipher}_{d}"] = med([x and x["mb_s"] for x in runs])
                    r[f"cpugib_{cipher}_{d}"] = med([x and x["cpu_s_per_gib"] for x in runs])
            print(name, json.dumps({k: v for k, v in r.items()}, default=str), flush=True)
    finally:
        for s in servers.values():
            s.stop()
    # Memory on freshly started servers, so earlier transfers' heap does not hide
    # what sessions cost. One rep per size: K sessions are already K samples.
    for k in ks:
        servers = start_servers(work)
        try:
            for name, srv in servers.items():
                # One login first, so one-time start-up allocations are in the baseline.
                subprocess.run(ssh_cmd(key, srv.port) + ["true"], capture_output=True)
                settle(srv)
                x = idle_memory(srv, key, k)
                results[name][f"pss_{k}"] = med([x["pss_kb_per_session"]])
                results[name][f"pss_total_{k}"] = med([x["pss_kb_total"]])
                print(name, k, x, flush=True)
        finally:
            for s in servers.values():
                s.stop()
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=1))
    write_report(results, ks, reps, size, conns, args.quick)
    plot(results, ks)


ROWS = [
    ("server CPU per connection, sequential (ms)", "cpu_seq", False),
    ("server CPU per connection, 8 parallel (ms)", "cpu_par8", False),
    ("connections/s, sequential", "rate_seq", True),
    ("connections/s, 8 parallel", "rate_par8", True),
]


def write_report(results, ks, reps, size, conns, quick):
    rows = list(ROWS)
    for cipher in ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"):
        for d in ("up", "down"):
            rows.append((f"{cipher} {d} (MB/s)", f"mbs_{cipher}_{d}", True))
            rows.append((f"{cipher} {d}, server CPU s/GiB", f"cpugib_{cipher}_{d}", False))
    for k in ks:
        rows.append((f"server PSS per idle PTY session, {k} sessions (kB)", f"pss_{k}", False))
    out = ["# Benchmarks", "",
           f"Generated by `python3 bench/bench.py{' --quick' if quick else ''}` on "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores. "
           f"Median (min-max) of {reps} rep(s) (memory: one rep per size, each of K sessions); "
           f"{conns} connections per connection-cost rep; "
           f"{size >> 20} MiB per transfer. All three servers ran on 127.0.0.1 in the same run, "
           "started by the script with their own config and ed25519 host key, as user rsshd-bench "
           "(shell /bin/sh). Ratio = rsshd / the better of OpenSSH and Dropbear (for MB/s and "
           "connections/s, higher is better; for CPU and memory, lower is better).", "",
           "| metric | OpenSSH | Dropbear | rsshd | ratio |", "|---|---|---|---|---|"]
    for label, key, higher in rows:
        vals = {n: results.get(n, {}).get(key) for n in ("OpenSSH", "Dropbear", "rsshd")}
        # A CPU figure of zero means the server's per-connection processes were not
        # reaped into its counters in time: say so rather than print a false zero.
        vals = {n: (None if v is not None and "cpu" in key and v[0] < 0.05 else v) for n, v in vals.items()}
        peers = [v[0] for n, v in vals.items() if n != "rsshd" and v is not None]
        ratio = "n/a"
        if peers and vals["rsshd"] is not None:
            best = max(peers) if higher else min(peers)
            ratio = f"{vals['rsshd'][0] / best:.2f}" if best else "n/a"
        out.append(f"| {label} | {fmt(vals['OpenSSH'])} | {fmt(vals['Dropbear'])} | {fmt(vals['rsshd'])} | {ratio} |")
    out += ["", "![server memory against concurrent idle sessions](bench/memory.png)", "",
            "Server CPU is the cpuacct cgroup of each server (the server and every process it "
            "started, users' commands included, as the issue asks). n/a: Dropbear 2022.83 does "
            "not offer aes128-gcm.", "",
            "Not measured yet: 10,000 idle connections from a russh load generator, and "
            "idle-disconnect precision at that scale (issue 7, items 3 and 4).", ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(out))


def plot(results, ks):
    venv = Path("/tmp/rsshd-bench-venv")
    py = venv / "bin/python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "matplotlib"], check=True)
    data = {n: [(k, results[n][f"pss_total_{k}"][0] / 1024) for k in ks if results[n].get(f"pss_total_{k}")]
            for n in results}
    script = (
        "import json,sys\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "d=json.loads(sys.argv[1])\nfig,ax=plt.subplots(figsize=(7,4.5))\n"
        "for n,pts in d.items():\n    ax.plot([p[0] for p in pts],[p[1] for p in pts],marker='o',label=n)\n"
        "ax.set_xlabel('concurrent idle ssh -tt sessions');ax.set_ylabel('server PSS (MiB, shells excluded)')\n"
        "ax.set_title('Server memory against concurrent sessions');ax.grid(True,alpha=.3);ax.legend()\n"
        f"fig.tight_layout();fig.savefig('{ROOT / 'bench/memory.png'}',dpi=110)\n")
    subprocess.run([str(py), "-c", script, json.dumps(data)], check=True)


if __name__ == "__main__":
    main()
