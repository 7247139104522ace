#!/usr/bin/env bash
# sshd-gsi against OpenSSH's sshd, side by side on loopback, in one run (issues #5 and #19).
# See bench/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: sudo bench/compare-openssh.sh [--quick] [--pam [on|off|both]] [--concurrency N]
                                     [--logins N] [--seq-logins N] [--repeats R]
                                     [--install-openssh] [--sshd-gsi PATH] [--user ACCOUNT]
                                     [--out FILE] [--serve-only]

Runs OpenSSH's sshd (/usr/sbin/sshd, its own config, publickey with an ed25519 test key) and
sshd-gsi (X.509 certificate login, and token-as-password login) on 127.0.0.1, both serving
the same dedicated account, and measures with the same client (asyncssh; keys and the X.509
chain parsed once per client process):
  login rate running `true` (sequential, and N concurrent workers), login latency p50/p99,
  the client's and the server's CPU per concurrent login,
  bulk throughput up (`cat > /dev/null`, sftp put) and down (`head -c N /dev/zero`, sftp get),
  memory per idle session (`sleep 600`, no PTY): the server and every process it started.
A second OpenSSH instance runs with TCP_NODELAY set on its connections (an LD_PRELOAD shim;
stock OpenSSH sets it only for PTY sessions, and non-PTY logins stall on Nagle + delayed ACK).
Prints one table of medians and sshd-gsi/OpenSSH ratios (against both OpenSSH instances),
with the issue #19 targets and whether this run meets them, and writes
bench/results-<date>.json with every sample.

  --quick            60 concurrent and 30 sequential logins, 64 MiB transfers, 20 idle
                     sessions, 1 repeat
  --pam [on|off|both]
                     on (`--pam` alone): both servers with PAM and the same stack
                     (/etc/pam.d/sshd): OpenSSH UsePAM yes, sshd-gsi use_pam = true with
                     pam_service = "sshd". off (default): both without PAM. both: the whole
                     comparison with PAM off and with PAM on in one run (all servers restarted
                     with the other setting; each repeat runs off, then on)
  --concurrency N    workers in the concurrent login test (default 20)
  --logins N         logins in the concurrent login test (default 300; --quick 60)
  --seq-logins N     logins in the sequential login test (default 100; --quick 30; 0: skip)
  --repeats R        repeat every measurement R times, report medians (default 3)
  --install-openssh  apt-get install -y openssh-server when /usr/sbin/sshd is missing
  --sshd-gsi PATH    the binary (default: $CARGO_TARGET_DIR or /tmp/bench-target, release);
                     with PAM, sshd-gsi-pam-helper must be beside it
  --user ACCOUNT     the test account (default hpccert-e2e-alice; it needs a plain home:
                     no heavy ~/.bashrc, since both servers run `$SHELL -c COMMAND`)
  --out FILE         the JSON results (default bench/results-<UTC date and time>.json)
  --serve-only       set up and start the servers (first PAM setting), print their ports and
                     wait (debugging)

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
pam=off
concurrency=""
n_login=""
n_seq=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=1 ;;
        --repeats) repeats="$2"; shift ;;
        --install-openssh) install_openssh=1 ;;
        --sshd-gsi) gsi_bin="$2"; shift ;;
        --user) user="$2"; shift ;;
        --out) out="$2"; shift ;;
        --serve-only) serve_only=1 ;;
        --pam)
            if [[ ${2:-} == on || ${2:-} == off || ${2:-} == both ]]; then
                pam=$2
                shift
            else
                pam=on
            fi
            ;;
        --pam=*) pam=${1#--pam=} ;;
        --concurrency) concurrency="$2"; shift ;;
        --logins) n_login="$2"; shift ;;
        --seq-logins) n_seq="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [[ $quick == 1 ]]; then
    n_login=${n_login:-60}; n_seq=${n_seq:-30}; mib=64; idle_sessions=20; repeats=${repeats:-1}
else
    n_login=${n_login:-300}; n_seq=${n_seq:-100}; mib=256; idle_sessions=50; repeats=${repeats:-3}
fi
concurrency=${concurrency:-20}
case "$pam" in
    off) pam_settings=(0) ;;
    on) pam_settings=(1) ;;
    both) pam_settings=(0 1) ;;
    *) echo "--pam: on, off or both (not $pam)" >&2; exit 2 ;;
