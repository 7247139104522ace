#!/usr/bin/env bash
# Install test of the packages (issue #8), as root on a Debian 12 machine:
#   1. lintian on every .deb (no errors; warnings are printed), rpm -qpl / -qpR on every .rpm
#      (with the paths and names each must have);
#   2. apt install of the five .deb; the shipped config passes `sshd-gsi --check-config`;
#      the unit files pass `systemd-analyze verify`; man pages render; completions load;
#      the PAM module loads; the NSS module answers getent from a cache file; the system user and
#      group hpccert-portal exist, /etc/hpccert/portal.toml is 0640 root:hpccert-portal;
#   3. sshd-gsi started as its unit starts it (the unit's ExecStartPre and ExecStart, with a
#      test config and --listen on a free port, NOTIFY_SOCKET set): READY=1, an X.509 login
#      with asyncssh into the mapped account running a command, SIGHUP (RELOADING=1, READY=1)
#      and a second login, SIGTERM;
#   4. the PAM service mapping-portal accepts a right password and refuses a wrong one when run
#      as the unit runs the portal (user hpccert-portal, group shadow), and refuses without shadow;
#      mapping-portal started as its unit starts it (the unit's ExecStart, User, Group,
#      SupplementaryGroups and UMask, no capabilities, no_new_privs, NOTIFY_SOCKET set) with a
#      copy of the shipped /etc/hpccert/portal.toml on a free port with one export token:
#      READY=1 (GET /healthz from a binary without sd_notify), the export bundle with and
#      without the token, `gridmap-tool sync` installing it into a scratch directory, the
#      SQLite database made in /var/lib/hpccert-portal by hpccert-portal, SIGTERM;
#   5. apt purge: no package left in any dpkg state and no file left behind (the file lists of
#      the system before the install and after the purge are equal: names only, so the
#      system user hpccert-portal, which stays as Debian policy asks, does not count);
#      /var/lib/hpccert-portal (the portal's database) is gone.
#
#   packaging/test-install.sh [PACKAGE_DIR]     (default: $CARGO_TARGET_DIR/packages, or
#                                                target/packages)
#
# Idempotent: packages left installed by an earlier run are purged first, and a trap stops the
# servers, purges the packages and removes the temporary files on any exit. Needs: lintian, rpm,
# man-db, openssl, python3, systemd (for systemd-analyze), setpriv (util-linux) and asyncssh in
# .venv-e2e (or HPCCERT_E2E_PYTHON). Uses (and creates when missing) the account
# hpccert-e2e-alice; for the portal's PAM service, a password account hpccert-pkgtest-pam made
# and removed again.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PKG_DIR=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/packages}
PYTHON=${HPCCERT_E2E_PYTHON:-$ROOT/.venv-e2e/bin/python}
ACCOUNT=hpccert-e2e-alice
DEBS=(hpccert-sshd hpccert-tools libpam-hpccert libnss-hpccert hpccert-portal hpccert-client)
MULTIARCH=x86_64-linux-gnu

