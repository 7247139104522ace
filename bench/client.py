#!/usr/bin/env python3
"""Benchmark client for bench/compare-openssh.sh: one measurement per process, JSON on stdout.

    client.py COMMON MODE [ARGS]

COMMON: --port PORT --user USER and one credential:
  --key KEY                      an OpenSSH private key (publickey, for OpenSSH's sshd)
  --key KEY --cert CHAIN.pem     an X.509 certificate (RFC 6187, for sshd-gsi)
  --password-file FILE           the file's contents as the password (a bearer token, sshd-gsi)

MODES:
  whoami                            the session's account, home and HPCCERT_AUTH_METHOD
  login --count N --concurrency C [--server-pid P]
                                    N connections, each running `true`; logins/s, latency,
                                    the client's CPU and (with P) the server's CPU per login
  upload --mib M                    `cat > /dev/null` fed M MiB; MiB/s
  download --mib M                  `head -c M MiB /dev/zero` read; MiB/s
  sftp-put --file F                 sftp put of the local file F to the server's /dev/null
  sftp-get --file F                 sftp get of the server's file F to the local /dev/null
  idle --sessions K --server-pid P  K connections each running `sleep 600` (no PTY); the
                                    memory of the server's processes (P and its descendants,
                                    session commands excluded) before and after, per session

--count-exe PATH (login, idle; repeatable): also count every process running PATH, wherever it
sits in the process tree (a helper that left the server's tree, e.g. after a double fork).

Every login uses the same client (asyncssh), host key checking off, no agent.
"""
import argparse
import asyncio
import json
import os
import pwd
import resource
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

    tree = ServerTree(a)
    srv0 = tree.cpu_ticks() if a.server_pid else None
    cpu0 = client_cpu()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(a.concurrency)))
    wall = time.perf_counter() - t0
    cpu = client_cpu() - cpu0
    out = {
        "count": len(latencies), "errors": len(errors), "first_errors": errors[:3],
        "concurrency": a.concurrency, "wall_s": wall,
        "logins_per_s": len(latencies) / wall if wall > 0 else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
        "mean_ms": 1000 * statistics.fmean(latencies) if latencies else None,
        # the client is one Python process (one core at most): near 100 % it is the bottleneck
        "client_cpu_s": cpu, "client_cpu_pct": 100 * cpu / wall if wall > 0 else None,
        "client_cpu_ms_per_login": 1000 * cpu / len(latencies) if latencies else None,
        "latencies_ms": [round(1000 * x, 3) for x in latencies],
    }
    if srv0 is not None:
        await asyncio.sleep(0.3)  # let the server reap what the last logins started
        ticks = tree.cpu_ticks() - srv0
        secs = ticks / os.sysconf("SC_CLK_TCK")
        out.update({
            # the server, its helpers and the session commands (`true` via the shell), reaped
            # or alive: utime + stime + cutime + cstime over the tree
            "server_cpu_s": secs, "server_cpu_pct": 100 * secs / wall if wall > 0 else None,
            "server_cpu_ms_per_login": 1000 * secs / len(latencies) if latencies else None,
        })
    return out


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


async def mode_sftp_put(a, opts):
    size = os.path.getsize(a.file)
    async with connect(a, opts) as conn:
        cipher = conn.get_extra_info("send_cipher")
        async with conn.start_sftp_client() as sftp:
            limits = sftp_limits(sftp)
            t0 = time.perf_counter()
            await sftp.put(a.file, "/dev/null")
            dt = time.perf_counter() - t0
    return {"bytes": size, "seconds": dt, "mib_per_s": size / CHUNK / dt, "cipher": cipher,
            **limits}


async def mode_sftp_get(a, opts):
    async with connect(a, opts) as conn:
        cipher = conn.get_extra_info("recv_cipher")
        async with conn.start_sftp_client() as sftp:
            limits = sftp_limits(sftp)
            size = (await sftp.stat(a.file)).size
            t0 = time.perf_counter()
            await sftp.get(a.file, "/dev/null")
            dt = time.perf_counter() - t0
    return {"bytes": size, "seconds": dt, "mib_per_s": size / CHUNK / dt, "cipher": cipher,
            **limits}


def sftp_limits(sftp):
    """The read/write sizes asyncssh will use (the server's limits@openssh.com, else 16 KiB)."""
    lim = getattr(getattr(sftp, "_handler", None), "limits", None)
    if lim is None:
        return {}
    return {"sftp_max_read_len": lim.max_read_len, "sftp_max_write_len": lim.max_write_len}


def client_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- memory -----------------------------------------------------------------------------

