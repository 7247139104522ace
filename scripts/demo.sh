#!/usr/bin/env bash
# The whole loop on one machine, unprivileged or as root, for development only:
#
#   the mapping portal (mapping-portal --dev, with its built-in dev identity provider)
#   -> a login node: gridmap-tool sync every few seconds into the node's files
#   -> sshd-gsi serving those files
#
# Log in to the portal as a dev researcher, link your identity to your account, watch the
# node pick it up, SSH in with the researcher's access token or certificate. Ctrl-C stops
# everything. Usage:
#
#   scripts/demo.sh [--state-dir DIR] [--portal-port N] [--ssh-port N] [--sync-interval SECS]
#
# HPCCERT_DEMO_BIN_DIR=DIR uses the binaries in DIR instead of building them.
#
# Defaults: state in $XDG_STATE_HOME/hpccert-demo (or ~/.local/state/hpccert-demo), kept
# between runs (links stay); the portal on 127.0.0.1:8080, sshd-gsi on 127.0.0.1:2222, a sync
# every 5 seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

state=${XDG_STATE_HOME:-$HOME/.local/state}/hpccert-demo
portal_port=8080
ssh_port=2222
interval=5
while [ $# -gt 0 ]; do
    case $1 in
    --state-dir) state=$2; shift 2 ;;
    --portal-port) portal_port=$2; shift 2 ;;
    --ssh-port) ssh_port=$2; shift 2 ;;
    --sync-interval) interval=$2; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -n "${HPCCERT_DEMO_BIN_DIR:-}" ]; then
    # binaries built already (the demo's end-to-end test runs those of `cargo test`)
    bin=$HPCCERT_DEMO_BIN_DIR
else
    scripts/setup.sh --demo
    echo "demo: building sshd-gsi, mapping-portal and gridmap-tool" >&2
    cargo build --quiet -p sshd-gsi -p mapping-portal -p gridmap-tool --bins
    bin=${CARGO_TARGET_DIR:-$ROOT/target}/debug
fi

mkdir -p "$state/node"
chmod 700 "$state"
state=$(cd "$state" && pwd)
portal=http://127.0.0.1:$portal_port
node=$state/node
user=$(id -un)

pids=()
stop() {
    trap - INT TERM EXIT
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo: stopped (state kept in $state)" >&2
}
trap stop INT TERM EXIT

# 1. the portal, with the dev identity provider
"$bin/mapping-portal" --dev --state-dir "$state/portal" --listen "127.0.0.1:$portal_port" \
    >"$state/portal.out" 2>"$state/portal.log" &
pids+=($!)
for _ in $(seq 100); do
    curl -fsS "$portal/healthz" >/dev/null 2>&1 && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$state/portal.log" >&2; echo "demo: the portal did not start" >&2; exit 1; }
    sleep 0.1
done
password=$(cat "$state/portal/dev-account-password")

# 2. the login node's files, from the portal's export
sync() {
    "$bin/gridmap-tool" sync --from "$portal/export/v1/bundle" \
        --token-file "$state/portal/export-token" --dir "$node" 2>&1
}
sync >"$state/sync.log" || { cat "$state/sync.log" >&2; echo "demo: the first sync failed" >&2; exit 1; }

# 3. sshd-gsi on those files, trusting the dev provider's tokens and its CA
[ -f "$node/ssh_host_ed25519_key" ] ||
    ssh-keygen -q -t ed25519 -N '' -C "hpccert demo host key" -f "$node/ssh_host_ed25519_key"
