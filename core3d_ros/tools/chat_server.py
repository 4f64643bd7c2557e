"""A small OpenAI-compatible chat-completions server on the loopback, for tests and benchmarks.

    with ChatServer() as srv:                       # a thread; srv.url = http://127.0.0.1:PORT/v1
        srv.script({"verify": Behaviour("garbage")})  # per step; other steps: auto_reply
        ...
        srv.requests                                # what it received (path, headers, body, step)

It answers ``POST .../chat/completions`` like a model server would, and can misbehave on purpose
(``Behaviour.mode``): ``json`` (a JSON object as content, the default), ``text`` (content as
given), ``garbage`` (a body that is not JSON), ``http`` (an error status), ``hang`` (accept,
read, never answer until the server stops), ``refusal`` (message.refusal set), ``huge`` (a
content of ``size`` bytes), ``close`` (drop the connection). ``delay_s`` waits before answering.

The step of a request (parse, verify, orientation, decide: see core/retrieval/llm/) is read
from what any model server receives: the name of its JSON schema (``core3d_NAME``) when
``retrieval.llm.response_format`` is json_schema, else the keys of the request's JSON (the
user message's first text). ``auto_reply`` answers each step plausibly (the rule-based parse
of the request, high confidence for the first candidate, yaw bin 0, the first candidate chosen).

``GET /stats`` returns the server's own time per request (from its handler starting to the last
byte written), which the query benchmark subtracts from the client's wall time.
``python -m core3d_ros.tools.chat_server --delay-ms 200`` serves auto replies (prints
the port on the first line).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

_ID_RE = re.compile(r"candidate id (\d+)")
MAX_REQUEST_BYTES = 64 << 20


@dataclass
class Behaviour:
    mode: str = "json"  # json | text | garbage | http | hang | refusal | huge | close
    content: Any = None  # json: dict (None: auto_reply); text: str
    delay_s: float = 0.0
    status: int = 500  # for mode http
    size: int = 10 << 20  # for mode huge: bytes of content


STEPS = ("parse", "verify", "orientation", "decide")
# the keys of each step's request JSON beside "request" (llm.py): parse has none
_STEP_KEYS = (("candidates", "decide"), ("faces", "orientation"), ("target", "verify"))


def step_of(body: dict) -> str:
    """The core3d step a request serves ("" if none): its JSON schema's name, else its request
    JSON's keys (see the module doc)."""
    try:
        rf = body.get("response_format") or {}
        name = str((rf.get("json_schema") or {}).get("name", "")) if rf.get("type") == "json_schema" else ""
    except AttributeError:
        name = ""
    if name.startswith("core3d_") and name[len("core3d_"):] in STEPS:
        return name[len("core3d_"):]
    request = _request_json(body)
    if "request" not in request:
        return ""
    return next((step for key, step in _STEP_KEYS if key in request), "parse")


