#!/usr/bin/env python3
"""End-to-end tests of `forge serve` on the CPU with SmolLM2 (stdlib only,
plus curl and, for one tier, the official `openai` client).

usage: FORGE=build/forge tests/server/run.py      (from the repository root)

Prints one line per check (PASS / FAIL / SKIPPED with the reason) and exits
non-zero if any check failed. SKIPPED never counts as passed.

  - routes: health, models, tokenize/detokenize round trip, metrics names;
  - SSE framing of chat and completion streams, read with curl;
  - the bad-request corpus tests/data/bad-requests/cases.tsv, each with its
    status and an OpenAI error object; the server stays up;
  - a client that disconnects mid-stream (and one mid-buffered request):
    the request ends cancelled, KV usage back to 0;
  - the cancel route, ending a stream with finish_reason "abort";
  - 429 with Retry-After when the queue is full (a second server);
  - the openai client (tests/server/test_openai.py) when importable;
  - SIGTERM with a request in flight: exit 0;
  - the HTTP layer (tests/server/test_http.py): deadlines and connection
    caps against slow clients, authentication, half-closed clients, a
    second signal, CORS, Host and Content-Type.
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

FORGE = os.environ.get("FORGE", "build/forge")
MODELS = os.environ.get("FORGE_MODEL_DIR", "models")
SMOL = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
KEY = "sk-test"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

passed = failed = skipped = 0


def ok(name):
    global passed
    passed += 1
    print(f"PASS    {name}", flush=True)


def bad(name, why=""):
    global failed
    failed += 1
    print(f"FAIL    {name}", flush=True)
    if why:
        print(f"        {why}"[:2000], flush=True)


def skip(name, why):
    global skipped
    skipped += 1
    print(f"SKIPPED {name}: {why}", flush=True)


def check(name, cond, why=""):
    (ok if cond else lambda n: bad(n, why))(name)
    return cond


class Server:
    """forge serve on a free port; stderr goes to a file."""

    def __init__(self, *args):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.p = subprocess.Popen([FORGE, "serve", "-m", SMOL, "--port", "0", "-t", "2", *args],
                                  stdout=subprocess.DEVNULL, stderr=self.log)
        self.port = None
        deadline = time.time() + 60
        while time.time() < deadline and self.port is None:
            m = re.search(r"listening on http://[^:]+:(\d+)", open(self.log.name).read())
            if m:
                self.port = int(m.group(1))
            elif self.p.poll() is not None:
                raise RuntimeError("forge serve exited: " + open(self.log.name).read())
            else:
                time.sleep(0.05)
        while time.time() < deadline:
            if self.request("GET", "/health")[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError("forge serve did not become healthy: " + open(self.log.name).read())

    def request(self, method, path, body=None, auth="key", headers=None, timeout=120):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if auth == "key":
            h["Authorization"] = "Bearer " + KEY
        elif auth == "bad":
            h["Authorization"] = "Bearer wrong-key"
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if body is not None:
            h["Content-Type"] = "application/json"
        try:
            c.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, data, dict(r.getheaders())
        except (ConnectionError, OSError) as e:
            return -1, str(e).encode(), {}
        finally:
            c.close()

    def json(self, method, path, body=None, **kw):
        st, data, h = self.request(method, path, body, **kw)
        try:
            return st, json.loads(data), h
        except ValueError:
            return st, None, h

    def metrics(self):
        st, data, _ = self.request("GET", "/metrics")
        out = {}
        for line in data.decode().splitlines():
            if line.startswith("#") or not line:
                continue
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
        return out

    def metric(self, name, **labels):
        for k, v in self.metrics().items():
            if k.split("{")[0] == "forge:" + name and all(f'{a}="{b}"' in k for a, b in labels.items()):
                return v
        return None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = "timeout"
        return rc

    def stderr(self):
        return open(self.log.name).read()


def is_error_object(body):
    e = body.get("error") if isinstance(body, dict) else None
    return isinstance(e, dict) and all(k in e for k in ("message", "type", "param", "code"))


def open_stream(srv, path, body):
    """A raw socket with a streaming request sent and its response headers read."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    data = json.dumps(body).encode()
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
    return s


def read_until(s, pattern, limit=1 << 20):
    buf = b""
    while not re.search(pattern, buf) and len(buf) < limit:
        b = s.recv(4096)
        if not b:
            break
        buf += b
    return buf


