#!/usr/bin/env python3
"""Summarise bench/compare-openssh.sh measurements: a table on stdout and a JSON file.

    report.py RUNS.jsonl META.json OUT.json

RUNS.jsonl: one line per measurement {"server": S, "mode": M, "repeat": R, "result": {...}}.
Every metric is the median over the repeats; ratios are sshd-gsi / OpenSSH (stock), and
sshd-gsi / OpenSSH with TCP_NODELAY preloaded (see compare-openssh.sh).
"""
import json
import statistics
import sys

SERVERS = [("openssh", "OpenSSH"), ("openssh-nodelay", "OpenSSH+NODELAY"),
           ("gsi-x509", "sshd-gsi (x509)"),
           ("gsi-token", "sshd-gsi (token)")]
# (key, label, mode, field, better)
METRICS = [
    ("login_seq_rate", "logins/s, sequential (`true`)", "login-seq", "logins_per_s", "higher"),
    ("login_seq_p50", "login latency p50 ms, sequential", "login-seq", "p50_ms", "lower"),
    ("login_seq_p99", "login latency p99 ms, sequential", "login-seq", "p99_ms", "lower"),
    ("login_par_rate", "logins/s, parallel", "login-par", "logins_per_s", "higher"),
    ("login_par_p50", "login latency p50 ms, parallel", "login-par", "p50_ms", "lower"),
    ("login_par_p99", "login latency p99 ms, parallel", "login-par", "p99_ms", "lower"),
    ("upload", "upload MiB/s (cat > /dev/null)", "upload", "mib_per_s", "higher"),
    ("download", "download MiB/s (head -c /dev/zero)", "download", "mib_per_s", "higher"),
    ("idle_rss", "RSS KiB per idle session", "idle", "rss_kib_per_session", "lower"),
    ("idle_pss", "PSS KiB per idle session", "idle", "pss_kib_per_session", "lower"),
]


def main():
    runs_path, meta_path, out_path = sys.argv[1:4]
    with open(meta_path) as f:
        meta = json.load(f)
    runs = [json.loads(line) for line in open(runs_path) if line.strip()]
    values, raw = {}, {}
    for key, _, mode, field, _ in METRICS:
        for s, _ in SERVERS:
            xs = [r["result"][field] for r in runs
                  if r["server"] == s and r["mode"] == mode
                  and r["result"].get(field) is not None]
            raw[(key, s)] = xs
            values[(key, s)] = statistics.median(xs) if xs else None
    errors = {s: sum(r["result"].get("errors", 0) for r in runs if r["server"] == s)
              for s, _ in SERVERS}

    def fmt(v):
        if v is None:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"

    def ratio(key, s, base="openssh"):
        a, b = values[(key, s)], values[(key, base)]
        return None if a is None or not b else a / b

    pairs = [("gsi-x509", "openssh"), ("gsi-token", "openssh"),
             ("gsi-x509", "openssh-nodelay"), ("gsi-token", "openssh-nodelay")]
    head = ["metric", *[label for _, label in SERVERS], "x509/OSSH", "token/OSSH",
            "x509/OSSH+ND", "token/OSSH+ND", "better"]
    rows = []
    for key, label, _, _, better in METRICS:
        rs = [ratio(key, a, b) for a, b in pairs]
        rows.append([label, *[fmt(values[(key, s)]) for s, _ in SERVERS],
                     *["-" if r is None else f"{r:.2f}" for r in rs], better])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(head))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    print(f"\nmedians over {meta['repeats']} repeat(s); login errors: "
          + ", ".join(f"{s}={errors[s]}" for s, _ in SERVERS))
    ciphers = sorted({r["result"].get("cipher") for r in runs if r["result"].get("cipher")})
    print(f"ciphers negotiated: {', '.join(ciphers) or '?'}")

    out = {
        "meta": meta,
        "metrics": {
            key: {"label": label, "better": better,
                  **{s: values[(key, s)] for s, _ in SERVERS},
                  "samples": {s: raw[(key, s)] for s, _ in SERVERS},
                  "ratio_x509": ratio(key, "gsi-x509"), "ratio_token": ratio(key, "gsi-token"),
                  "ratio_x509_nodelay": ratio(key, "gsi-x509", "openssh-nodelay"),
                  "ratio_token_nodelay": ratio(key, "gsi-token", "openssh-nodelay")}
            for key, label, _, _, better in METRICS
        },
        "errors": errors,
        "ciphers": ciphers,
        "runs": runs,
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"written: {out_path}")


if __name__ == "__main__":
    main()