step() { echo "== $*"; }
fail() {
    echo "test-install: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges packages)"
[ -d "$PKG_DIR" ] || fail "no package directory $PKG_DIR (packaging/build-packages.sh makes it)"
for tool in lintian rpm rpm2archive man openssl python3 systemd-analyze apt-get setpriv; do
    command -v "$tool" >/dev/null || fail "$tool not found (apt-get install lintian rpm rpm2cpio man-db openssl python3 systemd util-linux)"
done
"$PYTHON" -c 'import asyncssh, OpenSSL' 2>/dev/null ||
    fail "$PYTHON cannot import asyncssh (python3 -m venv .venv-e2e && .venv-e2e/bin/pip install 'asyncssh[pyOpenSSL]')"

export DEBIAN_FRONTEND=noninteractive
WORK=$(mktemp -d /tmp/hpccert-test-install.XXXXXX)
chmod 755 "$WORK"
SERVER_PID=""
NOTIFY_PID=""
PORTAL_PID=""
# an account made for the PAM check of the portal's service, removed on exit
PAM_ACCOUNT=hpccert-pkgtest-pam
PAM_ACCOUNT_MADE=""
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
    if [ -n "$PORTAL_PID" ]; then kill "$PORTAL_PID" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    local i
    for ((i = ${#CREATED[@]} - 1; i >= 0; i--)); do rm -rf "${CREATED[$i]}"; done
    if [ -n "$PAM_ACCOUNT_MADE" ]; then userdel "$PAM_ACCOUNT" 2>/dev/null || true; fi
    if [ "$status" != 0 ]; then
        for f in "$WORK"/sshd.log "$WORK"/notify.log "$WORK"/portal.log; do
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
[ "${#debs[@]}" = "${#DEBS[@]}" ] || fail "expected ${#DEBS[@]} .deb files in $PKG_DIR, found ${#debs[@]}"
[ "${#rpms[@]}" = "${#DEBS[@]}" ] || fail "expected ${#DEBS[@]} .rpm files in $PKG_DIR, found ${#rpms[@]}"

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
    [hpccert-portal]=/usr/sbin/mapping-portal
    [hpccert-client]=/usr/bin/hpccert
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
portal_rpm=("$PKG_DIR"/hpccert-portal-*.rpm)
rpm -qp --configfiles "${portal_rpm[0]}" 2>/dev/null >"$WORK/rpm-conf"
for f in /etc/hpccert/portal.toml /etc/pam.d/mapping-portal; do
    grep -qx "$f" "$WORK/rpm-conf" || fail "the RPM's $f is not a config file"
done
# the portal's config holds secrets; %pre makes its user, %post its state directory
rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' "${portal_rpm[0]}" \
    2>/dev/null >"$WORK/rpm-modes"
grep -qx -e '-rw-r----- root:hpccert-portal /etc/hpccert/portal.toml' "$WORK/rpm-modes" ||
    fail "the RPM's /etc/hpccert/portal.toml is not 0640 root:hpccert-portal"
rpm -qp --scripts "${portal_rpm[0]}" 2>/dev/null >"$WORK/rpm-scripts"
grep -q 'useradd -r' "$WORK/rpm-scripts" || fail "the RPM's %pre does not create the user hpccert-portal"
grep -q 'install -d -m 0750 -o hpccert-portal -g hpccert-portal /var/lib/hpccert-portal' "$WORK/rpm-scripts" ||
    fail "the RPM's %post does not make /var/lib/hpccert-portal"
# Fedora and RHEL have no shadow group: the RPM's unit must not name it
cp "${portal_rpm[0]}" "$WORK/portal.rpm"
rpm2archive "$WORK/portal.rpm" # -> portal.rpm.tgz
tar -xzOf "$WORK/portal.rpm.tgz" ./usr/lib/systemd/system/mapping-portal.service >"$WORK/rpm-portal.service" ||
    fail "the RPM has no mapping-portal.service"
if grep -q '^SupplementaryGroups=' "$WORK/rpm-portal.service"; then
    fail "the RPM's mapping-portal.service names a supplementary group"
fi

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
# programs, caches of other programs and this test touch. Names only. The test Slurm's state
# (tests/slurm/start-slurm.sh) is left out too: slurmctld purges the files of jobs the gateway
# tests ran five minutes after they ended (MinJobAge), whenever that falls.
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
        -o -path /var/tmp -o -path /root -o -path /home -o -path /work -o -path /var/lib/dpkg \
        -o -path /var/lib/apt -o -path /var/cache/apt -o -path /var/cache/debconf \
        -o -path /var/cache/man -o -path /var/log/apt -o -path /var/cache/ldconfig \
        -o -path /var/spool/hpccert-slurm -o -path "$ROOT" \) -prune -o -print 2>/dev/null |
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
for f in /etc/hpccert/portal.toml /etc/pam.d/mapping-portal; do
    dpkg-query -W -f='${Conffiles}\n' hpccert-portal | grep -q " $f " ||
        fail "$f is not a conffile of hpccert-portal"
done

step "the portal's user, config and state directory"
# a system user without a login shell, home /var/lib/hpccert-portal (not made by adduser)
IFS=: read -r _ _ portal_uid _ _ portal_home portal_shell < <(getent passwd hpccert-portal) ||
    fail "no user hpccert-portal"
[ "$portal_uid" -lt 1000 ] || fail "hpccert-portal is not a system user (uid $portal_uid)"
[ "$portal_home" = /var/lib/hpccert-portal ] || fail "hpccert-portal's home is $portal_home"
[ "$portal_shell" = /usr/sbin/nologin ] || fail "hpccert-portal's shell is $portal_shell"
getent group hpccert-portal >/dev/null || fail "no group hpccert-portal"
[ "$(stat -c '%a %U:%G' /etc/hpccert/portal.toml)" = "640 root:hpccert-portal" ] ||
    fail "/etc/hpccert/portal.toml is $(stat -c '%a %U:%G' /etc/hpccert/portal.toml), not 640 root:hpccert-portal"
[ "$(stat -c '%a %U:%G' /var/lib/hpccert-portal)" = "750 hpccert-portal:hpccert-portal" ] ||
    fail "/var/lib/hpccert-portal is $(stat -c '%a %U:%G' /var/lib/hpccert-portal)"
[ -z "$(ls -A /var/lib/hpccert-portal)" ] || fail "/var/lib/hpccert-portal is not empty after the install"

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
    /lib/systemd/system/gridmap-tool-sync.timer /lib/systemd/system/mapping-portal.service)
for u in "${units[@]}"; do [ -f "$u" ] || fail "$u not installed"; done
systemd-analyze verify --man=no "${units[@]}" || fail "systemd-analyze verify"
[ -L /etc/systemd/system/timers.target.wants/gridmap-tool-keys-refresh.timer ] ||
    fail "the key refresh timer is not enabled"
[ ! -e /etc/systemd/system/multi-user.target.wants/sshd-gsi.service ] ||
    fail "sshd-gsi.service must not be enabled by the package"
[ ! -e /etc/systemd/system/timers.target.wants/gridmap-tool-sync.timer ] ||
    fail "the portal sync timer must not be enabled by the package"
[ ! -e /etc/systemd/system/multi-user.target.wants/mapping-portal.service ] ||
    fail "mapping-portal.service must not be enabled by the package"
for u in sshd-gsi.service gridmap-tool-keys-refresh.service gridmap-tool-sync.service mapping-portal.service; do
    systemd-analyze security --offline=true --no-pager "/lib/systemd/system/$u" 2>/dev/null |
        tail -n 1 | sed "s/^/   $u: /" || true
done

step "man pages and completions"
for page in sshd-gsi gridmap-tool gridmap-tool-explain gridmap-tool-keys-refresh pam_hpccert libnss_hpccert \
    mapping-portal hpccert hpccert-login hpccert-ssh-config; do
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
MANWIDTH=100 man -P cat mapping-portal | grep -q '/etc/hpccert/portal.toml' ||
    fail "mapping-portal(8) lacks /etc/hpccert/portal.toml"
man -P cat -l "$ROOT/packaging/man/libnss_hpccert.8" >/dev/null || fail "man -l libnss_hpccert.8"
MANWIDTH=100 man -P cat 1 hpccert | grep -q 'ssh-agent' || fail "hpccert(1) lacks the agent"
hpccert --version | grep -q '^hpccert ' || fail "hpccert --version"
for prog in gridmap-tool sshd-gsi mapping-portal hpccert; do
    bash -c "source /usr/share/bash-completion/completions/$prog && complete -p $prog" >/dev/null ||
        fail "bash completion of $prog"
done

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
notify_listen() { # sets NOTIFY_PID; the messages go to $WORK/notify.log
    rm -f "$notify" "$WORK/notify.log"
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
}
notify_listen

echo "   ExecStart:    $start --listen 127.0.0.1:$port"
NOTIFY_SOCKET=$notify HPCCERT_LOG=info,russh=warn $start --listen "127.0.0.1:$port" \
    </dev/null >/dev/null 2>"$WORK/sshd.log" &
SERVER_PID=$!

wait_for() { # FILE PATTERN SECONDS [PID, default the server's]
    local i
    for i in $(seq $(($3 * 20))); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "${4:-$SERVER_PID}" 2>/dev/null || return 1
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
step "mapping-portal as its unit starts it"
unit=/lib/systemd/system/mapping-portal.service
unit_value() { sed -n "s/^$1=//p" "$unit" | head -n 1; }
start=$(exec_line ExecStart | sed "s|/etc/hpccert/portal.toml|$WORK/portal.toml|")
portal_user=$(unit_value User)
portal_group=$(unit_value Group)
portal_groups=$(unit_value SupplementaryGroups)
portal_umask=$(unit_value UMask)
[ "$portal_user:$portal_group:$portal_groups:$portal_umask" = "hpccert-portal:hpccert-portal:shadow:0027" ] ||
    fail "$unit: User=$portal_user Group=$portal_group SupplementaryGroups=$portal_groups UMask=$portal_umask"
[ -n "$start" ] || fail "no ExecStart in $unit"
# proof = "pam": the shipped /etc/pam.d/mapping-portal checks a local account's password when
# run as the unit runs the portal (pam_unix reads /etc/shadow itself thanks to the shadow group),
# and cannot without that group (unix_chkpwd checks no other user's password for a non-root
# caller). pam_authenticate and pam_acct_mgmt through libpam, as the portal will call them.
pam_check() { # ACCOUNT PASSWORD [setpriv group options...] -> exit 0 accepted, 1 refused
    local account=$1 password=$2
    shift 2
    printf '%s' "$password" | env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        setpriv --reuid "$portal_user" --regid "$portal_group" "$@" --bounding-set -all \
        --inh-caps -all --no-new-privs -- python3 -c '
import ctypes, sys
libc, pam = ctypes.CDLL(None), ctypes.CDLL("libpam.so.0")
libc.calloc.restype = libc.strdup.restype = ctypes.c_void_p
libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
libc.strdup.argtypes = [ctypes.c_char_p]
class Message(ctypes.Structure):
    _fields_ = [("style", ctypes.c_int), ("msg", ctypes.c_char_p)]
class Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("retcode", ctypes.c_int)]
CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(Message)),
                        ctypes.POINTER(ctypes.POINTER(Response)), ctypes.c_void_p)
class Conv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata", ctypes.c_void_p)]
password = sys.stdin.buffer.read()
def answer(n, messages, responses, _):
    out = ctypes.cast(libc.calloc(n, ctypes.sizeof(Response)), ctypes.POINTER(Response))
    for i in range(n):
        if messages[i].contents.style == 1:  # PAM_PROMPT_ECHO_OFF: the password
            out[i].resp = libc.strdup(password)
    responses[0] = out
    return 0
conv = Conv(CONV(answer), None)
handle = ctypes.c_void_p()
if pam.pam_start(b"mapping-portal", sys.argv[1].encode(), ctypes.byref(conv), ctypes.byref(handle)):
    sys.exit(2)
rc = pam.pam_authenticate(handle, 0) or pam.pam_acct_mgmt(handle, 0)
pam.pam_end(handle, rc)
sys.exit(0 if rc == 0 else 1)
' "$account"
}
if ! id "$PAM_ACCOUNT" >/dev/null 2>&1; then
    useradd -M -s /usr/sbin/nologin "$PAM_ACCOUNT"
    PAM_ACCOUNT_MADE=1
