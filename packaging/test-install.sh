#!/usr/bin/env bash
# Install test of the packages (issue #8), as root on a Debian 12 machine:
#   1. lintian on every .deb (no errors; warnings are printed), rpm -qpl / -qpR on every .rpm
#      (with the paths and names each must have);
#   2. apt install of the four .deb; the shipped config passes `sshd-gsi --check-config`;
#      the unit files pass `systemd-analyze verify`; man pages render; completions load;
#      the PAM module loads; the NSS module answers getent from a cache file;
#   3. sshd-gsi started as its unit starts it (the unit's ExecStartPre and ExecStart, with a
#      test config and --listen on a free port, NOTIFY_SOCKET set): READY=1, an X.509 login
#      with asyncssh into the mapped account running a command, SIGHUP (RELOADING=1, READY=1)
#      and a second login, SIGTERM;
#   4. apt purge: no package left in any dpkg state and no file left behind (the file lists of
#      the system before the install and after the purge are equal).
#
#   packaging/test-install.sh [PACKAGE_DIR]     (default: $CARGO_TARGET_DIR/packages, or
#                                                target/packages)
#
# Idempotent: packages left installed by an earlier run are purged first, and a trap stops the
# server, purges the packages and removes the temporary files on any exit. Needs: lintian, rpm,
# man-db, openssl, python3, systemd (for systemd-analyze) and asyncssh in .venv-e2e (or
# HPCCERT_E2E_PYTHON). Uses (and creates when missing) the account hpccert-e2e-alice.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKG_DIR=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/packages}
PYTHON=${HPCCERT_E2E_PYTHON:-$ROOT/.venv-e2e/bin/python}
ACCOUNT=hpccert-e2e-alice
DEBS=(hpccert-sshd hpccert-tools libpam-hpccert libnss-hpccert)
MULTIARCH=x86_64-linux-gnu

