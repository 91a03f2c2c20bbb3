"""Hostile clients for tests/hostile_limits.rs, driven through paramiko because it
lets a test send SSH requests one by one, far past anything OpenSSH's client would
send, and even ignore the channel window.

Usage: python3 limits_flood.py MODE PORT USER KEY [ARGS...]

Every mode prints JSON lines on stdout. Where the test measures the daemon in the
middle of an attack, the script prints a line and waits for any line on stdin
before it goes on (or, at the end, before it lets go of its connections).
"""

import json
import logging
import socket
import sys
import threading
import time

import paramiko
from paramiko.common import MSG_CHANNEL_FAILURE, cMSG_CHANNEL_DATA, cMSG_CHANNEL_REQUEST
from paramiko.message import Message


# paramiko logs every refused channel open at WARNING; the test counts them.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def say(**fields):
    print(json.dumps(fields), flush=True)


def wait_for_test():
    sys.stdin.readline()


def _request_failed(chan, m):
    """A refused channel request: paramiko closes the channel; a server that
    refuses one env request must leave the session usable, so only report it."""
    chan.event_ready = False
    chan.event.set()


def connect(port, user, key):
    t = paramiko.Transport(("127.0.0.1", port))
    t._channel_handler_table = dict(t._channel_handler_table)
    t._channel_handler_table[MSG_CHANNEL_FAILURE] = _request_failed
    t.start_client(timeout=30)
    t.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(key))
    if not t.is_authenticated():
        raise SystemExit("not authenticated")
    return t


def env_request(chan, name, value, want_reply):
    """An `env` channel request; with want_reply, True if the server accepted it."""
    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("env")
    m.add_boolean(want_reply)
    m.add_string(name)
    m.add_string(value)
    if not want_reply:
        chan.transport._send_user_message(m)
        return None
    chan._event_pending()
    chan.transport._send_user_message(m)
    try:
        chan._wait_for_event()
        return True
    except paramiko.SSHException:
        return False


def mode_env(port, user, key, flood, size):
    t = connect(port, user, key)
    # 1. A flood of big variables without replies, then one with a reply: when
    #    that reply arrives the server has handled all of them.
    c1 = t.open_session()
    value = "x" * size
    for i in range(flood):
        env_request(c1, "LC_FLOOD%d" % i, value, False)
    last = env_request(c1, "LC_FLOOD_LAST", value, True)
    say(phase="flooded", last_accepted=last)
    wait_for_test()
    # 2. Small variables one by one with replies: which are refused, and what the
    #    session then gets.
    c2 = t.open_session()
    results = [env_request(c2, "LC_V%d" % i, "v%d" % i, True) for i in range(200)]
    c2.exec_command("env")
    out = b""
    while True:
        chunk = c2.recv(65536)
        if not chunk:
            break
        out += chunk
    names = sorted(
        line.split("=", 1)[0]
        for line in out.decode(errors="replace").splitlines()
        if line.startswith("LC_V")
    )
    accepted = [i for i, ok in enumerate(results) if ok]
    say(
        phase="counted",
        accepted=len(accepted),
        first_refused=next((i for i, ok in enumerate(results) if not ok), None),
        refused_after_first=all(not ok for ok in results[len(accepted):]),
        in_session=len(names),
        exit=c2.recv_exit_status(),
    )
    t.close()


def mode_forward(port, user, key, conns, per_conn):
    """Many tcpip-forward requests (port 0: the server picks) on many connections
    of one user; the connections are held until the test says so."""
    held = []
    ok = refused = 0
    first_refused_at = None
    for _ in range(conns):
        try:
            t = connect(port, user, key)
        except Exception as e:  # the daemon may be out of descriptors (today's main)
            say(phase="connect_failed", error=str(e), ok=ok, refused=refused)
            break
        held.append(t)
        for _ in range(per_conn):
            try:
                t.request_port_forward("127.0.0.1", 0)
                ok += 1
            except Exception:
                refused += 1
                if first_refused_at is None:
                    first_refused_at = ok + refused
    say(phase="forwarded", ok=ok, refused=refused, first_refused_at=first_refused_at,
        conns=len(held))
    wait_for_test()
    for t in held:
        t.close()