fi
pam_password=$(openssl rand -hex 12)
echo "$PAM_ACCOUNT:$pam_password" | chpasswd
pam_check "$PAM_ACCOUNT" "$pam_password" --groups "$portal_groups" ||
    fail "PAM service mapping-portal, as $portal_user with the group $portal_groups: the right password is refused"
if pam_check "$PAM_ACCOUNT" "wrong-$pam_password" --groups "$portal_groups"; then
    fail "PAM service mapping-portal accepts a wrong password"
fi
if pam_check "$PAM_ACCOUNT" "$pam_password" --clear-groups; then
    fail "PAM service mapping-portal checks passwords without the group $portal_groups: is it needed?"
fi
if [ -n "$PAM_ACCOUNT_MADE" ]; then
    userdel "$PAM_ACCOUNT"
    PAM_ACCOUNT_MADE=""
fi
echo "   PAM service mapping-portal as $portal_user: right password accepted, wrong refused, without $portal_groups refused"

# the shipped config as it is, on a free port and with one export token
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export_token=$(openssl rand -hex 32)
sed -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
    -e "s|^export_tokens = \[\]$|export_tokens = [\"$export_token\"]|" \
    /etc/hpccert/portal.toml >"$WORK/portal.toml"
if ! grep -qx "listen = \"127.0.0.1:$port\"" "$WORK/portal.toml" ||
    ! grep -qx "export_tokens = \[\"$export_token\"\]" "$WORK/portal.toml"; then
    fail "the shipped portal.toml has no 'listen = ' and 'export_tokens = []' lines to adapt"
