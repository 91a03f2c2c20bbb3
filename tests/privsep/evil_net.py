#!/usr/bin/python3
# A compromised network process, for tests/privsep_compromised.rs: started by
# the monitor in place of `rsshd __net` (RSSHD_TEST_NET_PROGRAM), it speaks the
# monitor protocol (src/host/wire: one JSON frame per SOCK_SEQPACKET datagram,
# descriptors as SCM_RIGHTS) on the link at descriptor 3 and asks for what a
# network process taken over by an attacker would want. Each answer is printed
# on stderr (the monitor's log) as "evil: CASE: granted" or "evil: CASE:
# refused KIND"; tokens and passwords are never printed.
import array
import base64
import json
import os
import socket
import struct
import sys

from cryptography.hazmat.primitives import serialization

USER = os.environ["EVIL_USER"]
USER_PW = os.environ["EVIL_USER_PW"]
USER2 = os.environ["EVIL_USER2"]
USER2_PW = os.environ["EVIL_USER2_PW"]
KEY = os.environ["EVIL_KEY"]
# The user's private key, standing for a signature the attacker captured: the
# network process sees every client's userauth signature go by.
KEY_FILE = os.environ["EVIL_KEY_FILE"]
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

# Signatures. The network process may get key exchange hashes signed (that is
# its job), but a login by signature needs the user's signature over a session
# identifier the monitor signed, bound to the first connection that uses it.
def sshstr(b):
    return struct.pack(">I", len(b)) + b


def userauth_data(session_id, user):
    blob = base64.b64decode(KEY.split()[1])
    return (sshstr(session_id) + bytes([50]) + sshstr(user.encode()) + sshstr(b"ssh-connection")
            + sshstr(b"publickey") + bytes([1]) + sshstr(b"ssh-ed25519") + sshstr(blob))


def user_signature(data):
    with open(KEY_FILE, "rb") as f:
        key = serialization.load_ssh_private_key(f.read(), password=None)
    return sshstr(b"ssh-ed25519") + sshstr(key.sign(data))


def key_verify(conn, data, signature):
    return call({"KeyVerify": {"conn": conn, "user": USER, "key_openssh": KEY, "cert_openssh": None,
                               "algo": "ssh-ed25519", "signed_data": list(data),
                               "signature": list(signature)}})


def key_conn():
    c = opened()
    call({"BeginUser": {"conn": c, "name": USER}})
    call({"KeyAllowed": {"conn": c, "user": USER, "key_openssh": KEY, "algo": "ssh-ed25519",
                         "cert_openssh": None}})
    return c


host_key = call("HostKeys")["Ok"]["HostKeys"]["keys"][0]
session_id = os.urandom(32)
verdict("key exchange hash signed", call({"SignKex": {
    "key_openssh": host_key, "algo": host_key.split()[0], "data": list(session_id)}}))
data = userauth_data(session_id, USER)
signature = user_signature(data)
verdict("publickey login with the user's signature", key_verify(key_conn(), data, signature))
verdict("signature replayed on another connection", key_verify(key_conn(), data, signature))
never = os.urandom(32)
verdict("signature over a session id the monitor never signed",
        key_verify(key_conn(), userauth_data(never, USER), user_signature(userauth_data(never, USER))))
other_id = os.urandom(32)
call({"SignKex": {"key_openssh": host_key, "algo": host_key.split()[0], "data": list(other_id)}})
verdict("forged signature", key_verify(key_conn(), userauth_data(other_id, USER), signature))

# Out of protocol: the monitor drops the link (and this process with it).
say("sending garbage")
link.send(b"\x00not a frame")
while link.recv(70000):
    pass
say("link closed")
sys.exit(3)
