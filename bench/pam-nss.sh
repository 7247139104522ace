#!/usr/bin/env bash
# Whole-process costs of the PAM and NSS modules, as a login or a command pays them:
#
#   * pamtester: a full bearer-token authentication and account check through pam_hpccert.so
#     (process start, libpam, the module loading the config and issuer keys, verifying the
#     token, mapping it); next to it the same pamtester run on a stack of pam_permit.so alone,
#     the floor of process start + libpam. As root, the services are two files of their own in
#     /etc/pam.d (named hpccert-bench-PID-*, removed on exit; nothing else there changes), as a
#     real login uses them; without root, under pam_wrapper (which copies its service directory
#     at every process start, a cost of its own).
#   * getent: `getent passwd NAME` answered by libnss_hpccert.so.2 from a 100,000-entry cache
#     (under nss_wrapper), next to `getent passwd root` from /etc/passwd alone.
#
# Each command runs N times (default 200) in sequence; the medians and 90th percentiles are
# printed. The per-lookup cost inside a process is measured by the criterion bench
# (`cargo bench -p hpccert-core --bench nss`), the per-token cost by `--bench token`.
#
# usage: bench/pam-nss.sh [N]
# needs: pamtester, libpam-wrapper, libnss-wrapper (Debian packages), and release builds:
#   scripts/setup-russh.sh && export CARGO_TARGET_DIR=/tmp/bench-target &&
#   cargo build --release -p pam_hpccert -p nss_hpccert -p gridmap-tool && \
#   cargo build --release -p hpccert-core --example nss_pool
set -euo pipefail
n=${1:-200}
target=${CARGO_TARGET_DIR:-/tmp/bench-target}/release
libdir=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
for f in "$target/libpam_hpccert.so" "$target/libnss_hpccert.so" "$target/gridmap-tool" \
    "$target/examples/nss_pool" \
    "$libdir/libpam_wrapper.so" "$libdir/libnss_wrapper.so"; do
    [[ -e $f ]] || { echo "pam-nss.sh: $f missing (see the usage at the top)" >&2; exit 2; }
done
command -v pamtester >/dev/null || { echo "pam-nss.sh: pamtester missing" >&2; exit 2; }

T=$(mktemp -d)
svc=hpccert-bench-$$
trap 'rm -rf "$T"; rm -f "/etc/pam.d/$svc-module" "/etc/pam.d/$svc-permit"' EXIT
# a dev issuer, its JWKS, a token map and tokens (the first maps to the current user)
"$target/gridmap-tool" demo --dir "$T/demo" >/dev/null
printf '[tokens]\nkey_cache_dir = "%s/keys"\n' "$T" >>"$T/demo/hpccert.toml"
mkdir -p "$T/keys" "$T/pam.d" "$T/nss"
cp "$target/libpam_hpccert.so" "$T/pam_hpccert.so"
cp "$target/libnss_hpccert.so" "$T/libnss_hpccert.so.2"
m="$T/pam_hpccert.so config=$T/demo/hpccert.toml"
printf 'auth required %s\naccount required %s\n' "$m" "$m" >"$T/pam.d/hpccert-bench"
printf 'auth required pam_permit.so\naccount required pam_permit.so\n' >"$T/pam.d/permit-bench"
printf 'auth required pam_deny.so\naccount required pam_deny.so\n' >"$T/pam.d/other"
user=$(id -un)
if [[ $(id -u) == 0 && -d /etc/pam.d ]]; then
    cp "$T/pam.d/hpccert-bench" "/etc/pam.d/$svc-module"
    cp "$T/pam.d/permit-bench" "/etc/pam.d/$svc-permit"
    mode=system
else
    mode=wrapper
fi
"$target/examples/nss_pool" "$T/nss" 100000

python3 - "$n" "$T" "$user" "$libdir" "$mode" "$svc" <<'EOF'
import os, statistics, subprocess, sys, time
n, t, user, libdir, mode, svc = int(sys.argv[1]), *sys.argv[2:7]
token = open(f"{t}/demo/token1.jwt").read().strip()

if mode == "system":
    pam_env, module_svc, permit_svc = dict(os.environ), f"{svc}-module", f"{svc}-permit"
else:
    pam_env = dict(os.environ, LD_PRELOAD=f"{libdir}/libpam_wrapper.so", PAM_WRAPPER="1",
                   PAM_WRAPPER_SERVICE_DIR=f"{t}/pam.d")
    module_svc, permit_svc = "hpccert-bench", "permit-bench"
def timed(cmd, env, stdin=None, expect=0):
    d = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True)
        d.append(time.perf_counter() - t0)
        if r.returncode != expect:
            sys.exit(f"{cmd}: exit {r.returncode}: {r.stdout}{r.stderr}")
    d.sort()
    return statistics.median(d) * 1000, d[int(len(d) * 0.9)] * 1000

rows = []
rows.append((f"pamtester, pam_hpccert token auth + account ({mode})", *timed(
    ["pamtester", module_svc, user, "authenticate", "acct_mgmt"], pam_env, token + "\n")))
rows.append((f"pamtester, pam_permit only ({mode}, floor)", *timed(
    ["pamtester", permit_svc, user, "authenticate", "acct_mgmt"], pam_env, "\n")))
nss_env = dict(os.environ, LD_PRELOAD=f"{libdir}/libnss_wrapper.so",
               NSS_WRAPPER_PASSWD="/etc/passwd", NSS_WRAPPER_GROUP="/etc/group",
               NSS_WRAPPER_MODULE_SO_PATH=f"{t}/libnss_hpccert.so.2",
               NSS_WRAPPER_MODULE_FN_PREFIX="hpccert", HPCCERT_NSS_DIR=f"{t}/nss")
rows.append(("getent passwd pool054321 (100k cache)", *timed(
    ["getent", "passwd", "pool054321"], nss_env)))
rows.append(("getent passwd 254321 (100k cache, by uid)", *timed(
    ["getent", "passwd", "254321"], nss_env)))
rows.append(("getent passwd root (files, floor)", *timed(
    ["getent", "passwd", "root"], nss_env)))
print(f"{'command (' + str(n) + ' runs)':56} {'median ms':>10} {'p90 ms':>8}")
for name, med, p90 in rows:
    print(f"{name:56} {med:10.2f} {p90:8.2f}")
EOF