esac
for v in "$n_login" "$n_seq" "$concurrency" "$repeats"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "not a number: $v" >&2; exit 2; }
done
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

gsi_helper="$(dirname "$gsi_bin")/sshd-gsi-pam-helper"
if [[ $pam != off && ! -x $gsi_helper ]]; then
    echo "compare-openssh.sh: with PAM, sshd-gsi needs $gsi_helper (cargo build --release -p sshd-gsi builds it)" >&2
    exit 2
fi
if ! command -v cc >/dev/null; then
    echo "compare-openssh.sh: needs a C compiler (cc) for the LD_PRELOAD shims (apt-get install gcc)" >&2
    exit 2
fi

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
        echo "logs kept in $T (sshd-pam*.log, sshd-gsi-pam*.log)" >&2
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
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(loadavg)

# ---- keys, shims, sshd-gsi's dev state and the sftp file (once, for every PAM setting) ------
ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$T/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C bench-user -f "$T/user_ed25519"
cp "$T/user_ed25519.pub" "$T/authorized_keys"
chmod 644 "$T/authorized_keys"
mkdir -p /run/sshd  # Debian's privilege separation directory

# With UsePAM no, sshd refuses every login to an account whose shadow password is locked
# ("!", as useradd leaves the CI test account), publickey included. Rather than unlock a
# system account, preload a shim into this sshd only: getspnam() reports such an entry as
# "*" (no password, not locked). Nothing else changes; the shim is not in the sessions.
#
# A second OpenSSH instance, "openssh-nodelay", also preloads accept() setting TCP_NODELAY on
# each connection: OpenSSH sets it only for PTY sessions, so without it a non-PTY login
# stalls on Nagle + the client's delayed ACK (~40 ms each, twice per login on loopback with
# asyncssh). sshd-gsi (tokio/russh) sets TCP_NODELAY. Both OpenSSH columns are reported.
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

