#!/usr/bin/env bash
# README's "Two commands" are what a new user types first: this script keeps them true.
#
#   scripts/check-readme.sh            run README's main command verbatim in a clean copy of
#                                      this checkout (tracked and new files, no build state),
#                                      with a fresh dev state: wait for the dev server's
#                                      instructions, run the stock-ssh token login it prints
#                                      and check that it prints the account, stop the
#                                      server; then again on the state the first run left
#                                      (the command must be idempotent)
#   scripts/check-readme.sh --print main|test
#                                      print one of the two commands (.ci/run runs the test
#                                      command this way, so CI runs exactly what README says)
#
# The copy builds into $CARGO_TARGET_DIR (default: this checkout's target/), so dependencies
# are not built twice. Exit 0 when README and reality agree, 1 otherwise, with what differed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

die() {
    printf 'check-readme: %s\n' "$*" >&2
    exit 1
}

# The first ```sh block after "## Two commands": its command lines, comments dropped. A line
# ending in "\" continues.
commands() {
    python3 - "$ROOT/README.md" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^## Two commands\n(.*?)(?=^## )", text, re.S | re.M)
if not m:
    sys.exit("README.md has no '## Two commands' section")
block = re.search(r"```sh\n(.*?)```", m.group(1), re.S)
if not block:
    sys.exit("README.md's '## Two commands' section has no ```sh block")
cmds, cur = [], ""
for line in block.group(1).splitlines():
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    cur += s
    if cur.endswith("\\"):
        cur = cur[:-1] + " "
        continue
    cmds.append(cur)
    cur = ""
if len(cmds) != 2:
    sys.exit(f"README.md's '## Two commands' block has {len(cmds)} commands, not 2: {cmds}")
print("\n".join(cmds))
EOF
}

all=$(commands) || die "cannot read the commands from README.md"
main_cmd=$(sed -n 1p <<<"$all")
test_cmd=$(sed -n 2p <<<"$all")

if [ "${1:-}" = --print ]; then
    case ${2:-} in
    main) printf '%s\n' "$main_cmd" ;;
    test) printf '%s\n' "$test_cmd" ;;
    *) die "usage: $0 [--print main|test]" ;;
    esac
    exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [--print main|test]"

work=$(mktemp -d "${TMPDIR:-/tmp}/check-readme.XXXXXX")
server=""
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM -- "-$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A clean copy: the files git knows or would add (what a clone of this tree would hold),
# without target/, .patched/ or any other ignored state.
clone=$work/clone
mkdir -p "$clone"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar -C "$ROOT" --null -T - -cf - | tar -C "$clone" -xf -

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# a fresh dev state, as on a new machine (the dev server keeps it under XDG_STATE_HOME)
export XDG_STATE_HOME=$work/state

echo "check-readme: main command: $main_cmd"

# run_main N: start the main command, wait for the instructions, log in as they say
run_main() {
    local log=$work/main-$1.log
    # its own process group, so that stopping it stops cargo and the server
    (cd "$clone" && exec setsid bash -c "$main_cmd") >"$log" 2>&1 &
    server=$!
    local deadline=$((SECONDS + ${HPCCERT_README_TIMEOUT:-1800}))
    until grep -q 'through the askpass helper' "$log" && grep -q 'Or give the token' "$log"; do
        if ! kill -0 "$server" 2>/dev/null; then
            cat "$log" >&2
            die "run $1: the main command ended before the dev server printed its instructions"
        fi
        [ $SECONDS -lt $deadline ] || { tail -50 "$log" >&2; die "run $1: no instructions in time"; }
        sleep 1
    done
    # the login command printed after "through the askpass helper:", up to the blank line
    local login
    login=$(awk '/through the askpass helper:/{on=1; next} on && /^[[:space:]]*$/{if (seen) exit; next} on {seen=1; print}' "$log")
    [ -n "$login" ] || die "run $1: no login command in the instructions"
    login=$(printf '%s\n' "$login" | sed -e 's/\\$//' | tr '\n' ' ')
    echo "check-readme: run $1: the printed login: $login"
    local out
    if ! out=$(cd "$work" && timeout 60 bash -c "$login" 2>"$work/login-$1.err" </dev/null); then
        cat "$work/login-$1.err" "$log" >&2
        die "run $1: the printed login failed"
    fi
    local user
    user=$(id -un)
    grep -q "($user)" <<<"$out" || {
        printf '%s\n' "$out" >&2
        die "run $1: the login did not print the account $user"
    }
    echo "check-readme: run $1: logged in as $user: $(head -1 <<<"$out")"
    kill -TERM -- "-$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
}

run_main 1
# again, on what the first run left (built, set up, dev state made)
run_main 2
echo "check-readme: README's main command works verbatim, twice"
