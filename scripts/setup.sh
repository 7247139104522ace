#!/usr/bin/env bash
# The first step of README's main command, on a fresh machine and every time after it
# (idempotent, quick when everything is there):
#
#   1. the system prerequisites of building and trying hpccert: a C compiler, patch,
#      pkg-config and OpenSSL's headers (openssl-sys), and the OpenSSH client that the dev
#      server's printed login uses. Run as root, the missing ones are installed (apt-get on
#      Debian/Ubuntu, dnf or yum on the RHEL family); otherwise the one command that installs
#      them is printed and the script fails.
#   2. scripts/setup-russh.sh: the pinned russh release with the project's RFC 6187 patch,
#      which every cargo command of the workspace needs first.
#
# With --demo, also what scripts/demo.sh uses: curl.
#
# Rust itself (rustup: https://rustup.rs) is not installed by this script.
set -euo pipefail
demo=false
case ${1:-} in
--demo) demo=true ;;
"") ;;
*) echo "usage: $0 [--demo]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
    exit 1
fi

# Which package manager, and the names of the packages there.
if command -v apt-get >/dev/null 2>&1; then
    family=debian
elif command -v dnf >/dev/null 2>&1; then
    family=rhel
    pm=dnf
elif command -v yum >/dev/null 2>&1; then
    family=rhel
    pm=yum
else
    family=unknown
fi

# package name per family for each missing prerequisite
missing=()
need() { # need DEBIAN_PACKAGE RHEL_PACKAGE
    case $family in
    debian) missing+=("$1") ;;
    rhel) missing+=("$2") ;;
    *) missing+=("$1") ;;
    esac
}

command -v cc >/dev/null 2>&1 || need build-essential gcc
command -v patch >/dev/null 2>&1 || need patch patch
command -v pkg-config >/dev/null 2>&1 || need pkg-config pkgconf-pkg-config
# openssl-sys finds OpenSSL through pkg-config; without pkg-config, look for the header
if command -v pkg-config >/dev/null 2>&1; then
    pkg-config --exists openssl 2>/dev/null || need libssl-dev openssl-devel
elif [ ! -e /usr/include/openssl/ssl.h ]; then
    need libssl-dev openssl-devel
fi
command -v ssh >/dev/null 2>&1 || need openssh-client openssh-clients
if $demo; then
    command -v curl >/dev/null 2>&1 || need curl curl
fi

if [ ${#missing[@]} -gt 0 ]; then
    case $family in
    debian) install=(apt-get install -y --no-install-recommends "${missing[@]}") ;;
    rhel) install=("$pm" install -y "${missing[@]}") ;;
    *)
        say "missing: ${missing[*]} (Debian package names); install them with this system's package manager"
        exit 1
        ;;
    esac
    if [ "$(id -u)" -ne 0 ]; then
        say "missing prerequisites: ${missing[*]}. Install them with:"
        printf '\n    sudo %s\n\n' "${install[*]}" >&2
        say "then run this command again"
        exit 1
    fi
    say "installing ${missing[*]}"
    if [ "$family" = debian ]; then
        export DEBIAN_FRONTEND=noninteractive
        # a fresh machine has no package lists yet
        apt-get update -qq
    fi
    "${install[@]}" >&2
fi

scripts/setup-russh.sh >&2