cat >"$node/hpccert.toml" <<EOF
# scripts/demo.sh (rewritten at each start)
version = 1
[trust]
ca_dir = "$state/portal/dev-idp/certificates"
[mapping]
grid_mapfile = "$node/grid-mapfile"
token_mapfile = "$node/token-mapfile"
suspended_file = "$node/suspended"
[tokens]
key_cache_dir = "$node/keys"
[sshd]
listen = ["127.0.0.1:$ssh_port"]
host_keys = ["$node/ssh_host_ed25519_key"]
methods = ["x509", "keyboard-interactive", "password", "openssh-cert"]
use_pam = false
trusted_user_ca_keys = ["$node/ssh-ca-keys.pub"]
revoked_keys = "$node/ssh-revoked.krl"
[[issuer]]
issuer = "$portal/dev-idp"
audiences = ["https://login.hpccert-dev.example"]
algorithms = ["RS256"]
profile = "wlcg"
jwks_file = "$state/portal/dev-idp/jwks.json"
EOF
"$bin/sshd-gsi" -f "$node/hpccert.toml" 2>"$state/sshd-gsi.log" &
pids+=($!)
for _ in $(seq 100); do
    grep -q "listening" "$state/sshd-gsi.log" 2>/dev/null && break
    kill -0 "${pids[1]}" 2>/dev/null || { cat "$state/sshd-gsi.log" >&2; echo "demo: sshd-gsi did not start" >&2; exit 1; }
    sleep 0.1
done

# 4. the sync loop: what changes on the node is printed
(
    while sleep "$interval"; do
        out=$(sync) || { printf 'sync: failed: %s\n' "$out"; continue; }
        grep -q '^unchanged' <<<"$out" || printf '%s\n' "$out" | sed 's/^/sync: /'
    done
) &
pids+=($!)

idp=$state/portal/dev-idp
cat <<EOF

hpccert demo (development only): the portal, a login node synced from it, sshd-gsi.
State in $state (logs: portal.log, sshd-gsi.log).

1. Open $portal/ and log in: the dev identity provider lets you pick a researcher
   (Ada Lovelace, Grace Hopper, or Dev Admin, who sees the admin page).
2. Link your identity to the account $user: its dev password is $password
   (the portal in --dev asks no PAM). This links the researcher's token identity and the
   certificate DN the provider asserts.
3. Within $interval seconds the node installs the new mapping (the "sync:" lines below).
4. Log in to sshd-gsi as $user:

   with the researcher's access token (stock OpenSSH, through the askpass helper):

     curl -s $portal/dev-idp/access-token/ada > $state/ada.jwt
     SSH_ASKPASS=$ROOT/packaging/hpccert-askpass SSH_ASKPASS_REQUIRE=force BEARER_TOKEN_FILE=$state/ada.jwt \\
       ssh -p $ssh_port -o PreferredAuthentications=keyboard-interactive -o StrictHostKeyChecking=no \\
       -o UserKnownHostsFile=/dev/null $user@127.0.0.1 'id; echo \$HPCCERT_IDENTITY'

   with the researcher's certificate (RFC 6187; needs pip install 'asyncssh[pyOpenSSL]'):

     python3 $ROOT/sshd-gsi/dev/ssh-x509.py -p $ssh_port --key $idp/researchers/ada.key \\
       --cert $idp/researchers/ada.pem $user@127.0.0.1 'id; echo \$HPCCERT_DN'

   with an OpenSSH certificate from the portal's SSH CA (any SSH client: stock ssh here):

     [ -f $state/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f $state/id_ed25519
     curl -s -H "Authorization: Bearer \$(cat $state/ada.jwt)" \\
       -d "{\\"public_key\\": \\"\$(cat $state/id_ed25519.pub)\\"}" $portal/ssh/v1/certificate \\
       | sed -n 's/.*"certificate":"\([^"]*\)".*/\1/p' > $state/id_ed25519-cert.pub
     ssh-keygen -L -f $state/id_ed25519-cert.pub
     ssh -p $ssh_port -i $state/id_ed25519 -o CertificateFile=$state/id_ed25519-cert.pub \\
       -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null $user@127.0.0.1 'id; echo \$HPCCERT_AUTH_METHOD'

5. Ask the engine why, as the node would decide:

     $bin/gridmap-tool --config $node/hpccert.toml explain --token $state/ada.jwt
     $bin/gridmap-tool --config $node/hpccert.toml explain --cert $idp/researchers/ada.pem

Before step 2 both logins are refused (nothing maps the researcher); after it, both log in.
Suspend the identity on the admin page (log in as Dev Admin) and the next sync refuses them
again. Ctrl-C stops everything.

EOF
wait -n "${pids[@]}" || true
echo "demo: a component stopped; see the logs in $state" >&2
exit 1