state="$T/gsi-dev"
# --dev makes the state (dev CA, trust dir, user certificate, token issuer and token) for
# the current user (root) and, with -t, exits after checking it
"$gsi_bin" --dev --state-dir "$state" --listen "127.0.0.1:$(free_port)" -t >"$T/gsi-dev.out" 2>&1
# map the dev certificate's DN and the dev token's subject to the test account instead
sed -E "s/[^ ]+\$/$user/" "$state/grid-mapfile" | grep -v '^#' >"$T/grid-mapfile"
sed -E "s/[^ ]+\$/$user/" "$state/token-mapfile" | grep -v '^#' >"$T/token-mapfile"
cp "$state/token.jwt" "$T/token.jwt"
# The dev token's scopes are a gateway's: jobs, and files below the dev user's home (root's
# here), where sshd-gsi confines its sftp sessions (Landlock). For the sftp tests only,
# re-sign it (the dev issuer's key, same header and claims) with the storage scope on the
# temp dir instead, so the token's sftp session, still confined, can read the test file
# there. The login, exec and idle tests use the dev token as it is (the re-signed one logged
# in about 10% slower in one test, 3 alternating runs of 300 logins: not investigated).
"$python" - "$state/token.jwt" "$state/issuer.key" "$T" >"$T/token-sftp.jwt" <<'EOF'
import base64, json, re, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
tok, keyfile, t = sys.argv[1:4]
h, c, _ = open(tok).read().strip().split(".")
unb64 = lambda x: json.loads(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=").decode()
claims = unb64(c)
claims["scope"] = re.sub(r"storage\.modify:\S+", f"storage.modify:{t}", claims["scope"])
signing_input = f"{b64(unb64(h))}.{b64(claims)}"
key = serialization.load_pem_private_key(open(keyfile, "rb").read(), None)
sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
print(signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode())
EOF

# the sftp file: put reads it here and writes the server's /dev/null; get reads it through
# the server (readable by the account: $T is 755) and writes the client's /dev/null
head -c "$((mib * 1048576))" /dev/urandom >"$T/sftp.bin"
chmod 644 "$T/sftp.bin"

# ---- the servers, for one PAM setting -------------------------------------------------------
ossh_pid="" ossh2_pid="" gsi_pid="" ossh_port="" ossh2_port="" gsi_port=""

write_configs() {  # PAM (0|1)
    local p=$1
    ossh_port=$(free_port)
    ossh2_port=$(free_port)
    gsi_port=$(free_port)
    cat >"$T/sshd_config" <<EOF
Port $ossh_port
ListenAddress 127.0.0.1
HostKey $T/host_ed25519
PidFile $T/sshd.pid
AuthorizedKeysFile $T/authorized_keys
# the temp dir is under /tmp (world-writable): skip the ownership walk
StrictModes no
UsePAM $([[ $p == 1 ]] && echo yes || echo no)
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
    sed -e "s/^Port .*/Port $ossh2_port/" -e "s#^PidFile .*#PidFile $T/sshd-nodelay.pid#" \
        "$T/sshd_config" >"$T/sshd-nodelay_config"
    "$python" - "$state/hpccert.toml" "$T/hpccert.toml" "$T" "$gsi_port" "$p" <<'EOF'
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
}

start_servers() {  # PAM (0|1)
    local p=$1
    write_configs "$p"
    env LD_PRELOAD="$preload" /usr/sbin/sshd -t -f "$T/sshd_config"
    "$gsi_bin" -f "$T/hpccert.toml" -t >/dev/null
    env LD_PRELOAD="$preload" /usr/sbin/sshd -f "$T/sshd_config" -E "$T/sshd-pam$p.log" -D &
    ossh_pid=$!
    pids+=("$ossh_pid")
    env LD_PRELOAD="$preload${preload:+ }$T/nodelay.so" /usr/sbin/sshd -f "$T/sshd-nodelay_config" -E "$T/sshd-nodelay-pam$p.log" -D &
    ossh2_pid=$!
    pids+=("$ossh2_pid")
    "$gsi_bin" -f "$T/hpccert.toml" >>"$T/sshd-gsi-pam$p.log" 2>&1 &
    gsi_pid=$!
    pids+=("$gsi_pid")
    wait_port "$ossh_port" "$ossh_pid" sshd
    wait_port "$ossh2_port" "$ossh2_pid" sshd-nodelay
    wait_port "$gsi_port" "$gsi_pid" sshd-gsi
    # a login each, so a broken setup fails here and not halfway through
    local s
    for s in "${servers[@]}"; do
        if ! client "$s" whoami >"$T/smoke-$s.json" 2>"$T/smoke-$s.err" \
            || ! grep -q "\"user\": \"$user\"" "$T/smoke-$s.json"; then
            echo "compare-openssh.sh: a login to $s (PAM $p) failed or did not run as $user:" >&2
            cat "$T/smoke-$s.json" "$T/smoke-$s.err" >&2
            exit 1
        fi
        echo "$s (PAM $([[ $p == 1 ]] && echo on || echo off)): $(cat "$T/smoke-$s.json")" >&2
    done
}

stop_servers() {
    local p
    for p in "$ossh_pid" "$ossh2_pid" "$gsi_pid"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "$ossh_pid" "$ossh2_pid" "$gsi_pid"; do
        wait "$p" 2>/dev/null || true
    done
    pids=()
    sleep 0.5  # let the per-connection processes and helpers of the last tests end
}

client() {  # SERVER ARGS...: run one measurement for SERVER, print its JSON
    local s=$1
    shift
    case "$s" in
        openssh) "$python" "$here/client.py" --port "$ossh_port" --user "$user" --key "$T/user_ed25519" "$@" ;;
        openssh-nodelay) "$python" "$here/client.py" --port "$ossh2_port" --user "$user" --key "$T/user_ed25519" "$@" ;;
        gsi-x509) "$python" "$here/client.py" --port "$gsi_port" --user "$user" --key "$state/user.key" --cert "$state/user.pem" "$@" ;;
        gsi-token)
            local tok=$T/token.jwt
            [[ $1 == sftp-* ]] && tok=$T/token-sftp.jwt
            "$python" "$here/client.py" --port "$gsi_port" --user "$user" --password-file "$tok" "$@"
            ;;
    esac
}
server_args() {  # SERVER: the server's processes for the memory and CPU measurements
    case "$1" in
        openssh) echo --server-pid "$ossh_pid" ;;
        openssh-nodelay) echo --server-pid "$ossh2_pid" ;;
        # the PAM helper program too, wherever it sits in the process tree (a helper that
        # forks per session, or left the server's tree, still counts)
        *) echo --server-pid "$gsi_pid" --count-exe "$gsi_helper" ;;
    esac
}

servers=(openssh openssh-nodelay gsi-x509 gsi-token)