def proc_table():
    """{pid: (ppid, fields after the comm in /proc/PID/stat)} for every process."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(")") + 2:].split()
        table[int(d)] = (int(rest[1]), rest)
    return table


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
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


class ServerTree:
    """The server's processes: the listener (--server-pid), every descendant (OpenSSH's
    per-connection monitor and user process; sshd-gsi's PAM helpers, including a long-lived
    helper and the children it forks per session), and every process running a --count-exe
    program wherever it sits; minus the session commands and whatever they start. A session
    command is a process running `sleep` (the idle sessions' command), or the account's shell
    (a shell that did not exec its command): neither is the server's."""

    def __init__(self, a):
        self.root = getattr(a, "server_pid", None)
        self.extra = {os.path.realpath(p) for p in (getattr(a, "count_exe", None) or [])}
        shell = pwd.getpwnam(a.user).pw_shell
        self.session_exes = {os.path.realpath(shell)} if shell else set()
        self.session_comms = {"sleep"}

    def _is_session_command(self, pid):
        return comm(pid) in self.session_comms or exe(pid) in self.session_exes

    def pids(self):
        """The server's pids (a set), and the pids left out as session commands (subtree
        roots only)."""
        table = proc_table()
        kids = {}
        for pid, (ppid, _) in table.items():
            kids.setdefault(ppid, []).append(pid)
        counted, excluded = set(), set()
        stack = [self.root]
        if self.extra:
            stack += [p for p in table if exe(p) in self.extra]
        while stack:
            pid = stack.pop()
            if pid in counted or pid in excluded:
                continue
            if pid != self.root and self._is_session_command(pid):
                excluded.add(pid)  # the session command itself and its subtree
                continue
            counted.add(pid)
            stack.extend(kids.get(pid, []))
        return counted, excluded, table

    def memory(self):
        """RSS and PSS (KiB) summed over the server's processes, how many, and how many of
        each name (comm)."""
        counted, _, _ = self.pids()
        rss = pss = 0
        names = {}
        for pid in counted:
            rss += kib(pid, "status", "VmRSS")
            pss += kib(pid, "smaps_rollup", "Pss")
            c = comm(pid)
            names[c] = names.get(c, 0) + 1
        return rss, pss, len(counted), names

    def cpu_ticks(self):
        """utime + stime + cutime + cstime (clock ticks) over the server's processes: what
        they used themselves and what their reaped children (and theirs) used."""
        counted, excluded, table = self.pids()
        total = 0
        for pid in counted:
            if pid in table:
                f = table[pid][1]
                total += sum(int(x) for x in f[11:15])  # stat fields 14-17
        return total


async def mode_idle(a, opts):
    tree = ServerTree(a)
    await asyncio.sleep(0.5)
    rss0, pss0, n0, names0 = tree.memory()
    conns, procs = [], []
    try:
        for _ in range(a.sessions):
            c = await connect(a, opts)
            conns.append(c)
            procs.append(await c.create_process("sleep 600"))
        await asyncio.sleep(2.0)  # let the servers settle (allocations, children exec'd)
        samples = []
        for _ in range(3):
            samples.append(tree.memory())
            await asyncio.sleep(0.5)
        rss1 = statistics.median(s[0] for s in samples)
        pss1 = statistics.median(s[1] for s in samples)
        n1 = max(s[2] for s in samples)
        names1 = max(samples, key=lambda s: s[2])[3]
        sessions_seen = len(tree.pids()[1])
    finally:
        # end the session commands before closing: a closed connection does not stop
        # `sleep 600` (OpenSSH leaves it to init, sshd-gsi's PAM helper waits for it), and
        # what lingers would count in the next test's "before"
        for pid in tree.pids()[1]:
            try:
                os.kill(pid, 15)
            except OSError:
                pass
        for c in conns:
            c.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
    # wait (up to 10 s) until the server is back to its processes before the test
    for _ in range(100):
        n_end = len(tree.pids()[0])
        if n_end <= n0:
            break
        await asyncio.sleep(0.1)
    k = a.sessions
    return {
        "sessions": k, "session_commands_seen": sessions_seen, "processes_after_close": n_end,
        "processes_before": n0, "processes_after": n1,
        "process_names_before": names0, "process_names_after": names1,
        "processes_per_session": (n1 - n0) / k,
        "rss_kib_before": rss0, "rss_kib_after": rss1,
        "pss_kib_before": pss0, "pss_kib_after": pss1,
        "pss_kib_samples_after": [s[1] for s in samples],
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
    p.add_argument("--server-pid", type=int)
    p.add_argument("--count-exe", action="append")
    for m in ("upload", "download"):
        sub.add_parser(m).add_argument("--mib", type=int, default=256)
    for m in ("sftp-put", "sftp-get"):
        sub.add_parser(m).add_argument("--file", required=True)
    sub.add_parser("whoami")
    p = sub.add_parser("idle")
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--count-exe", action="append")
    a = ap.parse_args()
    if not (a.password_file or a.key):
        ap.error("give --key [--cert] or --password-file")
    opts = conn_options(a)
    fn = {"whoami": mode_whoami, "login": mode_login, "upload": mode_upload, "download": mode_download,
          "sftp-put": mode_sftp_put, "sftp-get": mode_sftp_get, "idle": mode_idle}[a.mode]
    out = await fn(a, opts)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
