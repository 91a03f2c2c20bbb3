#!/usr/bin/python3
# A compromised network process, for tests/privsep_compromised.rs: started by
# the monitor in place of `rsshd __net` (RSSHD_TEST_NET_PROGRAM), it speaks the
# monitor protocol (src/host/wire: one JSON frame per SOCK_SEQPACKET datagram,
# descriptors as SCM_RIGHTS) on the link at descriptor 3 and asks for what a
# network process taken over by an attacker would want. Each answer is printed
# on stderr (the monitor's log) as "evil: CASE: granted" or "evil: CASE:
# refused KIND"; tokens and passwords are never printed.
import array
import json
import os
import socket
import sys

USER = os.environ["EVIL_USER"]
USER_PW = os.environ["EVIL_USER_PW"]
USER2 = os.environ["EVIL_USER2"]
USER2_PW = os.environ["EVIL_USER2_PW"]
KEY = os.environ["EVIL_KEY"]
STATE = os.environ["EVIL_STATE"]

link = socket.socket(fileno=3)
link.setblocking(True)
# The monitor's hello (the configuration) comes first.
link.recv(1 << 20)
next_id = 0


def say(text):
    print("evil: " + text, file=sys.stderr, flush=True)


def call(request):
    global next_id
    next_id += 1
    frame = {"Call": {"id": next_id, "fds": 0, "request": request}}
    link.sendmsg([json.dumps(frame).encode()])
    while True:
        msg, anc, _, _ = link.recvmsg(70000, socket.CMSG_SPACE(64 * 4))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                for fd in fds:
                    os.close(fd)
        if not msg:
            say("link closed")
            sys.exit(3)
        got = json.loads(msg)
        if "Answer" in got and got["Answer"]["id"] == next_id:
            return got["Answer"]["answer"]


def verdict(case, answer):
    if "Err" in answer:
        say("%s: refused %s" % (case, answer["Err"]["kind"]))
    else:
        say("%s: granted" % case)
    return answer


def opened():
    a = call({"ConnOpened": {"peer": "127.0.0.1:40000", "local": "127.0.0.1:22", "rdomain": None}})
    return a["Ok"]["Opened"]


def password_login(user, pw):
    c = opened()
    call({"BeginUser": {"conn": c, "name": user}})
    a = call({"Password": {"conn": c, "user": user, "password": pw}})
    return c, a["Ok"]["Method"]["Complete"]["token"]


def ask(command):
    return {"requested": command, "is_subsystem": False, "pty": None,
            "client_env": [], "auth_sock": None}


def forged():
    return list(os.urandom(16))


if os.path.exists(STATE):
    # Started again after the monitor dropped the first one: it still serves.
    c = opened()
    say("second run: the monitor answers (connection %d)" % c)
    link.recv(1)  # until the monitor goes
    sys.exit(0)
open(STATE, "w").close()

# A root shell without any login, and with a forged token.
a = opened()
call({"BeginUser": {"conn": a, "name": "root"}})
verdict("root shell without login", call({"Spawn": {"conn": a, "token": [0] * 16, "ask": ask(None)}}))
verdict("root shell with forged token", call({"Spawn": {"conn": a, "token": forged(), "ask": ask(None)}}))
verdict("tcp socket without login", call({"TcpSocket": {"conn": a, "token": forged(), "ipv6": False}}))
verdict("agent socket without login", call({"AgentSocket": {"conn": a, "token": forged()}}))

# Real logins the compromised process saw (it sees the passwords users type).
b, token_b = password_login(USER, USER_PW)
say("login of %s on connection %d" % (USER, b))
# Another user's key asked about, then a session as them: only with their token.
c = opened()
call({"BeginUser": {"conn": c, "name": USER2}})
verdict("key query for another user", call({"KeyAllowed": {
    "conn": c, "user": USER2, "key_openssh": KEY, "algo": KEY.split()[0], "cert_openssh": None}}))
verdict("session as another user with a token of another connection",
        call({"Spawn": {"conn": c, "token": token_b, "ask": ask("id")}}))
verdict("session as another user with a forged token",
        call({"Spawn": {"conn": c, "token": forged(), "ask": ask("id")}}))
# Signals: pid 1 is not a number the host gave; another connection's program.
verdict("signal to pid 1", call({"Signal": {"conn": b, "token": token_b, "process": 1, "signal": 9}}))
spawned = verdict("session of the logged-in user",
                  call({"Spawn": {"conn": b, "token": token_b, "ask": ask("sleep 60")}}))
process = spawned["Ok"]["Spawned"]["process"]
d, token_d = password_login(USER2, USER2_PW)
verdict("signal to another connection's program",
        call({"Signal": {"conn": d, "token": token_d, "process": process, "signal": 9}}))
verdict("signal with another connection's token",
        call({"Signal": {"conn": d, "token": token_b, "process": process, "signal": 9}}))
verdict("wait for another connection's program",
        call({"Wait": {"conn": d, "token": token_d, "process": process}}))
verdict("hang up another connection's program",
        call({"HangUp": {"conn": d, "token": token_d, "process": process, "how": "Lost"}}))

# Out of protocol: the monitor drops the link (and this process with it).
say("sending garbage")
link.send(b"\x00not a frame")
while link.recv(70000):
    pass
say("link closed")
sys.exit(3)
