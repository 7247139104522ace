#!/usr/bin/env bash
# sshd-gsi against OpenSSH's sshd, side by side on loopback, in one run (issue #5).
# See bench/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: sudo bench/compare-openssh.sh [--quick] [--repeats R] [--install-openssh]
                                     [--sshd-gsi PATH] [--user ACCOUNT] [--out FILE]

Runs OpenSSH's sshd (/usr/sbin/sshd, its own config, publickey with an ed25519 test key) and
sshd-gsi (X.509 certificate login, and token-as-password login) on 127.0.0.1, both serving
the same dedicated account, and measures with the same client (asyncssh):
  login rate running `true` (sequential and parallel), login latency p50/p99,
  bulk throughput up (`cat > /dev/null`) and down (`head -c N /dev/zero`),
  memory per idle session (`sleep 600`, no PTY).
A second OpenSSH instance runs with TCP_NODELAY set on its connections (an LD_PRELOAD shim;
stock OpenSSH sets it only for PTY sessions, and non-PTY logins stall on Nagle + delayed ACK).
Prints a table of medians and sshd-gsi/OpenSSH ratios (against both OpenSSH instances) and
writes bench/results-<date>.json.

  --quick            fewer logins (30), 64 MiB transfers, 20 idle sessions, 1 repeat
  --pam              both servers with PAM and the same stack (/etc/pam.d/sshd): OpenSSH
                     UsePAM yes, sshd-gsi use_pam = true with pam_service = "sshd"
                     (default: both without PAM)
  --repeats R        repeat logins and transfers R times, report medians (default 3)
  --install-openssh  apt-get install -y openssh-server when /usr/sbin/sshd is missing
  --sshd-gsi PATH    the binary (default: $CARGO_TARGET_DIR or /tmp/bench-target, release)
  --user ACCOUNT     the test account (default hpccert-e2e-alice; it needs a plain home:
                     no heavy ~/.bashrc, since both servers run `$SHELL -c COMMAND`)
  --out FILE         the JSON results (default bench/results-<UTC date and time>.json)
  --serve-only       set up and start both servers, print their ports and wait (debugging)

Needs: root (sshd-gsi switches to the account; OpenSSH's sshd must run as root),
OpenSSH's sshd (Debian: apt-get install openssh-server; or pass --install-openssh),
ssh-keygen, a C compiler (cc, for two small LD_PRELOAD shims: TCP_NODELAY, and reading a
locked test account as unlocked under UsePAM no), a release build of sshd-gsi
(scripts/setup-russh.sh && CARGO_TARGET_DIR=/tmp/bench-target cargo build --release -p sshd-gsi)
and the e2e venv with asyncssh (.venv-e2e, or HPCCERT_E2E_PYTHON=/path/to/python).
Without root it prints a message and exits 0 (skipped).
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
quick=0
repeats=""
install_openssh=0
gsi_bin="${CARGO_TARGET_DIR:-/tmp/bench-target}/release/sshd-gsi"
user=hpccert-e2e-alice
out=""
serve_only=0
pam=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=1 ;;
        --repeats) repeats="$2"; shift ;;
        --install-openssh) install_openssh=1 ;;
        --sshd-gsi) gsi_bin="$2"; shift ;;
        --user) user="$2"; shift ;;
        --out) out="$2"; shift ;;
        --serve-only) serve_only=1 ;;
        --pam) pam=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [[ $quick == 1 ]]; then
    n_login=30; concurrency=8; mib=64; idle_sessions=20; repeats=${repeats:-1}
else
    n_login=100; concurrency=8; mib=256; idle_sessions=50; repeats=${repeats:-3}
fi

if [[ $(id -u) != 0 ]]; then
    echo "compare-openssh.sh: skipped: needs root (sshd-gsi switches to $user; sshd runs as root)." >&2
    echo "run: sudo $0 ${*:-}" >&2
    exit 0
fi
if [[ ! -x /usr/sbin/sshd ]]; then
    if [[ $install_openssh == 1 ]]; then
        echo "installing openssh-server (apt-get install -y openssh-server)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y openssh-server >&2
    else
        echo "compare-openssh.sh: /usr/sbin/sshd is missing: apt-get install openssh-server, or pass --install-openssh" >&2
        exit 2
    fi
fi
if [[ ! -x $gsi_bin ]]; then
    echo "compare-openssh.sh: no sshd-gsi at $gsi_bin: build it with" >&2
    echo "  scripts/setup-russh.sh && CARGO_TARGET_DIR=/tmp/bench-target cargo build --release -p sshd-gsi" >&2
    exit 2