step() { echo "== $*"; }
fail() {
    echo "test-install: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges packages)"
[ -d "$PKG_DIR" ] || fail "no package directory $PKG_DIR (packaging/build-packages.sh makes it)"
for tool in lintian rpm man openssl python3 systemd-analyze apt-get; do
    command -v "$tool" >/dev/null || fail "$tool not found (apt-get install lintian rpm man-db openssl python3 systemd)"
done
"$PYTHON" -c 'import asyncssh, OpenSSL' 2>/dev/null ||
    fail "$PYTHON cannot import asyncssh (python3 -m venv .venv-e2e && .venv-e2e/bin/pip install 'asyncssh[pyOpenSSL]')"

export DEBIAN_FRONTEND=noninteractive
WORK=$(mktemp -d /tmp/hpccert-test-install.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=""
NOTIFY_PID=""
# what the test put into /etc/grid-security (only where nothing was), removed on exit
CREATED=()

installed_debs() {
    local p
    for p in "${DEBS[@]}"; do
        # any state but "not installed" (config-files included)
        if dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qv '^not-installed$'; then
            echo "$p"
        fi
    done
}

purge_all() {
    local left
    left=$(installed_debs)
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086
        apt-get purge -y -qq $left >/dev/null
    fi
}

cleanup() {
    local status=$?
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "$NOTIFY_PID" ]; then kill "$NOTIFY_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    local i
    for ((i = ${#CREATED[@]} - 1; i >= 0; i--)); do rm -rf "${CREATED[$i]}"; done
    if [ "$status" != 0 ]; then
        for f in "$WORK"/sshd.log "$WORK"/notify.log; do
            if [ -s "$f" ]; then
                echo "--- $f" >&2
                tail -n 40 "$f" >&2
            fi
        done
        purge_all || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

pki=$WORK/pki
subject="/DC=org/DC=hpccert-pkgtest/CN=Package Test User"
# a test CA and a user certificate (openssl), its IGTF trust directory, a grid-mapfile
make_pki() {
    mkdir -p "$pki/certificates"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$pki/ca.key" -out "$pki/ca.pem" \
        -subj "/DC=org/DC=hpccert-pkgtest/CN=hpccert Package Test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
    openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/user.key" -out "$pki/user.csr" \
        -subj "$subject" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >"$pki/user.ext"
    openssl x509 -req -in "$pki/user.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -set_serial 2 \
        -days 1 -extfile "$pki/user.ext" -out "$pki/user.pem" 2>/dev/null
    cp "$pki/ca.pem" "$pki/certificates/$(openssl x509 -hash -noout -in "$pki/ca.pem").0"
    printf '"%s" %s\n' "$subject" "$ACCOUNT" >"$pki/grid-mapfile"
}

shopt -s nullglob
debs=("$PKG_DIR"/*.deb)
rpms=("$PKG_DIR"/*.rpm)
[ "${#debs[@]}" = 4 ] || fail "expected 4 .deb files in $PKG_DIR, found ${#debs[@]}"
[ "${#rpms[@]}" = 4 ] || fail "expected 4 .rpm files in $PKG_DIR, found ${#rpms[@]}"

# ------------------------------------------------------------------------------------------
step "lintian (--fail-on error)"
for deb in "${debs[@]}"; do
    echo "-- $(basename "$deb")"
    lintian --fail-on error --display-level '>=warning' "$deb" ||
        fail "lintian reports errors for $(basename "$deb")"
done

step "rpm -qpl / -qpR"
# package name -> a path it must contain
declare -A rpm_file=(
    [hpccert-sshd]=/usr/sbin/sshd-gsi
    [hpccert-tools]=/etc/hpccert/hpccert.toml
    [pam_hpccert]=/usr/lib64/security/pam_hpccert.so
    [nss_hpccert]=/usr/lib64/libnss_hpccert.so.2
)
for rpmfile in "${rpms[@]}"; do
    name=$(rpm -qp --qf '%{NAME}' "$rpmfile" 2>/dev/null)
    echo "-- $(basename "$rpmfile") ($name)"
    rpm -qpl "$rpmfile" 2>/dev/null | tee "$WORK/rpm-files"
    echo "   requires:"
    rpm -qpR "$rpmfile" 2>/dev/null | sed 's/^/     /'
    [ -n "${rpm_file[$name]:-}" ] || fail "unexpected RPM name $name"
    grep -qx "${rpm_file[$name]}" "$WORK/rpm-files" || fail "$name lacks ${rpm_file[$name]}"
done
rpm -qp --configfiles "$PKG_DIR"/hpccert-tools-*.rpm 2>/dev/null | grep -qx /etc/hpccert/hpccert.toml ||
    fail "the RPM's /etc/hpccert/hpccert.toml is not a config file"

# ------------------------------------------------------------------------------------------
step "test account $ACCOUNT and a clean start"
id "$ACCOUNT" >/dev/null 2>&1 || useradd -m -s /bin/bash "$ACCOUNT"
purge_all
# The packages' dependencies from the archive are installed before the first snapshot, so that
# the purge is compared with a system that already had them.
deps=$(for deb in "${debs[@]}"; do dpkg-deb -f "$deb" Depends; done | tr ',' '\n' |
    sed 's/[[:space:]]*(.*//; s/|.*//; s/^[[:space:]]*//' | grep -v -x -e '' -e hpccert-tools | sort -u)
# shellcheck disable=SC2086
apt-get install -y -qq $deps >/dev/null

# Every path on the root file system except what apt/dpkg/man-db bookkeeping, logs of other
# programs, caches of other programs and this test touch. Names only.
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
        -o -path /var/tmp -o -path /root -o -path /home -o -path /work -o -path /var/lib/dpkg \
        -o -path /var/lib/apt -o -path /var/cache/apt -o -path /var/cache/debconf \
        -o -path /var/cache/man -o -path /var/log/apt -o -path /var/cache/ldconfig \
        -o -path "$ROOT" \) -prune -o -print 2>/dev/null |
        grep -v -x -e /var/log/dpkg.log -e /var/log/alternatives.log | LC_ALL=C sort
}
snapshot >"$WORK/files-before"

# ------------------------------------------------------------------------------------------
step "apt install ${debs[*]##*/}"
apt-get install -y -qq "${debs[@]}" >"$WORK/apt-install.log" 2>&1 ||
    {
        cat "$WORK/apt-install.log" >&2
        fail "apt install"
    }
for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" | grep -qx 'install ok installed' || fail "$p is not installed"
done
[ -e /etc/hpccert/ssh_host_ed25519_key ] || fail "the postinst made no host key"
for d in /var/cache/hpccert/issuer-keys /var/lib/hpccert/nss /var/log/hpccert; do
    [ -d "$d" ] || fail "state directory $d missing"
done
dpkg-query -W -f='${Conffiles}\n' hpccert-tools | grep -q ' /etc/hpccert/hpccert.toml ' ||
    fail "/etc/hpccert/hpccert.toml is not a conffile of hpccert-tools"
dpkg-query -W -f='${Conffiles}\n' hpccert-sshd | grep -q ' /etc/pam.d/sshd-gsi ' ||
    fail "/etc/pam.d/sshd-gsi is not a conffile of hpccert-sshd"

step "the shipped config: sshd-gsi --check-config"
# The shipped config names the standard paths; an empty trust store or a missing grid-mapfile
# is refused (fail closed), which is why the unit is installed disabled. Where this machine has
# none, the test CA and an empty grid-mapfile stand in for the site's, and go away afterwards.
make_pki
if [ ! -e /etc/grid-security ]; then
    mkdir /etc/grid-security
    CREATED+=(/etc/grid-security)
fi
if [ ! -e /etc/grid-security/certificates ]; then
    cp -r "$pki/certificates" /etc/grid-security/certificates
    CREATED+=(/etc/grid-security/certificates)
fi
if [ ! -e /etc/grid-security/grid-mapfile ]; then
    : >/etc/grid-security/grid-mapfile
    CREATED+=(/etc/grid-security/grid-mapfile)
fi
/usr/sbin/sshd-gsi --check-config --config /etc/hpccert/hpccert.toml >"$WORK/check.out" ||
    fail "sshd-gsi --check-config rejects the shipped /etc/hpccert/hpccert.toml"
/usr/sbin/sshd-gsi --check-config --config "$ROOT/packaging/hpccert.toml" >/dev/null ||
    fail "sshd-gsi --check-config rejects packaging/hpccert.toml"
gridmap-tool --config /etc/hpccert/hpccert.toml keys show >/dev/null ||
    fail "gridmap-tool keys show with the shipped config"

step "systemd units"
units=(/lib/systemd/system/sshd-gsi.service /lib/systemd/system/gridmap-tool-keys-refresh.service
    /lib/systemd/system/gridmap-tool-keys-refresh.timer /lib/systemd/system/gridmap-tool-sync.service
    /lib/systemd/system/gridmap-tool-sync.timer)
for u in "${units[@]}"; do [ -f "$u" ] || fail "$u not installed"; done
systemd-analyze verify --man=no "${units[@]}" || fail "systemd-analyze verify"
[ -L /etc/systemd/system/timers.target.wants/gridmap-tool-keys-refresh.timer ] ||
    fail "the key refresh timer is not enabled"
[ ! -e /etc/systemd/system/multi-user.target.wants/sshd-gsi.service ] ||
    fail "sshd-gsi.service must not be enabled by the package"
[ ! -e /etc/systemd/system/timers.target.wants/gridmap-tool-sync.timer ] ||
    fail "the portal sync timer must not be enabled by the package"
for u in sshd-gsi.service gridmap-tool-keys-refresh.service gridmap-tool-sync.service; do
    systemd-analyze security --offline=true --no-pager "/lib/systemd/system/$u" 2>/dev/null |
        tail -n 1 | sed "s/^/   $u: /" || true
done

step "man pages and completions"
for page in sshd-gsi gridmap-tool gridmap-tool-explain gridmap-tool-keys-refresh pam_hpccert libnss_hpccert; do
    out=$(MANWIDTH=100 man -P cat "$page" 2>"$WORK/man.err") || fail "man $page"
    [ -n "$out" ] || fail "man $page renders nothing"
    if grep -qv '^$' "$WORK/man.err"; then
        cat "$WORK/man.err" >&2
        fail "man $page: warnings"
    fi
done
MANWIDTH=100 man -P cat sshd-gsi | grep -q -- '--check-config' || fail "sshd-gsi(8) lacks --check-config"
MANWIDTH=100 man -P cat pam_hpccert | grep -q 'auth       sufficient   pam_hpccert.so' ||
    fail "pam_hpccert(8) lacks the PAM line"
man -P cat -l "$ROOT/packaging/man/libnss_hpccert.8" >/dev/null || fail "man -l libnss_hpccert.8"
bash -c 'source /usr/share/bash-completion/completions/gridmap-tool && complete -p gridmap-tool' >/dev/null ||
    fail "bash completion of gridmap-tool"
bash -c 'source /usr/share/bash-completion/completions/sshd-gsi && complete -p sshd-gsi' >/dev/null ||
    fail "bash completion of sshd-gsi"

step "PAM module loads; NSS module answers"
pam=/lib/$MULTIARCH/security/pam_hpccert.so
[ -f "$pam" ] || fail "$pam missing"
python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL | 2)' "$pam" ||
    fail "$pam does not load (RTLD_NOW)"
[ -f /lib/$MULTIARCH/libnss_hpccert.so.2 ] || fail "libnss_hpccert.so.2 missing"
# a cache file as the writers make it: entries, then the trailer with count and SHA-256
python3 - /var/lib/hpccert/nss <<'PY'
import hashlib, os, sys
d = sys.argv[1]
tables = {
    "passwd": "hpcpkgtest01:x:64001:64001:hpccert package test:/nonexistent:/usr/sbin/nologin\n",
    "group": "hpcpkgtest01:x:64001:\n",
}
for name, body in tables.items():
    data = body.encode()
    trailer = "#hpccert-nss v1 entries=%d sha256=%s\n" % (body.count("\n"), hashlib.sha256(data).hexdigest())
    tmp = os.path.join(d, "." + name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data + trailer.encode())
    os.chmod(tmp, 0o644)
    os.rename(tmp, os.path.join(d, name))
PY
getent -s hpccert passwd hpcpkgtest01 | grep -qx 'hpcpkgtest01:x:64001:64001:hpccert package test:/nonexistent:/usr/sbin/nologin' ||
    fail "getent -s hpccert passwd hpcpkgtest01 (libnss_hpccert.so.2 through glibc)"
getent -s hpccert group 64001 | grep -q '^hpcpkgtest01:' || fail "getent -s hpccert group 64001"

# ------------------------------------------------------------------------------------------
step "sshd-gsi as its unit starts it, X.509 login with asyncssh as $ACCOUNT"
cat >"$WORK/hpccert.toml" <<EOF
version = 1
[trust]
ca_dir = "$pki/certificates"
[mapping]
grid_mapfile = "$pki/grid-mapfile"
[sshd]
host_keys = ["/etc/hpccert/ssh_host_ed25519_key"]
methods = ["x509"]
audit_log = "/var/log/hpccert/audit.jsonl"
EOF
gridmap-tool --config "$WORK/hpccert.toml" explain --cert "$pki/user.pem" --user "$ACCOUNT" ||
    fail "gridmap-tool explain refuses the test certificate"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
unit=/lib/systemd/system/sshd-gsi.service
exec_line() {
    # the unit's command line, with the test config instead of the shipped one
    sed -n "s/^$1=//p" "$unit" | head -n 1 | sed "s|/etc/hpccert/hpccert.toml|$WORK/hpccert.toml|"
}
start_pre=$(exec_line ExecStartPre)
start=$(exec_line ExecStart)
[ -n "$start_pre" ] && [ -n "$start" ] || fail "no ExecStartPre/ExecStart in $unit"
echo "   ExecStartPre: $start_pre"
$start_pre >/dev/null || fail "ExecStartPre"

# systemd's side of Type=notify: a datagram socket whose messages go to notify.log
notify=$WORK/notify.sock
python3 -u - "$notify" >"$WORK/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
while True:
    print(s.recv(4096).decode().replace("\n", " ").strip(), flush=True)
PY
NOTIFY_PID=$!
for _ in $(seq 100); do [ -S "$notify" ] && break; sleep 0.05; done
[ -S "$notify" ] || fail "notify socket"

echo "   ExecStart:    $start --listen 127.0.0.1:$port"
NOTIFY_SOCKET=$notify HPCCERT_LOG=info,russh=warn $start --listen "127.0.0.1:$port" \
    </dev/null >/dev/null 2>"$WORK/sshd.log" &
SERVER_PID=$!

wait_for() { # FILE PATTERN SECONDS
    local i
    for i in $(seq $(($3 * 20))); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
wait_for "$WORK/notify.log" 'READY=1' 15 || fail "no READY=1 from sshd-gsi"

x509_login() {
    timeout 60 "$PYTHON" "$ROOT/sshd-gsi/dev/ssh-x509.py" -p "$port" --key "$pki/user.key" --cert "$pki/user.pem" \
        "$ACCOUNT@127.0.0.1" 'printf "%s %s %s\n" "$(id -un)" "$HPCCERT_AUTH_METHOD" "$((6 * 7))"'
}
out=$(x509_login 2>&1) || fail "the X.509 login failed: $out"
[ "$out" = "$ACCOUNT x509 42" ] || fail "the session printed '$out', expected '$ACCOUNT x509 42'"
grep -q "Accepted x509 for $ACCOUNT from 127.0.0.1" "$WORK/sshd.log" || fail "no 'Accepted x509' log line"
grep -q "\"account\":\"$ACCOUNT\"" /var/log/hpccert/audit.jsonl || fail "no audit record"
echo "   login ok: $out"

# ExecReload: check, then SIGHUP
reload_pre=$(exec_line ExecReload)
$reload_pre >/dev/null || fail "ExecReload (check)"
kill -HUP "$SERVER_PID"
wait_for "$WORK/notify.log" 'RELOADING=1' 15 || fail "no RELOADING=1 after SIGHUP"
sleep 0.5
out=$(x509_login 2>&1) || fail "the login after SIGHUP failed: $out"
[ "$out" = "$ACCOUNT x509 42" ] || fail "after SIGHUP the session printed '$out'"
echo "   reload ok"

kill -TERM "$SERVER_PID"
for _ in $(seq 200); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$SERVER_PID" 2>/dev/null; then fail "sshd-gsi still running 10 s after SIGTERM"; fi
wait "$SERVER_PID" || true
SERVER_PID=""
grep -q 'STOPPING=1' "$WORK/notify.log" || fail "no STOPPING=1"
kill "$NOTIFY_PID" 2>/dev/null || true
wait "$NOTIFY_PID" 2>/dev/null || true
NOTIFY_PID=""

# ------------------------------------------------------------------------------------------
step "apt purge"
for ((i = ${#CREATED[@]} - 1; i >= 0; i--)); do rm -rf "${CREATED[$i]}"; done
CREATED=()
apt-get purge -y -qq "${DEBS[@]}" >"$WORK/apt-purge.log" 2>&1 ||
    {
        cat "$WORK/apt-purge.log" >&2
        fail "apt purge"
    }
left=$(installed_debs)
[ -z "$left" ] || fail "still known to dpkg after purge: $left"
snapshot >"$WORK/files-after"
if ! diff -u "$WORK/files-before" "$WORK/files-after" >"$WORK/files.diff"; then
    cat "$WORK/files.diff" >&2
    fail "the purge left the file system different from before the install"
fi
echo "   nothing left behind"

step "OK"