def silent_listener():
    """A TCP listener that accepts and never reads, in this process."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    accepted = []

    def run():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            accepted.append(c)

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1], accepted


def mode_channels(port, user, key, count):
    """As many direct-tcpip channels on one connection as the server grants."""
    target, _accepted = silent_listener()
    t = connect(port, user, key)
    opened = []
    refused = 0
    first_refused_at = None
    for i in range(count):
        try:
            opened.append(t.open_channel("direct-tcpip", ("127.0.0.1", target),
                                         ("127.0.0.1", 40000 + i % 20000), timeout=30))
        except Exception:
            refused += 1
            if first_refused_at is None:
                first_refused_at = i
    say(phase="opened", opened=len(opened), refused=refused,
        first_refused_at=first_refused_at)
    wait_for_test()
    # Channels closed, new ones open again: the cap counts open channels only.
    for c in opened[:10]:
        c.close()
    time.sleep(1)
    again = 0
    for i in range(10):
        try:
            t.open_channel("direct-tcpip", ("127.0.0.1", target), ("127.0.0.1", 1), timeout=30)
            again += 1
        except Exception:
            pass
    say(phase="reopened", opened=again)
    t.close()


def mode_window(port, user, key, total_mib):
    """Ignore the window: push data into a session channel that never starts a
    program (so nothing ever reads it), in packets far above the window."""
    t = connect(port, user, key)
    chan = t.open_session()
    chunk = b"z" * (192 * 1024)
    sent = 0
    started = time.time()
    error = None
    try:
        while sent < total_mib * 1024 * 1024 and time.time() - started < 60:
            m = Message()
            m.add_byte(cMSG_CHANNEL_DATA)
            m.add_int(chan.remote_chanid)
            m.add_string(chunk)
            t._send_user_message(m)
            sent += len(chunk)
            if not t.is_active():
                break
    except Exception as e:
        error = str(e)
    time.sleep(0.5)
    say(phase="pushed", sent=sent, active=t.is_active(), error=error)
    wait_for_test()
    t.close()


def mode_queue(port, user, key, conns, sessions):
    """Many connections of one user, each with sessions that never start a
    program, filling every window the server grants (and no more). The server
    paces a throttled connection, so each connection has a thread of its own."""
    held = []
    sent = [0]
    lock = threading.Lock()
    chunk = b"q" * (32768 - 64)  # the most paramiko puts in one packet here

    channels = []  # paramiko closes a channel nobody refers to

    def fill(t):
        for _ in range(sessions):
            try:
                chan = t.open_session()
            except Exception:
                return
            with lock:
                channels.append(chan)
            chan.settimeout(1)
            while True:
                try:
                    n = chan.send(chunk)
                except Exception:  # window spent (timeout) or connection ended
                    break
                with lock:
                    sent[0] += n
                if n < len(chunk):  # the window is spent; a throttled one trickles
                    break

    # One login at a time: MaxStartups drops a crowd of unauthenticated ones.
    for _ in range(conns):
        held.append(connect(port, user, key))
    threads = [threading.Thread(target=fill, args=(t,), daemon=True) for t in held]
    for th in threads:
        th.start()
    end = time.time() + 150
    for th in threads:
        th.join(max(0.0, end - time.time()))
    time.sleep(1)
    say(phase="queued", sent=sent[0], conns=len(held),
        ended=sum(1 for t in held if not t.is_active()),
        unfinished=sum(1 for th in threads if th.is_alive()))
    wait_for_test()
    for t in held:
        t.close()


def main():
    mode, port, user, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    args = [int(a) for a in sys.argv[5:]]
    {"env": mode_env, "forward": mode_forward, "channels": mode_channels,
     "window": mode_window, "queue": mode_queue}[mode](port, user, key, *args)


if __name__ == "__main__":
    main()