fi
grep -qx 'database = "sqlite:///var/lib/hpccert-portal/portal.db?mode=rwc"' "$WORK/portal.toml" ||
    fail "the shipped portal.toml does not name the database in /var/lib/hpccert-portal"
chown "root:$portal_group" "$WORK/portal.toml"
chmod 0640 "$WORK/portal.toml"

notify_listen
chown "$portal_user" "$notify"
echo "   ExecStart: $start (as $portal_user:$portal_group, groups $portal_groups, umask $portal_umask)"
# as systemd starts it: the unit's user and groups, no capabilities, no_new_privs, umask, /,
# a clean environment
(
    cd /
    umask "$portal_umask"
    # shellcheck disable=SC2086
    exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/var/lib/hpccert-portal USER="$portal_user" \
        LOGNAME="$portal_user" NOTIFY_SOCKET="$notify" RUST_LOG=info \
        setpriv --reuid "$portal_user" --regid "$portal_group" --groups "$portal_groups" \
        --bounding-set -all --inh-caps -all --no-new-privs -- $start
) </dev/null >"$WORK/portal.log" 2>&1 &
PORTAL_PID=$!

http_get() { # URL BODY_FILE [TOKEN] -> "STATUS ETAG CONTENT_TYPE" (000 when nothing answers)
    python3 - "$@" <<'PY'
import sys, urllib.error, urllib.request
url, body_file = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url)
if len(sys.argv) > 3:
    req.add_header("Authorization", "Bearer " + sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    r = opener.open(req, timeout=5)
    status, headers, body = r.status, r.headers, r.read()
except urllib.error.HTTPError as e:
    status, headers, body = e.code, e.headers, e.read()
except OSError:
    status, headers, body = 0, {}, b""
with open(body_file, "wb") as f:
    f.write(body)
print("%03d %s %s" % (status, headers.get("ETag", "-"), headers.get("Content-Type", "-")))
PY
}
base=http://127.0.0.1:$port
# Type=notify: systemd waits for READY=1. A binary that has no sd_notify code linked in (no
# "READY=1" string in it) is only waited for until /healthz answers, with a note.
portal_notifies=""
if grep -q 'READY=1' /usr/sbin/mapping-portal; then
    portal_notifies=1
    wait_for "$WORK/notify.log" 'READY=1' 15 "$PORTAL_PID" || fail "no READY=1 from mapping-portal"
    echo "   ready: READY=1"
