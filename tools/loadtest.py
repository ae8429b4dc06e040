#!/usr/bin/env python3
"""Load test for forge serve (stdlib only): N streamed chat requests at a
given concurrency, a share of them disconnecting after their first token.

usage:
  tools/loadtest.py --forge build/forge -m MODEL [--serve-args "..."]   # starts a server on a free port
  tools/loadtest.py --url http://127.0.0.1:8080 [--pid PID]            # an existing server

Reports: HTTP status counts (zero 5xx expected), whether the server
survived, p50/p99 time to first token, generated tokens per second over the
run (tokens from the usage of the requests that completed, plus the tokens
the disconnected ones received), the server's RSS before, at peak and after
(with --pid, or the server it started), and the KV usage / running / waiting
gauges once idle. Exits 1 if a 5xx came, the server died, or KV usage did
not return to 0.
"""
import argparse
import http.client
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

TOPICS = ["the sea", "a robot", "autumn", "a lost key", "mountains", "a city at night", "bread", "a violin",
          "rain", "a library", "the moon", "a train journey", "a garden", "snow", "a lighthouse", "coffee"]


def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def metrics(host, port, key):
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            out[name.split("{")[0]] = float(v) if name.split("{")[0] not in out else out[name.split("{")[0]]
    return out


def one(host, port, key, i, disconnect, max_tokens, res, lock, ignore_eos=False):
    req = {
        "model": "x", "messages": [{"role": "user", "content": f"Write a short poem about {random.choice(TOPICS)}."}],
        "max_tokens": max_tokens, "temperature": 0.8, "seed": i, "stream": True,
        "stream_options": {"include_usage": True}}
    if ignore_eos:
        req["ignore_eos"] = True  # forge's extension: every request generates max_tokens
    body = json.dumps(req)
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = "Bearer " + key
    t0 = time.time()
    rec = {"status": None, "ttft": None, "tokens": 0, "disconnected": False, "error": None}
    c = http.client.HTTPConnection(host, port, timeout=600)
    try:
        c.request("POST", "/v1/chat/completions", body=body, headers=h)
        r = c.getresponse()
        rec["status"] = r.status
        if r.status != 200:
            r.read()
        else:
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                ev = json.loads(data)
                if ev.get("usage"):
                    rec["tokens"] = ev["usage"]["completion_tokens"]
                for ch in ev.get("choices", []):
                    if ch.get("delta", {}).get("content"):
                        if rec["ttft"] is None:
                            rec["ttft"] = time.time() - t0
                        rec["tokens"] += 0
                        if disconnect:
                            rec["disconnected"] = True
                            rec["tokens"] = 1
                            raise StopIteration
    except StopIteration:
        pass
    except Exception as e:  # noqa: BLE001 - any failure is counted
        rec["error"] = repr(e)
    finally:
        c.close()
    with lock:
        res.append(rec)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--forge")
    ap.add_argument("-m", "--model")
    ap.add_argument("--serve-args", default="")
    ap.add_argument("--api-key", default=os.environ.get("FORGE_API_KEY", ""))
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--disconnect", type=float, default=0.2, help="share of requests that leave after a token")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--ignore-eos", action="store_true", help="generate max_tokens whatever the model says")
    ap.add_argument("--passes", type=int, default=1, help="run the load this many times against one server "
                    "(RSS after each pass: it should level off)")
    a = ap.parse_args()

    proc = None
    if a.forge:
        log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        cmd = [a.forge, "serve", "--port", "0"] + (["-m", a.model] if a.model else []) + shlex.split(a.serve_args)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        port = None
        for _ in range(600):
            m = re.search(r"listening on http://[^:]+:(\d+)", open(log.name).read())
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.1)
        host, pid = "127.0.0.1", proc.pid
    else:
        u = urllib.parse.urlparse(a.url or "http://127.0.0.1:8080")
        host, port, pid = u.hostname, u.port or 80, a.pid
    for _ in range(600):
        try:
            c = http.client.HTTPConnection(host, port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)

    rss0 = rss_kb(pid) if pid else None
    peak = [rss0 or 0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            v = rss_kb(pid) if pid else None
            if v:
                peak[0] = max(peak[0], v)
            time.sleep(0.2)
    threading.Thread(target=watch, daemon=True).start()

    random.seed(1)
    plan = [random.random() < a.disconnect for _ in range(a.requests)]
    for p in range(a.passes):
        res, lock, nxt = [], threading.Lock(), [0]

        def worker():
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= a.requests:
                    return
                one(host, port, a.api_key, i, plan[i], a.max_tokens, res, lock, a.ignore_eos)
        t0 = time.time()
        ts = [threading.Thread(target=worker) for _ in range(a.concurrency)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.time() - t0
        if a.passes > 1:
            v = rss_kb(pid) if pid else None
            print(f"pass {p + 1}: {len(res)} requests in {wall:.1f} s, "
                  f"{sum(r['tokens'] for r in res) / wall:.1f} tokens/s"
                  + (f", server RSS {v / 1024:.1f} MB" if v else ""), flush=True)

    idle = None
    for _ in range(200):
        m = metrics(host, port, a.api_key)
        idle = (m.get("forge:kv_cache_usage_perc"), m.get("forge:num_requests_running"),
                m.get("forge:num_requests_waiting"))
        if idle == (0.0, 0.0, 0.0):
            break
        time.sleep(0.1)
    time.sleep(1)
    stop.set()
    rss1 = rss_kb(pid) if pid else None
    alive = proc.poll() is None if proc else True

    statuses = {}
    for r in res:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    n5xx = sum(v for k, v in statuses.items() if k and k >= 500)
    errors = [r["error"] for r in res if r["error"]]
    ttft = [r["ttft"] for r in res if r["ttft"] is not None]
    tokens = sum(r["tokens"] for r in res)
    print(f"requests {len(res)} at concurrency {a.concurrency}, {sum(plan)} disconnecting after the first token, "
          f"max_tokens {a.max_tokens}")
    print(f"statuses {statuses}; 5xx {n5xx}; client errors {len(errors)}{' ' + errors[0] if errors else ''}")
    print(f"server alive: {alive}")
    print(f"TTFT p50 {pct(ttft, 50) * 1e3:.0f} ms, p99 {pct(ttft, 99) * 1e3:.0f} ms ({len(ttft)} requests)")
    print(f"wall {wall:.1f} s; generated {tokens} tokens: {tokens / wall:.1f} tokens/s; "
          f"{len(res) / wall:.2f} requests/s")
    if rss0:
        print(f"server RSS: before {rss0 / 1024:.1f} MB, peak {peak[0] / 1024:.1f} MB, after {rss1 / 1024:.1f} MB")
    print(f"after: kv_cache_usage_perc {idle[0]}, running {idle[1]}, waiting {idle[2]}")
    if proc:
        proc.terminate()
        rc = proc.wait(60)
        print(f"server exit on SIGTERM: {rc}")
        alive = alive and rc == 0
    sys.exit(0 if n5xx == 0 and alive and idle == (0.0, 0.0, 0.0) and not errors else 1)


if __name__ == "__main__":
    main()
