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
    awk '
        /^## / { in_section = ($0 == "## Two commands"); next }
        in_section && !in_block && /^```sh$/ { in_block = 1; seen = 1; next }
        in_block && /^```/ { in_block = 0; in_section = 0; next }
        in_block {
            line = $0
            sub(/^[ \t]+/, "", line); sub(/[ \t]+$/, "", line)
            if (line == "" || line ~ /^#/) next
            if (line ~ /\\$/) { cur = cur substr(line, 1, length(line) - 1) " "; next }
            print cur line; cur = ""; n++
        }
        END {
            if (!seen) { print "README.md has no ```sh block in a \"## Two commands\" section" > "/dev/stderr"; exit 1 }
            if (n != 2) { print "README.md: the \"## Two commands\" block has " n " commands, not 2" > "/dev/stderr"; exit 1 }
        }
    ' "$ROOT/README.md"
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
if command -v git >/dev/null 2>&1 && git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar -C "$ROOT" --null -T - -cf - | tar -C "$clone" -xf -
else
    # not a git checkout (a tarball): everything but build state
    tar -C "$ROOT" --exclude=./target --exclude=./.patched --exclude=./.venv-e2e -cf - . |
        tar -C "$clone" -xf -
fi

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