else
    for _ in $(seq 300); do
        kill -0 "$PORTAL_PID" 2>/dev/null || fail "mapping-portal exited"
        [ "$(http_get "$base/healthz" "$WORK/healthz")" != "000 - -" ] && break
        sleep 0.05
    done
    echo "   ready: /healthz answers; NOTE: this mapping-portal sends no READY=1 (its Type=notify unit would time out)"
fi

read -r status _ <<<"$(http_get "$base/healthz" "$WORK/healthz")"
if [ "$status" != 200 ] || [ "$(cat "$WORK/healthz")" != ok ]; then
    fail "GET /healthz: $status $(head -c 200 "$WORK/healthz")"
fi
read -r status _ <<<"$(http_get "$base/export/v1/bundle" "$WORK/bundle-anon")"
[ "$status" = 401 ] || fail "GET /export/v1/bundle without the token: $status, expected 401"
read -r status etag ctype <<<"$(http_get "$base/export/v1/bundle" "$WORK/bundle" "$export_token")"
[ "$status" = 200 ] || fail "GET /export/v1/bundle with the token: $status $(head -c 200 "$WORK/bundle")"
[ "$ctype" = application/json ] || fail "GET /export/v1/bundle: Content-Type $ctype"
[ "$etag" = "\"$(sha256sum "$WORK/bundle" | cut -d ' ' -f 1)\"" ] ||
    fail "GET /export/v1/bundle: ETag $etag is not the SHA-256 of the body"