fi
python=${HPCCERT_E2E_PYTHON:-$repo/.venv-e2e/bin/python}
if ! "$python" -c 'import asyncssh' 2>/dev/null; then
    echo "compare-openssh.sh: $python has no asyncssh (python3 -m venv .venv-e2e && .venv-e2e/bin/pip install 'asyncssh[pyOpenSSL]' paramiko)" >&2
    exit 2
fi
if ! pw=$(getent passwd "$user"); then
    echo "compare-openssh.sh: no account $user" >&2
    exit 2
fi
home=$(cut -d: -f6 <<<"$pw")
shell=$(cut -d: -f7 <<<"$pw")
for f in .bashrc .bash_profile .profile .bash_login; do
    if [[ -f $home/$f ]] && grep -qE 'pyenv|conda|nvm|module (load|use)|source .*/etc/profile.d' "$home/$f"; then
        echo "warning: $home/$f looks heavy (pyenv/conda/nvm/modules): it runs for every command and skews logins" >&2
    fi
done

T=$(mktemp -d /tmp/hpccert-bench.XXXXXX)
chmod 755 "$T"
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ $rc != 0 && $rc != 130 && $rc != 143 ]]; then
        echo "logs kept in $T (sshd.log, sshd-gsi.log)" >&2
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

free_port() {
    "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {  # PORT PID NAME
    for _ in $(seq 100); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "$3 exited before listening (log in $T)" >&2
            return 1
        fi
        if "$python" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1)))"; then
            return 0
        fi
        sleep 0.1
    done
    echo "$3 is not listening on $1" >&2
    return 1
}

# ---- keys ---------------------------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$T/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C bench-user -f "$T/user_ed25519"
cp "$T/user_ed25519.pub" "$T/authorized_keys"
chmod 644 "$T/authorized_keys"

# ---- OpenSSH --------------------------------------------------------------------------------
ossh_port=$(free_port)
mkdir -p /run/sshd  # Debian's privilege separation directory
cat >"$T/sshd_config" <<EOF
Port $ossh_port
ListenAddress 127.0.0.1
HostKey $T/host_ed25519
PidFile $T/sshd.pid
AuthorizedKeysFile $T/authorized_keys
# the temp dir is under /tmp (world-writable): skip the ownership walk
StrictModes no
UsePAM $([[ $pam == 1 ]] && echo yes || echo no)
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowUsers $user
MaxStartups 1000
MaxSessions 10
PrintMotd no
PrintLastLog no
UseDNS no
X11Forwarding no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
# With UsePAM no, sshd refuses every login to an account whose shadow password is locked
# ("!", as useradd leaves the CI test account), publickey included. Rather than unlock a
# system account, preload a shim into this sshd only: getspnam() reports such an entry as
# "*" (no password, not locked). Nothing else changes; the shim is not in the sessions.
#
# A second OpenSSH instance, "openssh-nodelay", also preloads accept() setting TCP_NODELAY on
# each connection: OpenSSH sets it only for PTY sessions, so without it a non-PTY login
# stalls on Nagle + the client's delayed ACK (~40 ms each, twice per login on loopback with
# asyncssh). sshd-gsi (tokio/russh) sets TCP_NODELAY. Both OpenSSH columns are reported.
if ! command -v cc >/dev/null; then
    echo "compare-openssh.sh: needs a C compiler (cc) for the LD_PRELOAD shims (apt-get install gcc)" >&2
    exit 2
fi
cat >"$T/unlock.c" <<'EOC'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <shadow.h>
#include <stddef.h>
static char star[] = "*";
struct spwd *getspnam(const char *name) {
    static struct spwd *(*real)(const char *);
    if (!real) real = (struct spwd *(*)(const char *))dlsym(RTLD_NEXT, "getspnam");
    struct spwd *s = real ? real(name) : NULL;
    if (s && s->sp_pwdp && s->sp_pwdp[0] == '!') s->sp_pwdp = star;
    return s;
}
EOC
cat >"$T/nodelay.c" <<'EOC'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static void nd(int fd) {
    int one = 1;
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}
int accept(int s, struct sockaddr *a, socklen_t *l) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    int fd = real(s, a, l);
    nd(fd);
    return fd;
}
int accept4(int s, struct sockaddr *a, socklen_t *l, int f) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    int fd = real(s, a, l, f);
    nd(fd);
    return fd;
}
EOC
cc -shared -fPIC -O2 -o "$T/unlock.so" "$T/unlock.c" -ldl
cc -shared -fPIC -O2 -o "$T/nodelay.so" "$T/nodelay.c" -ldl
preload=""
if [[ $(getent shadow "$user" | cut -d: -f2) == '!'* ]]; then
    preload="$T/unlock.so"
    echo "note: $user is locked in /etc/shadow; OpenSSH's sshd runs with a getspnam shim (LD_PRELOAD) that reports it unlocked" >&2
