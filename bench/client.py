#!/usr/bin/env python3
"""Benchmark client for bench/compare-openssh.sh: one measurement per process, JSON on stdout.

    client.py COMMON MODE [ARGS]

COMMON: --port PORT --user USER and one credential:
  --key KEY                      an OpenSSH private key (publickey, for OpenSSH's sshd)
  --key KEY --cert CHAIN.pem     an X.509 certificate (RFC 6187, for sshd-gsi)
  --password-file FILE           the file's contents as the password (a bearer token, sshd-gsi)

MODES:
  whoami                            the session's account, home and HPCCERT_AUTH_METHOD
  login --count N --concurrency C   N connections, each running `true`; logins/s and latency
  upload --mib M                    `cat > /dev/null` fed M MiB; MiB/s
  download --mib M                  `head -c M MiB /dev/zero` read; MiB/s
  idle --sessions K --server-pid P  K connections each running `sleep 600` (no PTY); the
                                    memory of the server's processes (P and its descendants,
                                    session commands excluded) before and after, per session

Every login uses the same client (asyncssh), host key checking off, no agent.
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import asyncssh

CHUNK = 1 << 20  # 1 MiB writes/reads


def conn_options(a):
    opts = dict(username=a.user, known_hosts=None, agent_path=None)
    if a.password_file:
        with open(a.password_file) as f:
            opts.update(password=f.read().strip(), client_keys=None,
                        preferred_auth="password")
    else:
        # loaded once: asyncssh would otherwise read and parse the key and certificate files
        # (pyOpenSSL for X.509) at every connection, ~90 ms of client CPU per X.509 login here
        keys = asyncssh.load_keypairs([(a.key, a.cert)] if a.cert else [a.key])
        opts.update(client_keys=keys, preferred_auth="publickey")
    return opts


def connect(a, opts):
    return asyncssh.connect("127.0.0.1", a.port, **opts)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


async def one_login(a, opts):
    t0 = time.perf_counter()
    async with connect(a, opts) as conn:
        r = await conn.run("true", check=False)
        if r.exit_status != 0:
            raise RuntimeError(f"`true` exited {r.exit_status}: {r.stderr!r}")
    return time.perf_counter() - t0


async def mode_login(a, opts):
    # one warm-up login (page cache, the server's first-connection work), not counted
    await one_login(a, opts)
    latencies, errors = [], []
    todo = iter(range(a.count))

    async def worker():
        for _ in todo:
            try:
                latencies.append(await one_login(a, opts))
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(a.concurrency)))
    wall = time.perf_counter() - t0
    return {
        "count": len(latencies), "errors": len(errors), "first_errors": errors[:3],
        "concurrency": a.concurrency, "wall_s": wall,
        "logins_per_s": len(latencies) / wall if wall > 0 else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else None,
    }


async def mode_whoami(a, opts):
    async with connect(a, opts) as conn:
        r = await conn.run('id -un; echo "$HOME"; echo "${HPCCERT_AUTH_METHOD:-}"', check=True)
    user, home, method = (r.stdout.splitlines() + ["", "", ""])[:3]
    return {"user": user, "home": home, "hpccert_auth_method": method}


async def mode_upload(a, opts):
    total = a.mib * CHUNK
    block = b"\0" * CHUNK
    async with connect(a, opts) as conn:
        cipher = conn.get_extra_info("send_cipher")
        t0 = time.perf_counter()
        proc = await conn.create_process("cat > /dev/null", encoding=None)
        for _ in range(a.mib):
            proc.stdin.write(block)
            await proc.stdin.drain()
        proc.stdin.write_eof()
        await proc.wait(check=False)
        dt = time.perf_counter() - t0
        if proc.exit_status != 0:
            raise RuntimeError(f"cat exited {proc.exit_status}")
    return {"bytes": total, "seconds": dt, "mib_per_s": a.mib / dt, "cipher": cipher}


async def mode_download(a, opts):
    async with connect(a, opts) as conn:
        cipher = conn.get_extra_info("recv_cipher")
        t0 = time.perf_counter()
        proc = await conn.create_process(f"head -c {a.mib * CHUNK} /dev/zero", encoding=None)
        got = 0
        while True:
            data = await proc.stdout.read(CHUNK)
            if not data:
                break
            got += len(data)
        await proc.wait(check=False)
        dt = time.perf_counter() - t0
    if got != a.mib * CHUNK:
        raise RuntimeError(f"read {got} bytes, expected {a.mib * CHUNK}")
    return {"bytes": got, "seconds": dt, "mib_per_s": a.mib / dt, "cipher": cipher}


# --- memory -----------------------------------------------------------------------------

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def kib(pid, path, field):
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def server_memory(root, exclude_comm):
    """RSS and PSS (KiB) of root and its descendants, minus the session commands' processes
    (and whatever those start); returns (rss, pss, server processes counted)."""
    kids = children_map()
    rss = pss = n = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid != root and comm(pid) in exclude_comm:
            continue  # the session command itself and its subtree
        rss += kib(pid, "status", "VmRSS")
        pss += kib(pid, "smaps_rollup", "Pss")
        n += 1
        stack.extend(kids.get(pid, []))
    return rss, pss, n


async def mode_idle(a, opts):
    exclude = {"sleep"}
    await asyncio.sleep(0.5)
    rss0, pss0, n0 = server_memory(a.server_pid, exclude)
    conns, procs = [], []
    try:
        for _ in range(a.sessions):
            c = await connect(a, opts)
            conns.append(c)
            procs.append(await c.create_process("sleep 600"))
        await asyncio.sleep(2.0)  # let the servers settle (allocations, children exec'd)
        samples = []
        for _ in range(3):
            samples.append(server_memory(a.server_pid, exclude))
            await asyncio.sleep(0.5)
        rss1 = statistics.median(s[0] for s in samples)
        pss1 = statistics.median(s[1] for s in samples)
        n1 = max(s[2] for s in samples)
    finally:
        for c in conns:
            c.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
    k = a.sessions
    return {
        "sessions": k, "processes_before": n0, "processes_after": n1,
        "rss_kib_before": rss0, "rss_kib_after": rss1,
        "pss_kib_before": pss0, "pss_kib_after": pss1,
        "rss_kib_per_session": (rss1 - rss0) / k, "pss_kib_per_session": (pss1 - pss0) / k,
    }


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--key")
    ap.add_argument("--cert")
    ap.add_argument("--password-file")
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("login")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=1)
    for m in ("upload", "download"):
        sub.add_parser(m).add_argument("--mib", type=int, default=256)
    sub.add_parser("whoami")
    p = sub.add_parser("idle")
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--server-pid", type=int, required=True)
    a = ap.parse_args()
    if not (a.password_file or a.key):
        ap.error("give --key [--cert] or --password-file")
    opts = conn_options(a)
    fn = {"whoami": mode_whoami, "login": mode_login, "upload": mode_upload, "download": mode_download,
          "idle": mode_idle}[a.mode]
    out = await fn(a, opts)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
