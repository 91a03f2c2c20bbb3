#!/bin/sh
# Install a built rsshd as a systemd service. Builds nothing: run
# `cargo build --release` first. Safe to run again: it replaces the binary and the
# units, and never overwrites an existing /etc/rsshd/sshd_config.
#
# Units: rsshd.service (the daemon; the usual choice), and rsshd.socket with
# rsshd@.service (one `rsshd -i` per connection, like Debian's ssh.socket). Use one
# or the other: both want port 22.
#
# DESTDIR=/some/dir installs under that root instead (for packaging or a dry run);
# systemctl is not touched then.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
bin="$top/target/release/rsshd"
root=${DESTDIR:-}
config="$root/etc/rsshd/sshd_config"

if [ ! -x "$bin" ]; then
    echo "install.sh: $bin not found; build it first: cargo build --release" >&2
    exit 1
fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: must run as root (or set DESTDIR)" >&2
    exit 1
fi

# Copy to a temporary name and rename over the target, so a running rsshd's binary
# is replaced atomically instead of failing with "Text file busy".
put() { # put SOURCE DEST MODE
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.new.$$"
    chmod "$3" "$2.new.$$"
    mv -f "$2.new.$$" "$2"
    echo "installed $2"
}

put "$bin" "$root/usr/local/sbin/rsshd" 0755
for unit in rsshd.service rsshd.socket rsshd@.service; do
    put "$here/$unit" "$root/etc/systemd/system/$unit" 0644
done

# The unprivileged account of the network process (see SECURITY.md, "Network process
# confinement"), made the way Debian packages make theirs: a system user with a group
# of its own, no home (/nonexistent) and no login shell. Without it rsshd falls back
# to `nobody` with a warning. Under DESTDIR the target's user database is not ours.
if [ -z "$root" ]; then
    if id rsshd >/dev/null 2>&1; then
        echo "kept existing user rsshd"
    else
        nologin=/usr/sbin/nologin
        [ -x "$nologin" ] || nologin=/sbin/nologin
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell "$nologin" --comment "rsshd network process" rsshd
        echo "created system user rsshd"
    fi
else
    echo "DESTDIR set: create the system user rsshd on the target" \
        "(useradd --system --user-group --no-create-home --home-dir /nonexistent" \
        "--shell /usr/sbin/nologin rsshd)"
fi

if [ -e "$config" ]; then
    echo "kept existing $config"
else
    mkdir -p "$(dirname "$config")"
    (
        umask 022
        cat >"$config.new.$$" <<'CONFIG'
# rsshd configuration, in sshd_config(5) syntax.
# Check it with: rsshd -t -f /etc/rsshd/sshd_config
# Show the effective settings with: rsshd -T -f /etc/rsshd/sshd_config

# Without ListenAddress and Port, rsshd listens like sshd: every address, port 22.
# If OpenSSH's sshd runs on this machine too, choose another port here.
#ListenAddress 0.0.0.0
#Port 22

# Without HostKey, rsshd uses sshd's keys, /etc/ssh/ssh_host_{rsa,ecdsa,ed25519}_key
# (those that exist), so clients see the host they already trust. On a machine
# without them, create them with `ssh-keygen -A`, or name a key of rsshd's own:
#HostKey /etc/rsshd/ssh_host_ed25519_key

# Disconnect a session after 5 minutes without input, warning one minute before.
# In rsshd, ClientAliveCountMax 0 means exactly that idle disconnect (in OpenSSH
# 8.2 and later it disables the check instead).
ClientAliveInterval 300
ClientAliveCountMax 0
IdleWarning 1m

Subsystem sftp /usr/lib/openssh/sftp-server
CONFIG
    )
    mv -f "$config.new.$$" "$config"
    echo "created $config"
fi

if [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "reloaded systemd"
    reload_note=""
else
    reload_note="  (systemd is not running here; run 'systemctl daemon-reload' on the target)
"
fi

cat <<NEXT

Next steps:
$reload_note  1. Review $config (it listens on port 22 unless you change it).
  2. Check it:           /usr/local/sbin/rsshd -t -f /etc/rsshd/sshd_config
  3. Start it at boot:   systemctl enable --now rsshd
     (or per connection: systemctl enable --now rsshd.socket, instead of rsshd)
  4. Watch it:           journalctl -u rsshd -f ; rsshd sessions
NEXT
