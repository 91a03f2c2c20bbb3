#!/usr/bin/env python3
"""Wrong passwords from paramiko or PuTTY's plink until the server ends the
connection; prints one JSON line: how many times the client was refused or
asked, and what it reported about the end. Used by tests/workflows_vs_sshd.rs
to compare rsshd with OpenSSH's sshd.

    auth_retries_clients.py paramiko PORT USER
    auth_retries_clients.py plink PORT USER HOSTKEY_FINGERPRINT
"""
import json
import logging
import os
import pty
import select
import sys
import time


def run_paramiko(port, user):
    import paramiko

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    log = logging.getLogger("paramiko")
    log.setLevel(logging.INFO)
    log.addHandler(Keep())
    t = paramiko.Transport(("127.0.0.1", port))
    t.start_client(timeout=10)
    refused, ended = 0, None
    for n in range(10):
        try:
            t.auth_password(user, "wrong-%d" % n)
        except paramiko.BadAuthenticationType as e:
            ended = "bad type: %s" % e
            break
        except paramiko.AuthenticationException:
            refused += 1
            continue
        except Exception as e:  # the end of the connection
            ended = type(e).__name__
            break
    t.close()
    disconnects = [r for r in records if r.startswith("Disconnect (code")]
    # USERAUTH_FAILUREs received (a refusal by DISCONNECT is not one).
    failures = sum(r.startswith("Authentication (password) failed") for r in records)
    return {"refused": refused, "failures": failures, "ended": ended,
            "disconnect": disconnects}


def run_plink(port, user, fingerprint):
    argv = ["plink", "-ssh", "-P", str(port), "-hostkey", fingerprint,
            "-l", user, "127.0.0.1", "echo in"]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    text, asked, seen = b"", 0, 0
    deadline = time.time() + 60
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 1)
        if not r:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        text += chunk
        # Answer each new password prompt with a wrong password.
        while text.lower().count(b"password:", seen) > 0:
            seen = text.lower().index(b"password:", seen) + len(b"password:")
            asked += 1
            os.write(fd, b"wrong-%d\n" % asked)
    os.waitpid(pid, 0)
    # plink's last words, whatever its terminal wrapping.
    out = text.decode(errors="replace")
    fatal = " ".join(out[out.find("FATAL ERROR"):].split()) if "FATAL ERROR" in out else ""
    return {"asked": asked, "fatal": fatal}


def main():
    mode, port, user = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "paramiko":
        out = run_paramiko(port, user)
    else:
        out = run_plink(port, user, sys.argv[4])
    print(json.dumps(out))


main()
