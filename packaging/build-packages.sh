#!/usr/bin/env bash
# Build the Debian and RPM packages of hpccert (issue #8):
#   hpccert-sshd, hpccert-tools, libpam-hpccert, libnss-hpccert, hpccert-portal, hpccert-client
#                                                                  (.deb, cargo-deb)
#   hpccert-sshd, hpccert-tools, pam_hpccert, nss_hpccert, hpccert-portal, hpccert-client
#                                                                  (.rpm, cargo-generate-rpm)
# into $CARGO_TARGET_DIR/packages (default target/packages).
#
# The release binaries are built once (cargo build --release --locked); the man pages and
# shell completions come from the clap definitions (cargo xtask man / completions), the
# hand-written pam_hpccert.8 and libnss_hpccert.8 from packaging/man/. Needs cargo-deb and
# cargo-generate-rpm (cargo install --locked cargo-deb cargo-generate-rpm) and dpkg-dev
# (dpkg-shlibdeps for the `$auto` dependencies). Runs scripts/setup-russh.sh first.
#
#   packaging/build-packages.sh [--deb-only | --rpm-only]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

want_deb=1
want_rpm=1
case "${1:-}" in
"") ;;
--deb-only) want_rpm=0 ;;
--rpm-only) want_deb=0 ;;
*)
    echo "usage: $0 [--deb-only | --rpm-only]" >&2
    exit 2
    ;;
esac

die() {
    echo "build-packages: error: $*" >&2
    exit 1
}

# The module paths in the Cargo.toml metadata are amd64's multiarch directories.
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
case "$arch" in
amd64 | x86_64) ;;
*) die "only amd64 is packaged: the PAM/NSS module paths in pam_hpccert/Cargo.toml and nss_hpccert/Cargo.toml name x86_64-linux-gnu (and /usr/lib64 for RPM); add this architecture's paths first" ;;
esac

for tool in cargo-deb cargo-generate-rpm; do
    if [ "$tool" = cargo-deb ] && [ "$want_deb" = 0 ]; then continue; fi
    if [ "$tool" = cargo-generate-rpm ] && [ "$want_rpm" = 0 ]; then continue; fi
    command -v "$tool" >/dev/null || die "$tool not found (cargo install --locked $tool)"
done

scripts/setup-russh.sh

target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
release=$target_dir/release
out=$target_dir/packages
assets=$release/packaging

echo "== release build ($release)"
# xtask in the same build: one feature resolution, so nothing is built twice
cargo build --release --locked -p sshd-gsi -p gridmap-tool -p pam_hpccert -p nss_hpccert -p mapping-portal -p hpccert-client -p xtask

echo "== man pages and completions ($assets)"
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/rpm"
"$release/xtask" man "$assets/man"
"$release/xtask" completions "$assets/completions"
cp packaging/man/pam_hpccert.8 packaging/man/libnss_hpccert.8 "$assets/man/"
# reproducible: no name or time stamp in the gzip header
gzip -9n "$assets"/man/*.8 "$assets"/man/*.1
# the RPM's config names Fedora's sftp-server
sed 's|^sftp_server = "/usr/lib/openssh/sftp-server"|sftp_server = "/usr/libexec/openssh/sftp-server"|' \
    packaging/hpccert.toml >"$assets/rpm/hpccert.toml"
# Fedora and RHEL have no shadow group (a unit naming a missing group does not start): the RPM's
# mapping-portal.service goes without it (its comment says what to do there instead)
sed 's|^SupplementaryGroups=shadow$|# (no shadow group on Fedora/RHEL: see the comment above)|' \
    packaging/systemd/mapping-portal.service >"$assets/rpm/mapping-portal.service"
# cargo-generate-rpm packages files as they are (cargo-deb strips its own copies)
for f in sshd-gsi sshd-gsi-pam-helper gridmap-tool mapping-portal hpccert libpam_hpccert.so libnss_hpccert.so; do
    strip --strip-unneeded -o "$assets/rpm/$f" "$release/$f"
done
# The NSS module keeps its SONAME file name in the .deb, which cargo-deb neither strips nor runs
# dpkg-shlibdeps on: a stripped copy, and its shlibs dependencies checked against the metadata.
mkdir -p "$assets/deb" "$assets/shlibdeps/debian"
strip --strip-unneeded -o "$assets/deb/libnss_hpccert.so.2" "$release/libnss_hpccert.so"
printf 'Source: hpccert\n\nPackage: libnss-hpccert\nArchitecture: any\n' >"$assets/shlibdeps/debian/control"
computed=$(cd "$assets/shlibdeps" && dpkg-shlibdeps -O -e "$assets/deb/libnss_hpccert.so.2" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
declared=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["package"]["metadata"]["deb"]["depends"])' nss_hpccert/Cargo.toml)
[ "$computed" = "$declared" ] ||
    die "libnss_hpccert.so.2 needs Depends: $computed, but nss_hpccert/Cargo.toml declares: $declared (update it)"
grep -q '^sftp_server = "/usr/libexec/openssh/sftp-server"' "$assets/rpm/hpccert.toml" ||
    die "packaging/hpccert.toml has no sftp_server line to adapt for RPM"
grep -q '^SupplementaryGroups=' "$assets/rpm/mapping-portal.service" &&
    die "packaging/systemd/mapping-portal.service: the RPM's copy still names a SupplementaryGroups="

rm -rf "$out"
mkdir -p "$out"
crates=(sshd-gsi gridmap-tool pam_hpccert nss_hpccert mapping-portal hpccert-client)

if [ "$want_deb" = 1 ]; then
    for crate in "${crates[@]}"; do
        echo "== deb: $crate"
        multiarch=()
        # the modules are loaded into processes of the same architecture: Multi-Arch: same
        case "$crate" in pam_hpccert | nss_hpccert) multiarch=(--multiarch=same) ;; esac
        cargo deb --no-build --locked --strip --no-dbgsym -p "$crate" "${multiarch[@]}" --output "$out/"
    done
fi
if [ "$want_rpm" = 1 ]; then
    for crate in "${crates[@]}"; do
        echo "== rpm: $crate"
        cargo generate-rpm -p "$crate" --target-dir "$target_dir" -o "$out/"
    done
fi

echo "== packages in $out"
ls -l "$out"
