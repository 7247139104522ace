#!/bin/sh
# Writes seeds/sshcert/: trusted CA keys (trusted-cas.pub) and real OpenSSH user certificates
# made with `ssh-keygen -s`, each as the authorized-key style line (NAME.cert) and as the raw
# blob a client sends in a publickey request (NAME.bin). The CA private keys live only in a
# temporary directory: the `sshcert` target reads trusted-cas.pub and the .cert files at build
# time (include_str!) as the trusted CAs and the genuine certificates, so rebuild it after
# running this. The certificates are valid 2025-01-01 to 2035-01-01; the target checks them at
# 2030-01-01.
set -eu
cd "$(dirname "$0")/.."
out=seeds/sshcert
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
rm -f "$out"/*

# CA keys (trusted) and one untrusted CA
ssh-keygen -q -N '' -t ed25519 -C 'fuzz CA ed25519' -f "$tmp/ca-ed25519"
ssh-keygen -q -N '' -t ecdsa -b 256 -C 'fuzz CA ecdsa' -f "$tmp/ca-ecdsa"
ssh-keygen -q -N '' -t rsa -b 3072 -C 'fuzz CA rsa' -f "$tmp/ca-rsa"
ssh-keygen -q -N '' -t ed25519 -C 'untrusted CA' -f "$tmp/ca-untrusted"
{
    echo '# CAs the sshcert target trusts'
    cat "$tmp/ca-ed25519.pub" "$tmp/ca-ecdsa.pub" "$tmp/ca-rsa.pub"
} >"$out/trusted-cas.pub"
# user keys
ssh-keygen -q -N '' -t ed25519 -C alice -f "$tmp/u-ed25519"
ssh-keygen -q -N '' -t ecdsa -b 384 -C bob -f "$tmp/u-ecdsa"
ssh-keygen -q -N '' -t rsa -b 2048 -C carol -f "$tmp/u-rsa"

serial=0
# cert NAME CA USERKEY [ssh-keygen options...]
cert() {
    name=$1 ca=$2 user=$3
    shift 3
    serial=$((serial + 1))
    cp "$tmp/$user.pub" "$tmp/$name.pub"
    ssh-keygen -q -s "$tmp/$ca" -I "$name@fuzz" -z "$serial" -V 20250101:20350101 "$@" "$tmp/$name.pub"
    cp "$tmp/$name-cert.pub" "$out/$name.cert"
    cut -d' ' -f2 "$out/$name.cert" | base64 -d >"$out/$name.bin"
}
# accepted (for the right peer)
cert ed25519 ca-ed25519 u-ed25519 -n alice,alice-batch
cert ecdsa-source ca-ecdsa u-ecdsa -n bob -O source-address=192.0.2.0/24,2001:db8::/32
cert rsa ca-rsa u-rsa -n carol -O clear -O permit-pty
# refused
cert force-command ca-ed25519 u-ed25519 -n alice -O force-command=/bin/true
cert no-principals ca-ed25519 u-ed25519
cert host ca-ecdsa u-ecdsa -h -n login.example.org
cert expired ca-rsa u-ed25519 -n alice -V 20200101:20210101
cert source-other ca-ed25519 u-rsa -n carol -O source-address=203.0.113.0/24
cert untrusted ca-untrusted u-ed25519 -n alice
ls -l "$out"
