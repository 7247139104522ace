#!/usr/bin/env bash
# Make .patched/russh-<version> = the pinned crates.io release of russh + our patch
# (sshd-gsi/russh-patch/). The workspace's [patch.crates-io] points at that
# directory, and cargo resolves [patch] paths before it builds anything, so
# this must run before the first cargo command of a fresh clone.
#
# Idempotent: the SHA-256 of the patch is stamped inside the patched directory;
# when it matches, nothing is done. When the patch changes, the directory is
# rebuilt from the pristine release. The pristine source is obtained through
# cargo itself (the .crate in cargo's registry cache, fetched with `cargo fetch`
# from a throwaway package when missing) and checked against the crates.io
# checksum. The result appears atomically: a patch that does not apply leaves
# the previous state untouched.
set -euo pipefail

RUSSH_VERSION=0.65.1
# crates.io checksum of russh-0.65.1.crate (as in Cargo.lock).
RUSSH_CRATE_SHA256=94be3d86c71b9ed220a675c405e35c7a02565a009bf8da2e9cc13a700320a5c5
PATCH_REL=sshd-gsi/russh-patch/russh-${RUSSH_VERSION}-external-publickey.patch

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PATCH=$ROOT/$PATCH_REL
OUT_PARENT=$ROOT/.patched
DEST=$OUT_PARENT/russh-$RUSSH_VERSION
STAMP_NAME=.hpccert-patch.sha256
CARGO_BIN=${CARGO:-cargo}
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}

die() {
    echo "setup-russh: error: $*" >&2
    exit 1
}

[ -f "$PATCH" ] || die "patch not found: $PATCH_REL"
command -v patch >/dev/null || die "the 'patch' program is required (Debian: apt-get install patch)"

want=$(sha256sum "$PATCH" | cut -d' ' -f1)

up_to_date() {
    [ -f "$DEST/Cargo.toml" ] && [ -f "$DEST/$STAMP_NAME" ] &&
        [ "$(cat "$DEST/$STAMP_NAME")" = "$want" ]
}

if up_to_date; then
    echo "setup-russh: .patched/russh-$RUSSH_VERSION is up to date"
    exit 0
fi

mkdir -p "$OUT_PARENT"
# Serialize concurrent runs (parallel CI jobs, two shells).
if command -v flock >/dev/null; then
    exec 9>"$OUT_PARENT/.setup-russh.lock"
    flock 9
    if up_to_date; then
        echo "setup-russh: .patched/russh-$RUSSH_VERSION is up to date"
        exit 0
    fi
    # Leftovers of an interrupted run (safe to remove while holding the lock).
    rm -rf "$OUT_PARENT"/.russh-"$RUSSH_VERSION".stage.* "$OUT_PARENT"/.russh-"$RUSSH_VERSION".old.*
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/setup-russh.XXXXXX")
# Staging lives next to DEST so the final step is a rename on one filesystem.
stage=$(mktemp -d "$OUT_PARENT/.russh-$RUSSH_VERSION.stage.XXXXXX")
old=""
cleanup() {
    rm -rf "$work" "$stage"
    if [ -n "$old" ]; then rm -rf "$old"; fi
}
trap cleanup EXIT

find_crate() {
    local f
    for f in "$CARGO_HOME_DIR"/registry/cache/*/russh-"$RUSSH_VERSION".crate; do
        if [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$RUSSH_CRATE_SHA256" ]; then
            echo "$f"
            return 0
        fi
    done
    return 1
}

if ! crate=$(find_crate); then
    echo "setup-russh: fetching russh $RUSSH_VERSION through cargo"
    # A throwaway package outside the repository (inside it, cargo would take
    # it for part of the workspace).
    mkdir -p "$work/fetch/src"
    cat >"$work/fetch/Cargo.toml" <<EOF
[package]
name = "setup-russh-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
russh = "=$RUSSH_VERSION"

[workspace]
EOF
    : >"$work/fetch/src/lib.rs"
    host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)
    (cd "$work/fetch" && "$CARGO_BIN" fetch ${host:+--target "$host"}) ||
        die "cargo fetch of russh $RUSSH_VERSION failed"
    crate=$(find_crate) ||
        die "russh-$RUSSH_VERSION.crate with SHA-256 $RUSSH_CRATE_SHA256 not found under $CARGO_HOME_DIR/registry/cache after cargo fetch"
fi

tar -xzf "$crate" -C "$work"
src=$work/russh-$RUSSH_VERSION
[ -f "$src/Cargo.toml" ] || die "unexpected layout of $crate"
rm -f "$src/.cargo-ok"
cp -a "$src/." "$stage/"

if ! out=$(patch -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch -d "$stage" -i "$PATCH" 2>&1); then
    die "russh $RUSSH_VERSION and $PATCH_REL no longer fit: the patch does not apply:
$out
(.patched/russh-$RUSSH_VERSION was left as it was)"
fi
if [ -n "$(find "$stage" -name '*.rej' | head -n1)" ]; then
    die "russh $RUSSH_VERSION and $PATCH_REL no longer fit: patch left .rej files:
$out"
fi

# The release's files carry the crate's fixed timestamps; make everything newer
# than any earlier build so cargo's mtime check rebuilds the crate.
find "$stage" -exec touch {} +
printf '%s\n' "$want" >"$stage/$STAMP_NAME"
chmod 755 "$stage"

if [ -e "$DEST" ]; then
    old=$(mktemp -d "$OUT_PARENT/.russh-$RUSSH_VERSION.old.XXXXXX")
    mv "$DEST" "$old/"
fi
mv "$stage" "$DEST"
echo "setup-russh: .patched/russh-$RUSSH_VERSION = russh $RUSSH_VERSION + $PATCH_REL"