def wait_for(fn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


def idle(srv):
    return (srv.metric("kv_cache_usage_perc") == 0 and srv.metric("num_requests_running") == 0 and
            srv.metric("num_requests_waiting") == 0)


# ---- the tests ------------------------------------------------------------------


def test_routes(srv):
    st, body, _ = srv.json("GET", "/health", auth="none")
    check("GET /health is 200 without a key once loaded", st == 200 and body.get("status") == "ok", f"{st} {body}")
    st, body, _ = srv.json("GET", "/v1/models")
    check("GET /v1/models lists the model", st == 200 and body["object"] == "list" and
          body["data"][0]["id"] == "SmolLM2-135M-Instruct.Q4_1", f"{st} {body}")
    st, body, _ = srv.json("POST", "/tokenize", {"content": "Hello world! <|im_start|>user"})
    check("POST /tokenize equals HF's ids", st == 200 and body["tokens"] == [19556, 905, 17, 216, 1, 4093],
          f"{st} {body}")
    st, body2, _ = srv.json("POST", "/detokenize", {"tokens": [19556, 905, 17]})
    check("POST /detokenize inverts it", st == 200 and body2["content"] == "Hello world!", f"{st} {body2}")
    st, body, h = srv.json("POST", "/v1/completions", {"prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 16,
                                                       "temperature": 0})
    check("POST /v1/completions greedy equals llama.cpp's continuation",
          st == 200 and body["choices"][0]["text"] == " 7, 8, 9, 10, 11" and
          body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 16 and
          body["object"] == "text_completion" and body["id"].startswith("cmpl-") and h.get("X-Request-Id") == body["id"],
          f"{st} {body}")
    st, info, _ = srv.json("GET", "/v1/requests/" + body["id"])
    check("GET /v1/requests/{id} reports a finished request with its counts and timings",
          st == 200 and info["state"] == "finished" and info["completion_tokens"] == 16 and
          info["prompt_tokens"] == 17 and info["time_to_first_token_ms"] > 0 and info["tokens_per_second"] > 0,
          f"{st} {info}")
    text = srv.request("GET", "/metrics")[1].decode()
    names = ["num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "prefix_cache_queries",
             "prefix_cache_hits", "prompt_tokens_total", "generation_tokens_total", "request_success_total",
             "time_to_first_token_seconds_bucket", "inter_token_latency_seconds_bucket",
             "e2e_request_latency_seconds_bucket"]
    missing = [n for n in names if "\nforge:" + n not in "\n" + text]
    gen = srv.metric("generation_tokens_total")
    check("GET /metrics has vLLM's names with the forge: prefix, and they move",
          not missing and gen and gen >= 16 and srv.metric("request_success_total", finished_reason="length") >= 1,
          f"missing {missing}, generation_tokens_total {gen}")


def test_sse(srv):
    """SSE framing as curl sees it: data: lines, blank-line separated, [DONE] last."""
    for path, body, obj in [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8,
                                  "temperature": 0, "stream": True, "stream_options": {"include_usage": True}},
         "chat.completion.chunk"),
        ("/v1/completions", {"prompt": "1, 2, 3,", "max_tokens": 8, "temperature": 0, "stream": True},
         "text_completion"),
    ]:
        name = f"SSE framing of {path} with curl"
        r = subprocess.run(["curl", "-sN", "-D", "-", "-H", "Authorization: Bearer " + KEY, "-H",
                            "Content-Type: application/json", "-d", json.dumps(body),
                            f"http://127.0.0.1:{srv.port}{path}"], capture_output=True, timeout=120)
        raw = r.stdout.decode()
        head, _, events = raw.partition("\r\n\r\n")
        why = ""
        if "content-type: text/event-stream" not in head.lower():
            why = "no text/event-stream content type: " + head
        elif not re.fullmatch(r"(data: [^\n]+\n\n)+", events):
            why = "not a sequence of 'data: ...\\n\\n' events: " + repr(events[:400])
        else:
            datas = [e[6:] for e in events.split("\n\n") if e]
            if datas[-1] != "[DONE]":
                why = "the last event is not [DONE]"
            chunks = [json.loads(d) for d in datas[:-1]]
            if any(c["object"] != obj for c in chunks):
                why = "a chunk's object is not " + obj
            finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
            if finishes[-1] not in ("stop", "length") or any(finishes[:-1]):
                why = f"finish reasons {finishes}"
            if body.get("stream_options") and (chunks[-1]["choices"] != [] or
                                               chunks[-1]["usage"]["completion_tokens"] < 1):
                why = "no usage chunk last: " + json.dumps(chunks[-1])
            if path.endswith("chat/completions") and chunks[0]["choices"][0]["delta"].get("role") != "assistant":
                why = "the first chat chunk does not carry the role"
        check(name, not why, why)


