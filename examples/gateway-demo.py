#!/usr/bin/env python3
"""What a science gateway does on an HPC login node through sshd-gsi, in one script to copy.

    python3 examples/gateway-demo.py [--auth token|x509|proxy] [-p 2222] [USER@HOST]

It logs in as the account its credential maps to, uploads an input file and a job script with
SFTP into a fresh directory under the account's home, submits the script with `sbatch`, polls
`squeue -h -j ID` (in one loop on the login node) until the job has left the queue, asks how
it ended (`sacct -c` where that works for the account, else `scontrol show job`), downloads the
result and the job's output with SFTP, and removes the directory (unless --keep). Without
`sbatch` on the login node it says so and runs the job script directly in the session instead
(--require-sbatch refuses).

Credentials (defaults: the files `sshd-gsi --dev` writes to its state directory,
$XDG_STATE_HOME/hpccert-dev or ~/.local/state/hpccert-dev, and USER@HOST = you@127.0.0.1):
  --auth token   an OAuth2 access token (--token FILE, default STATE/token.jwt) with paramiko,
                 answering keyboard-interactive (--token-method password sends it as the password)
  --auth x509    a certificate and key (--cert/--key, default STATE/user.pem, STATE/user.key)
                 with asyncssh, RFC 6187 (pip install 'asyncssh[pyOpenSSL]')
  --auth proxy   an RFC 3820 proxy file as grid-proxy-init writes it (--proxy, default
                 $X509_USER_PROXY, else /tmp/x509up_u$UID), which holds the key and the
                 chain, with asyncssh

Host keys are not checked here (a dev server makes its own): a real gateway pins the login
node's host key (asyncssh known_hosts=..., paramiko load_host_keys).

--json FILE writes what happened (job id, states seen, final state and where it came from, the
result's text, the local files) for programs; tests/tests/gateway_slurm.rs reads it.
"""
import argparse
import asyncio
import json
import os
import posixpath
import pwd
import shlex
import sys
import time
import uuid

JOB_SCRIPT = r"""#!/bin/bash
#SBATCH --job-name=hpccert-gateway-demo
#SBATCH --ntasks=1
#SBATCH --time=00:05:00
# The gateway's job: reads input.txt in its working directory, writes result.txt there (who
# ran it, where, with which credentials in its environment, and the input transformed).
set -eu
{
    echo "uid=$(id -u)"
    echo "user=$(id -un)"
    echo "host=$(hostname -s)"
    echo "slurm_job_id=${SLURM_JOB_ID:-none}"
    # sbatch exports the submitting session's environment: sshd-gsi's record of the login
    echo "hpccert_auth_method=${HPCCERT_AUTH_METHOD:-none}"
    echo "hpccert_identity=${HPCCERT_IDENTITY:-none}"
    echo "bearer_token_file=${BEARER_TOKEN_FILE:-none}"
    echo "bearer_token_readable=$([ -r "${BEARER_TOKEN_FILE:-/nonexistent}" ] && echo yes || echo no)"
    echo "x509_user_proxy=${X509_USER_PROXY:-none}"
    echo "input_lines=$(wc -l < input.txt)"
    echo "input_sha256=$(sha256sum input.txt | cut -d' ' -f1)"
    tr '[:lower:]' '[:upper:]' < input.txt | sed 's/^/upper: /'
} > result.txt.part
mv result.txt.part result.txt
echo "job done: $(wc -l < result.txt) lines in result.txt"
"""

# Polls `squeue -h -j ID` on the login node: prints each new state, exits 0 once the job has
# left the queue (squeue prints nothing, or no longer knows the id), 3 after the timeout.
POLL_LOOP = r"""job={job}; end=$(( $(date +%s) + {timeout} )); last=
while :; do
    if out=$(squeue -h -j "$job" -o %T 2>&1); then
        [ -z "$out" ] && exit 0
    else
        case $out in *"Invalid job id"*) exit 0 ;; esac
        out="squeue failed: $out"
    fi
    [ "$out" != "$last" ] && echo "$out" && last=$out
    [ "$(date +%s)" -ge "$end" ] && echo "still $out after {timeout} s" >&2 && exit 3
    sleep {poll}
done"""