python3 -c 'import json, sys; b = json.load(open(sys.argv[1])); assert b["format"] == "hpccert-export" and b["version"] == 1, b' \
    "$WORK/bundle" || fail "the bundle is not an hpccert-export version 1"
echo "   healthz ok; export: 401 without the token, 200 application/json ETag $etag with it"

# the login node's side: gridmap-tool sync installs the bundle (into a scratch directory)
(umask 077 && printf '%s\n' "$export_token" >"$WORK/export.token")
mkdir "$WORK/sync"
gridmap-tool --config /etc/hpccert/hpccert.toml sync --from "$base" --token-file "$WORK/export.token" \
    --dir "$WORK/sync" >"$WORK/sync.log" 2>&1 || {
    cat "$WORK/sync.log" >&2
    fail "gridmap-tool sync from the portal"
}
[ -f "$WORK/sync/grid-mapfile" ] || fail "gridmap-tool sync installed no grid-mapfile"
echo "   gridmap-tool sync installed the export"

db=/var/lib/hpccert-portal/portal.db
[ -f "$db" ] || fail "no database $db"
[ "$(stat -c '%U:%G' "$db")" = "$portal_user:$portal_group" ] || fail "$db is owned by $(stat -c '%U:%G' "$db")"
[ "$(($(stat -c '0%a' "$db") & 07))" = 0 ] || fail "$db is world-accessible ($(stat -c '%a' "$db"); UMask=$portal_umask)"
echo "   database: $(stat -c '%n %a %U:%G' "$db")"

kill -TERM "$PORTAL_PID"
for _ in $(seq 200); do kill -0 "$PORTAL_PID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$PORTAL_PID" 2>/dev/null; then fail "mapping-portal still running 10 s after SIGTERM"; fi
portal_status=0
wait "$PORTAL_PID" || portal_status=$?
PORTAL_PID=""
[ "$portal_status" = 0 ] || fail "mapping-portal exited with $portal_status after SIGTERM"
if [ -n "$portal_notifies" ]; then
    grep -q 'STOPPING=1' "$WORK/notify.log" || fail "no STOPPING=1 from mapping-portal"
fi
kill "$NOTIFY_PID" 2>/dev/null || true
wait "$NOTIFY_PID" 2>/dev/null || true
NOTIFY_PID=""
echo "   stopped by SIGTERM (exit 0)"

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
[ ! -e /var/lib/hpccert-portal ] || fail "the purge left /var/lib/hpccert-portal"
getent passwd hpccert-portal >/dev/null || fail "the purge removed the user hpccert-portal (Debian policy: it stays)"
snapshot >"$WORK/files-after"
if ! diff -u "$WORK/files-before" "$WORK/files-after" >"$WORK/files.diff"; then
    cat "$WORK/files.diff" >&2
    fail "the purge left the file system different from before the install"
fi
echo "   nothing left behind"

step "OK"
