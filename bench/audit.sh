#!/bin/sh
# ssh-audit against rsshd, OpenSSH's sshd and Dropbear on their defaults, then rsshd
# and sshd with the same three algorithm lines (README, "Algorithms"). Needs
# `pip install ssh-audit`, openssh-server, dropbear-bin and a release build. Every
# server it starts is stopped by its PID. Usage: sh bench/audit.sh [RSSHD]
set -eu
RSSHD=${1:-target/release/rsshd}
D=$(mktemp -d)
PIDS=""
trap 'for p in $PIDS; do kill "$p" 2>/dev/null || true; done; rm -rf "$D"' EXIT
ssh-keygen -q -t ed25519 -N "" -f "$D/ed"
ssh-keygen -q -t ecdsa -N "" -f "$D/ec"
ssh-keygen -q -t rsa -b 3072 -N "" -f "$D/rsa"
keys="HostKey $D/ed
HostKey $D/ec
HostKey $D/rsa"
hard='KexAlgorithms -ecdh*,diffie-hellman*
HostKeyAlgorithms -ecdsa*
MACs -hmac-sha2-256,hmac-sha2-512,umac-64*,hmac-sha1*'
printf 'ListenAddress 127.0.0.1\nPort 42201\n%s\nPidFile none\nControlSocket %s/c1.sock\n' "$keys" "$D" >"$D/r1.conf"
printf 'ListenAddress 127.0.0.1\nPort 42211\n%s\nPidFile none\nControlSocket %s/c2.sock\n%s\n' "$keys" "$D" "$hard" >"$D/r2.conf"
printf 'ListenAddress 127.0.0.1\nPort 42202\n%s\nPidFile %s/s1.pid\n' "$keys" "$D" >"$D/s1.conf"
printf 'ListenAddress 127.0.0.1\nPort 42212\n%s\nPidFile %s/s2.pid\n%s\n' "$keys" "$D" "$hard" >"$D/s2.conf"
"$RSSHD" -D -e -f "$D/r1.conf" 2>"$D/r1.log" & PIDS="$PIDS $!"
"$RSSHD" -D -e -f "$D/r2.conf" 2>"$D/r2.log" & PIDS="$PIDS $!"
/usr/sbin/sshd -D -e -f "$D/s1.conf" 2>"$D/s1.log" & PIDS="$PIDS $!"
/usr/sbin/sshd -D -e -f "$D/s2.conf" 2>"$D/s2.log" & PIDS="$PIDS $!"
for t in ed25519 ecdsa; do dropbearkey -t $t -f "$D/db_$t" >/dev/null 2>&1; done
dropbearkey -t rsa -s 3072 -f "$D/db_rsa" >/dev/null 2>&1
dropbear -F -E -p 127.0.0.1:42203 -r "$D/db_ed25519" -r "$D/db_ecdsa" -r "$D/db_rsa" \
    -P "$D/db.pid" 2>"$D/db.log" & PIDS="$PIDS $!"
sleep 2
for p in 42201:rsshd 42202:sshd 42203:dropbear 42211:rsshd-restricted 42212:sshd-restricted; do
    port=${p%%:*}
    ssh-audit -n --skip-rate-test -p "$port" 127.0.0.1 >"$D/a.txt" 2>&1 || true
    echo "${p#*:}: fail $(grep -c '\[fail\]' "$D/a.txt") warn $(grep -c '\[warn\]' "$D/a.txt")"
    for c in kex key enc mac; do
        echo "  $c: $(grep "^($c)" "$D/a.txt" | awk '{print $2}' | tr '\n' ' ')"
    done
done