DEFAULT_INPUT = "hello from the gateway\nthe quick brown fox\njumps over the lazy dog\n"


def dev_state_dir():
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "hpccert-dev")


def say(msg):
    print(f"gateway-demo: {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# two clients, one interface: run(command) -> (status, stdout, stderr), put, get, mkdir, home


class ParamikoSession:
    """A token login with paramiko (keyboard-interactive or password)."""

    def __init__(self, host, port, user, token, method):
        import paramiko

        self.transport = paramiko.Transport((host, port))
        self.transport.start_client(timeout=15)
        if method == "password":
            self.transport.auth_password(user, token, fallback=False)
        else:
            # sshd-gsi asks "Access token: "; paramiko sends a long answer intact
            self.transport.auth_interactive(user, lambda title, instructions, prompts: [token for _ in prompts])
        self.sftp = paramiko.SFTPClient.from_transport(self.transport)

    def run(self, command):
        ch = self.transport.open_session()
        ch.exec_command(command)
        out = ch.makefile("rb").read().decode()
        err = ch.makefile_stderr("rb").read().decode()
        status = ch.recv_exit_status()
        ch.close()
        return status, out, err

    def run_lines(self, command, on_line):
        """Run `command`, handing each line of its output to on_line as it comes."""
        ch = self.transport.open_session()
        ch.exec_command(command)
        for line in ch.makefile("rb"):
            if line.strip():
                on_line(line.decode().rstrip("\n"))
        err = ch.makefile_stderr("rb").read().decode()
        status = ch.recv_exit_status()
        ch.close()
        return status, err

    def home(self):
        return self.sftp.normalize(".")

    def mkdir(self, path):
        self.sftp.mkdir(path, 0o700)

    def put(self, local, remote):
        self.sftp.put(local, remote)

    def get(self, remote, local):
        self.sftp.get(remote, local)

    def close(self):
        self.sftp.close()
        self.transport.close()


class AsyncsshSession:
    """An X.509 login (certificate or RFC 3820 proxy, RFC 6187) with asyncssh, driven from
    synchronous code through one event loop."""

    def __init__(self, host, port, user, key, chain):
        import asyncssh

        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(
            asyncssh.connect(
                host,
                port,
                username=user,
                client_keys=[(key, chain)],
                preferred_auth="publickey",
                known_hosts=None,
                agent_path=None,
                config=[],
            )
        )
        self.sftp = self.loop.run_until_complete(self.conn.start_sftp_client())

    def _do(self, coro):
        return self.loop.run_until_complete(coro)

    def run(self, command):
        r = self._do(self.conn.run(command, check=False))
        return r.exit_status, r.stdout or "", r.stderr or ""

    def run_lines(self, command, on_line):
        """Run `command`, handing each line of its output to on_line as it comes."""

        async def lines():
            process = await self.conn.create_process(command)
            async for line in process.stdout:
                if line.strip():
                    on_line(line.rstrip("\n"))
            err = await process.stderr.read()
            result = await process.wait()
            return result.exit_status, err

        return self._do(lines())

    def home(self):
        return self._do(self.sftp.realpath("."))

    def mkdir(self, path):
        import asyncssh

        self._do(self.sftp.mkdir(path, asyncssh.SFTPAttrs(permissions=0o700)))

    def put(self, local, remote):
        self._do(self.sftp.put(local, remote))

    def get(self, remote, local):
        self._do(self.sftp.get(remote, local))

    def close(self):
        self.sftp.exit()
        self.conn.close()
        self._do(self.conn.wait_closed())
        self.loop.close()


def connect(a):
    user, _, host = a.target.rpartition("@")
    user = user or pwd.getpwuid(os.geteuid()).pw_name
    state = a.state_dir
    if a.auth == "token":
        token_file = a.token or os.path.join(state, "token.jwt")
        with open(token_file) as f:
            token = f.read().strip()
        say(f"token login ({a.token_method}, paramiko) as {user}@{host}:{a.port} with {token_file} ({len(token)} bytes)")
        return ParamikoSession(host, a.port, user, token, a.token_method)
    if a.auth == "proxy":
        # where Globus tools look for it: $X509_USER_PROXY, else /tmp/x509up_u$UID
        proxy = a.proxy or os.environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"
        if not os.path.exists(proxy):
            sys.exit(f"gateway-demo: no proxy at {proxy} (grid-proxy-init -rfc makes one; or --proxy FILE)")
        say(f"X.509 proxy login (RFC 6187, asyncssh) as {user}@{host}:{a.port} with {proxy}")
        return AsyncsshSession(host, a.port, user, proxy, proxy)
    key = a.key or os.path.join(state, "user.key")
    cert = a.cert or os.path.join(state, "user.pem")
    say(f"X.509 certificate login (RFC 6187, asyncssh) as {user}@{host}:{a.port} with {cert}")
    return AsyncsshSession(host, a.port, user, key, cert)


# ---------------------------------------------------------------------------------------------
# the flow


def must(session, command, what):
    status, out, err = session.run(command)
    if status != 0:
        sys.exit(f"gateway-demo: {what} failed (exit {status}): {command}\n{out}{err}")
    return out


def final_state(session, job_id):
    """How the job ended: (source, fields) from `sacct -c` (the job completion log: plain sacct
    needs slurmdbd, and with jobcomp/filetxt only root may run `sacct -c`), else from
    `scontrol show job` (which keeps a finished job for MinJobAge, 300 s by default)."""
    q = shlex.quote(job_id)
    status, out, _ = session.run(f"sacct -c -n -P -j {q} -o JobID,UID,State,ExitCode 2>/dev/null")
    for line in out.splitlines():
        parts = line.split("|")
        if status == 0 and len(parts) == 4 and parts[0] == job_id:
            return "sacct -c", {"uid": parts[1], "state": parts[2], "exit_code": parts[3]}
    status, out, _ = session.run(f"scontrol show job -o {q}")
    if status == 0 and out.strip():
        fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
        uid = fields.get("UserId", "")
        uid = uid[uid.find("(") + 1 : -1] if "(" in uid else uid
        return "scontrol show job", {"uid": uid, "state": fields.get("JobState", ""), "exit_code": fields.get("ExitCode", "")}
    return "none", {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", default="127.0.0.1", help="USER@HOST (default: you@127.0.0.1)")
    ap.add_argument("-p", "--port", type=int, default=2222)
    ap.add_argument("--auth", choices=["token", "x509", "proxy"], default="token")
    ap.add_argument("--state-dir", default=dev_state_dir(), help="sshd-gsi --dev's state directory")
    ap.add_argument("--token")
    ap.add_argument("--token-method", choices=["keyboard-interactive", "password"], default="keyboard-interactive")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--proxy")
    ap.add_argument("--input", help="the input file to upload (default: three lines of text)")
    ap.add_argument("--out", default="gateway-demo-out", help="local directory for the downloads")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for the job")
    ap.add_argument("--poll", type=float, default=1.0, help="seconds between squeue polls")
    ap.add_argument("--require-sbatch", action="store_true", help="fail instead of running the job script directly")
    ap.add_argument("--keep", action="store_true", help="leave the job directory on the login node")
    ap.add_argument("--json", help="write a summary of the run to this file")
    ap.add_argument("--print-job-script", action="store_true", help="print the job script and exit")
    a = ap.parse_args()
    if a.print_job_script:
        print(JOB_SCRIPT, end="")
        return

    os.makedirs(a.out, exist_ok=True)
    local_input = a.input or os.path.join(a.out, "input.txt")
    if not a.input:
        with open(local_input, "w") as f:
            f.write(DEFAULT_INPUT)
    local_job = os.path.join(a.out, "job.sh")
    with open(local_job, "w") as f:
        f.write(JOB_SCRIPT)

    started = time.monotonic()
    session = connect(a)
    summary = {"auth": a.auth}
    try:
        who = must(session, "id -un; command -v sbatch || true", "id").split()
        say(f"logged in as {who[0]}")
        have_sbatch = len(who) > 1
        if not have_sbatch and a.require_sbatch:
            sys.exit("gateway-demo: sbatch not found on the login node (--require-sbatch)")
        home = session.home()
        workdir = posixpath.join(home, f"hpccert-gateway-demo-{uuid.uuid4().hex[:12]}")
        session.mkdir(workdir)
        say(f"job directory {workdir}")
        session.put(local_input, posixpath.join(workdir, "input.txt"))
        session.put(local_job, posixpath.join(workdir, "job.sh"))
        say("uploaded input.txt and job.sh (sftp)")
        w = shlex.quote(workdir)

        if have_sbatch:
            out = must(session, f"sbatch --parsable --chdir={w} --output={w}/job-%j.out {w}/job.sh", "sbatch")
            job_id = out.strip().split(";")[0]
            say(f"submitted batch job {job_id}")
            # poll in one remote loop (one channel and no round trip per poll): a line per
            # state change; done when squeue no longer lists the job
            states = []

            def on_state(line):
                say(f"job {job_id}: {line}")
                states.append(line)

            loop = POLL_LOOP.format(job=shlex.quote(job_id), poll=a.poll, timeout=int(a.timeout))
            status, err = session.run_lines(f"bash -c {shlex.quote(loop)}", on_state)
            if status != 0:
                sys.exit(f"gateway-demo: polling job {job_id} failed (exit {status}): {err}")
            source, end = final_state(session, job_id)
            say(f"job {job_id} left the queue: {end.get('state', '?')} exit {end.get('exit_code', '?')} (from {source})")
            summary.update(mode="sbatch", job_id=job_id, states=states, final_source=source, final=end)
            job_out = f"job-{job_id}.out"
        else:
            say("sbatch not found on the login node: running job.sh directly in the session (no Slurm)")
            status, out, err = session.run(f"cd {w} && bash job.sh > job-direct.out 2>&1")
            say(f"job.sh exited {status}")
            summary.update(mode="direct", job_id=None, states=[], final_source="exit status",
                           final={"state": "COMPLETED" if status == 0 else "FAILED", "exit_code": f"{status}:0"})
            job_out = "job-direct.out"

        local_result = os.path.join(a.out, "result.txt")
        local_job_out = os.path.join(a.out, job_out)
        session.get(posixpath.join(workdir, job_out), local_job_out)
        with open(local_job_out) as f:
            job_output = f.read()
        try:
            session.get(posixpath.join(workdir, "result.txt"), local_result)
        except Exception as e:  # paramiko raises IOError, asyncssh SFTPError
            sys.exit(f"gateway-demo: the job wrote no result.txt ({e}); its output ({local_job_out}):\n{job_output}")
        say(f"downloaded {local_result} and {local_job_out} (sftp)")
        if not a.keep:
            must(session, f"rm -r -- {w}", "removing the job directory")
        with open(local_result) as f:
            result = f.read()
        summary.update(workdir=workdir, result=result, job_output=job_output,
                       local_result=os.path.abspath(local_result), seconds=round(time.monotonic() - started, 2))
    finally:
        session.close()

    print(result, end="")
    say(f"done in {summary['seconds']} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2)
    if summary["final"].get("state") != "COMPLETED":
        sys.exit(f"gateway-demo: the job ended {summary['final'].get('state') or 'in an unknown state'}")


if __name__ == "__main__":
    main()