def test_bad_requests(srv):
    cases = []
    for line in open(os.path.join(ROOT, "tests/data/bad-requests/cases.tsv")):
        if line.startswith("#") or not line.strip():
            continue
        status, method, path, auth, *body = line.rstrip("\n").split("\t")
        cases.append((int(status), method, path, auth, body[0] if body else ""))
    wrong = []
    for status, method, path, auth, body in cases:
        if body == "@BIG":
            body = json.dumps({"prompt": "x" * (2 << 20)})
        elif body == "@LONG":
            body = json.dumps({"prompt": "word " * 1100, "max_tokens": 4})
        st, data, headers = srv.request(method, path, body or None, auth=auth)
        try:
            err = json.loads(data)
        except ValueError:
            err = None
        if st != status or not is_error_object(err):
            wrong.append(f"{method} {path} {body[:80]!r}: {st} {data[:200]!r} (wanted {status})")
        if st >= 500:
            wrong.append(f"a 5xx: {method} {path}")
    check(f"{len(cases)} bad requests in tests/data/bad-requests get their status and an OpenAI error object",
          len(cases) >= 40 and not wrong, "\n        ".join(wrong))
    st, _, _ = srv.request("GET", "/health")
    check("the server stays up after the bad requests (health 200)", st == 200 and srv.p.poll() is None, str(st))


def test_disconnect(srv):
    s = open_stream(srv, "/v1/completions", {"prompt": "1, 2, 3,", "max_tokens": 600, "temperature": 0,
                                             "stream": True, "ignore_eos": True})
    buf = read_until(s, rb'"text":"[^"]+"')
    m = re.search(rb'"id":"(cmpl-[0-9a-f]+)"', buf)
    s.close()
    if not m:
        bad("disconnect mid-stream", f"no chunk came: {buf[:300]!r}")
        return
    rid = m.group(1).decode()

    def cancelled():
        st, info, _ = srv.json("GET", "/v1/requests/" + rid)
        return info if st == 200 and info["state"] == "cancelled" else None
    info = wait_for(cancelled)
    check("a client that closes mid-stream: its request shows cancelled", info is not None and
          info["completion_tokens"] < 600, str(info))
    check("... and kv_cache_usage_perc is back to 0 once idle", wait_for(lambda: idle(srv)),
          str(srv.metrics()))
    aborted = srv.metric("request_success_total", finished_reason="abort") or 0
    s = open_stream(srv, "/v1/completions", {"prompt": "1, 2, 3,", "max_tokens": 600, "temperature": 0})
    time.sleep(0.5)
    s.close()
    check("a client that closes during a buffered request: cancelled, KV back to 0",
          wait_for(lambda: idle(srv) and (srv.metric("request_success_total", finished_reason="abort") or 0) > aborted),
          str(srv.metrics()))


def test_cancel(srv):
    s = open_stream(srv, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Count to 1000."}],
                                                  "max_tokens": 800, "temperature": 0, "stream": True})
    buf = read_until(s, rb'"content":"[^"]+"')
    m = re.search(rb'"id":"(chatcmpl-[0-9a-f]+)"', buf)
    if not m:
        bad("the cancel route", f"no chunk came: {buf[:300]!r}")
        s.close()
        return
    rid = m.group(1).decode()
    st, info, _ = srv.json("POST", f"/v1/requests/{rid}/cancel")
    check("POST /v1/requests/{id}/cancel answers the cancelled status", st == 200 and info["state"] == "cancelled",
          f"{st} {info}")
    rest = read_until(s, rb"data: \[DONE\]\n\n")
    s.close()
    check("... and the stream ends with finish_reason abort, then [DONE]",
          b'"finish_reason":"abort"' in rest and b"data: [DONE]" in rest,
          repr(rest[-400:]))
    st, info, _ = srv.json("GET", "/v1/requests/" + rid)
    check("... and GET /v1/requests/{id} shows it cancelled", st == 200 and info["state"] == "cancelled" and
          info["finish_reason"] == "abort", f"{st} {info}")
    check("... and KV usage is back to 0", wait_for(lambda: idle(srv)), str(srv.metrics()))