def _request_json(body: dict) -> dict:
    """The JSON object of the first user message's first text ({} if there is none)."""
    try:
        msg = next(m for m in body.get("messages") or [] if m.get("role") == "user")
        c = msg.get("content")
        text = c if isinstance(c, str) else next(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
        data = json.loads(text)
    except (StopIteration, AttributeError, TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def user_text(body: dict) -> str:
    """All text of the user message(s), parts joined."""
    out = []
    for m in body.get("messages") or []:
        if m.get("role") != "user":
            continue
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out.extend(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(out)


def image_urls(body: dict) -> list[str]:
    out = []
    for m in body.get("messages") or []:
        c = m.get("content")
        if isinstance(c, list):
            out.extend(p["image_url"]["url"] for p in c if isinstance(p, dict) and p.get("type") == "image_url")
    return out


def candidate_ids(body: dict) -> list[int]:
    """Candidate ids a request offers (verify / orientation parts, or decide's JSON)."""
    text = user_text(body)
    ids = [int(x) for x in _ID_RE.findall(text)]
    if ids:
        return ids
    try:
        return [int(c["id"]) for c in json.loads(text)["candidates"]]
    except (ValueError, KeyError, TypeError):
        return []


def auto_reply(step: str, body: dict) -> dict:
    """A plausible reply for each core3d step (see module doc)."""
    if step == "parse":
        from ..core.retrieval.llm import split_facing
        from ..core.retrieval.parser import QueryError, parse_query

        try:
            req = json.loads(user_text(body))["request"]
            rest, facing = split_facing(req)
            p = parse_query(rest)
            f = parse_query(facing).target_phrase if facing else None
        except (QueryError, ValueError, KeyError, TypeError):
            return {"target": "", "attributes": [], "relations": [], "facing": None}
        return {
            "target": p.target,
            "attributes": list(p.attributes),
            "relations": [
                {"relation": c.relation, "anchors": [{"noun": a.noun, "attributes": list(a.attributes)} for a in c.anchors]}
                for c in p.clauses
            ],
            "facing": {"noun": f.noun, "attributes": list(f.attributes)} if f is not None else None,
            "location": _location_reply(p.location),
        }
    ids = candidate_ids(body)
    if step == "verify":
        return {"candidates": [{"id": i, "confidence": 0.9 if k == 0 else 0.5} for k, i in enumerate(ids)]}
    if step == "orientation":
        return {"orientations": [{"id": i, "yaw_bin": 0} for i in ids]}
    if step == "decide":
        return {"id": ids[0] if ids else None, "reason": "the first candidate fits best"}
    return {}


def _location_reply(loc) -> dict | None:
    if loc is None:
        return None
    w = loc.room_with
    return {"floor": loc.floor_rank, "floor_id": loc.floor_id, "room": loc.room_label or None, "room_id": loc.room_id,
            "room_with": {"noun": w.noun, "attributes": list(w.attributes)} if w is not None else None}


def completion(content: str | None, model: str, refusal: str | None = None) -> dict:
    return {
        "id": "chatcmpl-core3d-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real model servers
    disable_nagle_algorithm = True  # TCP_NODELAY, as real model servers (else a 40 ms delayed-ACK stall)
    server: "_Server"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self) -> None:  # noqa: N802
        owner = self.server.owner
        if self.path.startswith("/stats"):
            with owner.lock:
                data = {"server_s": list(owner.server_s), "steps": list(owner.steps)}
                if "reset=1" in self.path:
                    owner.server_s.clear()
                    owner.steps.clear()
            self._send(200, json.dumps(data).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802
        t0 = time.perf_counter()
        owner = self.server.owner
        n = int(self.headers.get("Content-Length") or 0)
        if not self.path.rstrip("/").endswith("chat/completions") or n > MAX_REQUEST_BYTES:
            self._send(404 if n <= MAX_REQUEST_BYTES else 413, b'{"error": {"message": "bad request"}}')
            return
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw)
        except ValueError:
            self._send(400, b'{"error": {"message": "request is not JSON"}}')
            return
        step = step_of(body)
        b = owner.behaviour(step, body)
        if owner.record:
            with owner.lock:
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body, "step": step})
        if b.delay_s > 0:
            owner.stopping.wait(b.delay_s)
        model = str(body.get("model", ""))
        if b.mode == "hang":
            owner.stopping.wait()
            self.close_connection = True
            return
        if b.mode == "close":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if b.mode == "http":
            self._send(b.status, json.dumps({"error": {"message": "server error", "code": b.status}}).encode())
        elif b.mode == "garbage":
            self._send(200, b"<html>this is not json \x00\xff</html>", "text/html")
        elif b.mode == "refusal":
            self._send(200, json.dumps(completion(None, model, refusal="I cannot help with that.")).encode())
        elif b.mode == "huge":
            self._send(200, json.dumps(completion("x" * int(b.size), model)).encode())
        elif b.mode == "text":
            self._send(200, json.dumps(completion(str(b.content), model)).encode())
        else:
            content = b.content if b.content is not None else auto_reply(step, body)
            self._send(200, json.dumps(completion(json.dumps(content), model)).encode())
        with owner.lock:
            owner.server_s.append(time.perf_counter() - t0)
            owner.steps.append(step)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "ChatServer"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that gave up (timeout, oversized reply) resets the connection mid-write:
        # counted, not printed
        with self.owner.lock:
            self.owner.errors.append(f"{sys.exc_info()[0].__name__}: {sys.exc_info()[1]}")


class ChatServer:
    """See the module doc. ``delay_s``: default delay of every reply."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, delay_s: float = 0.0, record: bool = True):
        self.delay_s = float(delay_s)
        self.record = record
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.server_s: list[float] = []
        self.steps: list[str] = []
        self.errors: list[str] = []  # exceptions in handlers (mostly clients that hung up)
        self.stopping = threading.Event()
        self._script: dict[str, Behaviour] = {}
        self._responder: Callable[[str, dict], Behaviour] | None = None
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, behaviours: dict[str, Behaviour] | None = None, responder: Callable[[str, dict], Behaviour] | None = None) -> None:
        """Per-step behaviours (steps not named: auto replies), or a function of (step, body)."""
        with self.lock:
            self._script = dict(behaviours or {})
            self._responder = responder

    def behaviour(self, step: str, body: dict) -> Behaviour:
        with self.lock:
            if self._responder is not None:
                return self._responder(step, body)
            b = self._script.get(step)
        return b if b is not None else Behaviour(delay_s=self.delay_s)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.errors.clear()
            self.server_s.clear()
            self.steps.clear()

    def start(self) -> "ChatServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="chat_server")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ChatServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="OpenAI-compatible test chat server (auto replies)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    srv = ChatServer(port=args.port, delay_s=args.delay_ms / 1000.0, record=False)
    print(srv.port, flush=True)
    try:
        srv._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stopping.set()
        srv._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