fi
ossh2_port=$(free_port)
sed -e "s/^Port .*/Port $ossh2_port/" -e "s#^PidFile .*#PidFile $T/sshd-nodelay.pid#" \
    "$T/sshd_config" >"$T/sshd-nodelay_config"
env LD_PRELOAD="$preload" /usr/sbin/sshd -t -f "$T/sshd_config"
env LD_PRELOAD="$preload" /usr/sbin/sshd -f "$T/sshd_config" -E "$T/sshd.log" -D &
ossh_pid=$!
pids+=("$ossh_pid")
env LD_PRELOAD="$preload${preload:+ }$T/nodelay.so" /usr/sbin/sshd -f "$T/sshd-nodelay_config" -E "$T/sshd-nodelay.log" -D &
ossh2_pid=$!
pids+=("$ossh2_pid")

# ---- sshd-gsi -----------------------------------------------------------------------------
gsi_port=$(free_port)
state="$T/gsi-dev"
# --dev makes the state (dev CA, trust dir, user certificate, token issuer and token) for
# the current user (root) and, with -t, exits after checking it
"$gsi_bin" --dev --state-dir "$state" --listen "127.0.0.1:$gsi_port" -t >"$T/gsi-dev.out" 2>&1
# map the dev certificate's DN and the dev token's subject to the test account instead
sed -E "s/[^ ]+\$/$user/" "$state/grid-mapfile" | grep -v '^#' >"$T/grid-mapfile"
sed -E "s/[^ ]+\$/$user/" "$state/token-mapfile" | grep -v '^#' >"$T/token-mapfile"
cp "$state/token.jwt" "$T/token.jwt"
"$python" - "$state/hpccert.toml" "$T/hpccert.toml" "$T" "$gsi_port" "$pam" <<'EOF'
import sys, tomllib, json
src, dst, t, port, pam = sys.argv[1:6]
c = tomllib.load(open(src, "rb"))
c["mapping"]["grid_mapfile"] = f"{t}/grid-mapfile"
c["mapping"]["token_mapfile"] = f"{t}/token-mapfile"
s = c["sshd"]
s["listen"] = [f"127.0.0.1:{port}"]
s["host_keys"] = [f"{t}/host_ed25519"]  # the same host key as OpenSSH
s["methods"] = ["x509", "password"]
s["max_startups"] = "1000"              # as OpenSSH's MaxStartups 1000
s["per_source_max_startups"] = 0
s["use_pam"] = pam == "1"               # as OpenSSH's UsePAM, with the same stack
s["pam_service"] = "sshd"

def val(v):
    return json.dumps(v)  # strings, numbers, booleans and lists of them are JSON-shaped TOML

out = ["# bench/compare-openssh.sh (from sshd-gsi --dev)"]
tables = []
for k, v in c.items():
    if isinstance(v, dict):
        tables.append((f"[{k}]", v))
    elif isinstance(v, list) and v and isinstance(v[0], dict):
        tables.extend((f"[[{k}]]", x) for x in v)
    else:
        out.append(f"{k} = {val(v)}")
for name, tbl in tables:
    out.append(name)
    out.extend(f"{k} = {val(v)}" for k, v in tbl.items())
open(dst, "w").write("\n".join(out) + "\n")
EOF
"$gsi_bin" -f "$T/hpccert.toml" -t >/dev/null
"$gsi_bin" -f "$T/hpccert.toml" >"$T/sshd-gsi.log" 2>&1 &
gsi_pid=$!
pids+=("$gsi_pid")

wait_port "$ossh_port" "$ossh_pid" sshd
wait_port "$ossh2_port" "$ossh2_pid" sshd-nodelay
wait_port "$gsi_port" "$gsi_pid" sshd-gsi