if [[ $serve_only == 1 ]]; then
    start_servers "${pam_settings[0]}"
    echo "serving until interrupted: T=$T OSSH_PORT=$ossh_port OSSH_NODELAY_PORT=$ossh2_port GSI_PORT=$gsi_port" >&2
    wait "$ossh_pid"
    exit 0
fi

echo "OpenSSH $(/usr/sbin/sshd -V 2>&1 | head -1), and with TCP_NODELAY; sshd-gsi $gsi_bin; PAM: $pam" >&2
echo "account $user ($shell, $home); $n_seq sequential logins, $n_login logins $concurrency at a time, $mib MiB up and down (exec and sftp), $idle_sessions idle sessions, $repeats repeat(s); load average $load_start" >&2

runs="$T/runs.jsonl"
: >"$runs"
record() {  # SERVER PAM MODE REPEAT ARGS...
    local s=$1 p=$2 mode=$3 rep=$4
    shift 4
    local r la
    la=$(loadavg)
    r=$(client "$s" "$@")
    printf '{"server": "%s", "pam": %s, "mode": "%s", "repeat": %s, "loadavg": "%s", "result": %s}\n' \
        "$s" "$p" "$mode" "$rep" "$la" "$r" >>"$runs"
    # the per-login latencies stay in the JSON, not on the terminal
    printf '  pam=%s %-15s %-9s #%s %s\n' "$p" "$s" "$mode" "$rep" \
        "$(sed -E 's/"latencies_ms": \[[^]]*\]/"latencies_ms": [...]/' <<<"$r")" >&2
}

# Within each repeat: each PAM setting in turn (servers restarted), and within that the servers
# interleaved per test, so drifting machine load hits them alike.
for rep in $(seq "$repeats"); do
    for p in "${pam_settings[@]}"; do
        start_servers "$p"
        if [[ $n_seq -gt 0 ]]; then
            for s in "${servers[@]}"; do
                record "$s" "$p" login-seq "$rep" login --count "$n_seq" --concurrency 1
            done
        fi
        for s in "${servers[@]}"; do
            # shellcheck disable=SC2046 # server_args is words by design
            record "$s" "$p" login-par "$rep" login --count "$n_login" --concurrency "$concurrency" $(server_args "$s")
        done
        for s in "${servers[@]}"; do
            record "$s" "$p" upload "$rep" upload --mib "$mib"
            record "$s" "$p" download "$rep" download --mib "$mib"
            record "$s" "$p" sftp-put "$rep" sftp-put --file "$T/sftp.bin"
            record "$s" "$p" sftp-get "$rep" sftp-get --file "$T/sftp.bin"
        done
        for s in "${servers[@]}"; do
            # shellcheck disable=SC2046
            record "$s" "$p" idle "$rep" idle --sessions "$idle_sessions" $(server_args "$s")
            sleep 1
        done
        stop_servers
    done
done

date_tag=$(date -u +%Y-%m-%dT%H%M%SZ)
out=${out:-$here/results-$date_tag.json}
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$T/meta.json" <<EOF
{"date": "$date_tag", "host": "$(hostname)", "cpus": $(nproc), "loadavg": "$(loadavg)",
 "loadavg_start": "$load_start", "loadavg_end": "$(loadavg)",
 "openssh": "$(/usr/sbin/sshd -V 2>&1 | head -1)", "sshd_gsi": "$gsi_bin",
 "sshd_gsi_mtime": "$(date -u -r "$gsi_bin" +%Y-%m-%dT%H:%M:%SZ)", "script_commit": "$commit",
 "client": "asyncssh $("$python" -c 'import asyncssh; print(asyncssh.__version__)')",
 "user": "$user", "logins": $n_login, "seq_logins": $n_seq, "concurrency": $concurrency,
 "mib": $mib, "idle_sessions": $idle_sessions, "repeats": $repeats, "quick": $quick,
 "pam": "$pam", "pam_settings": [$(IFS=,; echo "${pam_settings[*]}")],
 "pam_service": "sshd",
 "auth": {"openssh": "publickey ssh-ed25519", "openssh-nodelay": "publickey ssh-ed25519, TCP_NODELAY preloaded", "gsi-x509": "x509 (RFC 6187) RSA 2048 dev certificate",
          "gsi-token": "password = dev JWT (RS256); for sftp the same re-signed with storage.modify on the temp dir"}}
EOF
echo >&2
"$python" "$here/report.py" "$runs" "$T/meta.json" "$out"