def test_queue_full():
    srv = Server("--parallel", "1", "--max-queue", "1", "--ctx", "512")
    try:
        st, body, h = srv.json("POST", "/v1/completions", {"prompt": "1, 2, 3,", "max_tokens": 300, "n": 3})
        check("a full queue is 429 with Retry-After", st == 429 and h.get("Retry-After") == "1" and
              is_error_object(body), f"{st} {body} {h}")
        check("... and the server serves on", srv.request("GET", "/health")[0] == 200 and
              wait_for(lambda: idle(srv)), str(srv.metrics()))
    finally:
        rc = srv.stop()
    check("an idle server exits 0 on SIGTERM", rc == 0, f"rc={rc}: {srv.stderr()}")


def test_openai_client(srv):
    try:
        import openai  # noqa: F401
    except ImportError:
        skip("the openai Python client against forge serve", "python3 module openai is not installed "
             "(pip install openai)")
        return
    env = dict(os.environ, FORGE_TEST_URL=f"http://127.0.0.1:{srv.port}/v1", FORGE_TEST_KEY=KEY)
    r = subprocess.run([sys.executable, os.path.join(HERE, "test_openai.py")], env=env, capture_output=True,
                       text=True, timeout=600)
    for line in r.stdout.splitlines():
        if line.startswith("PASS "):
            ok("openai client: " + line[5:].strip())
        elif line.startswith("FAIL "):
            bad("openai client: " + line[5:].strip())
    if r.returncode != 0:
        bad("openai client tests", (r.stdout + r.stderr)[-3000:])


def test_sigterm(srv):
    s = open_stream(srv, "/v1/completions", {"prompt": "1, 2, 3,", "max_tokens": 900, "temperature": 0,
                                             "stream": True})
    read_until(s, rb'"text":"[^"]+"')
    t0 = time.time()
    rc = srv.stop(signal.SIGTERM)
    rest = read_until(s, rb"data: \[DONE\]\n\n")
    s.close()
    check("SIGTERM with a stream in flight: the stream ends, the server exits 0 after its drain",
          rc == 0 and time.time() - t0 < 20 and b"[DONE]" in rest, f"rc={rc} {srv.stderr()[-500:]}")


def test_cli():
    r = subprocess.run([FORGE, "serve", "--help"], capture_output=True, text=True)
    check("forge serve --help", r.returncode == 0 and "usage: forge serve" in r.stdout, r.stderr)
    r = subprocess.run([FORGE, "serve", "--port", "70000"], capture_output=True, text=True)
    check("forge serve --port out of range is a usage error", r.returncode == 2 and "--port" in r.stderr, r.stderr)
    r = subprocess.run([FORGE, "serve", "-m", "/no/such/model.gguf", "--port", "0"], capture_output=True, text=True,
                       timeout=60)
    check("forge serve with a missing model exits 1 naming it", r.returncode == 1 and "/no/such/model.gguf" in r.stderr,
          r.stderr)


def main():
    test_cli()
    if not os.path.exists(SMOL):
        skip("forge serve tests", f"{SMOL} not found; run 'make models'")
        return 0
    try:
        srv = Server("--ctx", "1024", "--parallel", "4", "--api-key", KEY, "--max-body", "1048576", "--drain", "1")
    except RuntimeError as e:
        bad("forge serve starts", str(e))
        return 1
    try:
        for t in (test_routes, test_sse, test_bad_requests, test_disconnect, test_cancel, test_openai_client):
            try:
                t(srv)
            except Exception as e:  # a crash of the test is a failure, not an abort
                bad(t.__name__, repr(e))
            if srv.p.poll() is not None:
                bad("the server is still running after " + t.__name__, srv.stderr()[-2000:])
                return 1
        import test_api_surface  # limits and the OpenAI surface (issue 14)
        test_api_surface.main(sys.modules[__name__], srv)
        test_queue_full()
        test_sigterm(srv)
    finally:
        srv.stop(signal.SIGKILL)
    import test_http  # the HTTP layer: slow clients, auth, half-close, CORS, Host, Content-Type
    test_http.main(sys.modules[__name__])
    return 0


if __name__ == "__main__":
    rc = main()
    print(f"server: {passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed or rc else 0)