client() {  # SERVER ARGS...: run one measurement for SERVER, print its JSON
    local s=$1
    shift
    case "$s" in
        openssh) "$python" "$here/client.py" --port "$ossh_port" --user "$user" --key "$T/user_ed25519" "$@" ;;
        openssh-nodelay) "$python" "$here/client.py" --port "$ossh2_port" --user "$user" --key "$T/user_ed25519" "$@" ;;
        gsi-x509) "$python" "$here/client.py" --port "$gsi_port" --user "$user" --key "$state/user.key" --cert "$state/user.pem" "$@" ;;
        gsi-token) "$python" "$here/client.py" --port "$gsi_port" --user "$user" --password-file "$T/token.jwt" "$@" ;;
    esac
}
server_pid() {
    case "$1" in openssh) echo "$ossh_pid" ;; openssh-nodelay) echo "$ossh2_pid" ;; *) echo "$gsi_pid" ;; esac
}

servers=(openssh openssh-nodelay gsi-x509 gsi-token)
# a login each, so a broken setup fails here and not halfway through
for s in "${servers[@]}"; do
    if ! client "$s" whoami >"$T/smoke-$s.json" 2>"$T/smoke-$s.err" \
        || ! grep -q "\"user\": \"$user\"" "$T/smoke-$s.json"; then
        echo "compare-openssh.sh: a login to $s failed or did not run as $user:" >&2
        cat "$T/smoke-$s.json" "$T/smoke-$s.err" >&2
        exit 1
    fi
    echo "$s: $(cat "$T/smoke-$s.json")" >&2
done

echo "OpenSSH $(/usr/sbin/sshd -V 2>&1 | head -1) on :$ossh_port (pid $ossh_pid) and with TCP_NODELAY on :$ossh2_port (pid $ossh2_pid); sshd-gsi $gsi_bin on :$gsi_port (pid $gsi_pid)" >&2
echo "account $user ($shell, $home); $n_login logins (sequential, and $concurrency in parallel), $mib MiB up and down, $repeats repeat(s), $idle_sessions idle sessions" >&2

if [[ $serve_only == 1 ]]; then
    echo "serving until interrupted: T=$T OSSH_PORT=$ossh_port OSSH_NODELAY_PORT=$ossh2_port GSI_PORT=$gsi_port" >&2
    wait "$ossh_pid"
fi

runs="$T/runs.jsonl"
: >"$runs"
record() {  # SERVER MODE REPEAT ARGS...
    local s=$1 mode=$2 rep=$3
    shift 3
    local r
    r=$(client "$s" "$@")
    printf '{"server": "%s", "mode": "%s", "repeat": %s, "result": %s}\n' "$s" "$mode" "$rep" "$r" >>"$runs"
    printf '  %-9s %-9s #%s %s\n' "$s" "$mode" "$rep" "$r" >&2
}

# servers interleaved within each repeat, so drifting machine load hits all of them alike
for rep in $(seq "$repeats"); do
    for s in "${servers[@]}"; do
        record "$s" login-seq "$rep" login --count "$n_login" --concurrency 1
    done
    for s in "${servers[@]}"; do
        record "$s" login-par "$rep" login --count "$n_login" --concurrency "$concurrency"
    done
    for s in "${servers[@]}"; do
        record "$s" upload "$rep" upload --mib "$mib"
        record "$s" download "$rep" download --mib "$mib"
    done
done
for s in "${servers[@]}"; do
    record "$s" idle 1 idle --sessions "$idle_sessions" --server-pid "$(server_pid "$s")"
    sleep 1
done

date_tag=$(date -u +%Y-%m-%dT%H%M%SZ)
out=${out:-$here/results-$date_tag.json}
cat >"$T/meta.json" <<EOF
{"date": "$date_tag", "host": "$(hostname)", "cpus": $(nproc), "loadavg": "$(cut -d' ' -f1-3 /proc/loadavg)",
 "openssh": "$(/usr/sbin/sshd -V 2>&1 | head -1)", "sshd_gsi": "$gsi_bin",
 "client": "asyncssh $("$python" -c 'import asyncssh; print(asyncssh.__version__)')",
 "user": "$user", "logins": $n_login, "concurrency": $concurrency, "mib": $mib,
 "idle_sessions": $idle_sessions, "repeats": $repeats, "quick": $quick, "pam": $pam,
 "auth": {"openssh": "publickey ssh-ed25519", "openssh-nodelay": "publickey ssh-ed25519, TCP_NODELAY preloaded", "gsi-x509": "x509 (RFC 6187) RSA 2048 dev certificate",
          "gsi-token": "password = dev JWT (RS256)"}}
EOF
echo >&2
"$python" "$here/report.py" "$runs" "$T/meta.json" "$out"
