#!/usr/bin/env python3
"""Log in to sshd-gsi with an X.509 certificate or proxy (RFC 6187), using asyncssh.

    python3 ssh-x509.py [-p PORT] [--key KEY] [--cert CHAIN] USER@HOST [COMMAND]

KEY and CHAIN default to $X509_USER_PROXY (a grid-proxy-init proxy file holds both), else
~/.globus/userkey.pem and ~/.globus/usercert.pem. Needs: pip install 'asyncssh[pyOpenSSL]'.
"""
import argparse
import asyncio
import os
import sys

import asyncssh


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", "--port", type=int, default=2222)
    ap.add_argument("--key")
    ap.add_argument("--cert")
    ap.add_argument("target", help="USER@HOST")
    ap.add_argument("command", nargs="*")
    a = ap.parse_args()
    proxy = os.environ.get("X509_USER_PROXY")
    key = a.key or proxy or os.path.expanduser("~/.globus/userkey.pem")
    cert = a.cert or (proxy if not a.key and proxy else os.path.expanduser("~/.globus/usercert.pem"))
    user, _, host = a.target.rpartition("@")
    async with asyncssh.connect(host, a.port, username=user or None, client_keys=[(key, cert)],
                                known_hosts=None, preferred_auth="publickey", agent_path=None) as conn:
        result = await conn.run(" ".join(a.command) or None, stdin=sys.stdin if not a.command else None)
        sys.stdout.write(result.stdout or "")
        sys.stderr.write(result.stderr or "")
        return result.exit_status or 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
