"""A small client for OpenAI-compatible chat-completions endpoints (vLLM, llama.cpp, Ollama).

    client = ChatClient(cfg.retrieval.llm)                 # one per process; thread-safe
    reply = client.chat(messages, model="qwen2.5-vl", timeout=5.0, schema=SCHEMA)
    reply.data        # the JSON object the model returned (dict)

HTTP goes through one ``httpx.Client`` (a connection pool, safe to share between threads).
Every way a call can go wrong ends in a ``ChatError`` whose ``kind`` says which:

    timeout     no (complete) answer within the time given
    connection  the endpoint could not be reached
    http        the endpoint answered with an HTTP error status
    too_large   the body exceeded max_reply_bytes (read stops there)
    refused     the model refused (``message.refusal`` or finish_reason ``content_filter``)
    malformed   the body is not a chat completion, or its content is not one JSON object
    request     the request itself could not be encoded (nothing was sent)

Retries are off by default (``max_retries`` = 0); when on, only connection errors, timeouts and
HTTP 5xx are retried, and never past the caller's deadline.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ...config import LlmConfig

_FENCE_RE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class ChatError(Exception):
    """A chat call that gave no usable reply; ``kind`` is one of the module doc's kinds."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass
class ChatReply:
    data: dict  # the JSON object in the reply's content
    content: str  # the raw content text
    model: str  # the model the server says answered
    elapsed_s: float


def validate_llm_config(cfg: LlmConfig, prefix: str = "retrieval.llm") -> None:
    """Raise ConfigError naming the first bad parameter (LlmConfig.check, also run on loading)."""
    cfg.check(prefix)


def extract_json_object(content: str) -> dict:
    """The one JSON object in a reply's content (a ```json fence is allowed); ChatError otherwise."""
    text = content.strip()
    m = _FENCE_RE.match(text)
    if m:
        text = m.group(1)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # some servers wrap the object in prose: take the outermost braces
        a, b = text.find("{"), text.rfind("}")
        data = None
        if 0 <= a < b:
            try:
                data = json.loads(text[a : b + 1])
            except (ValueError, RecursionError):
                data = None
        if data is None:
            raise ChatError("malformed", f"reply content is not JSON: {_excerpt(content)}") from None
    if not isinstance(data, dict):
        raise ChatError("malformed", f"reply content is JSON but not an object: {_excerpt(content)}")
    return data


def _excerpt(text: str, n: int = 80) -> str:
    t = " ".join(str(text).split())
    return repr(t[:n] + ("..." if len(t) > n else ""))


class ChatClient:
    """Chat-completions calls against one endpoint; safe to use from several threads."""

    def __init__(self, cfg: LlmConfig, transport: httpx.BaseTransport | None = None):
        validate_llm_config(cfg)
        self.cfg = cfg
        headers = {"Accept": "application/json"}
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        base = cfg.base_url.strip().rstrip("/") + "/"
        self._http = httpx.Client(
            base_url=base,
            headers=headers,
            timeout=httpx.Timeout(cfg.call_timeout),
            limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections),
            transport=transport,
            trust_env=False,  # a robot's HTTP(S)_PROXY must not reroute a loopback model server
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ one call
    def chat(
        self,
        messages: list[dict],
        *,
        model: str | None = None,
        timeout: float | None = None,
        schema: dict | None = None,
        schema_name: str = "answer",
    ) -> ChatReply:
        """One chat completion whose content must be a JSON object; ChatError on any failure.

        ``timeout``: seconds for the whole call including retries (default: call_timeout).
        """
        cfg = self.cfg
        total = float(cfg.call_timeout if timeout is None else timeout)
        deadline = time.monotonic() + max(total, 0.0)
        body: dict[str, Any] = {
            "model": model or cfg.model,
            "messages": messages,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
            "stream": False,
        }
        if cfg.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif cfg.response_format == "json_schema" and schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": schema, "strict": True},
            }
        try:
            payload = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:  # NaN or an unserialisable value: never sent
            raise ChatError("request", f"request cannot be encoded as JSON: {e}") from None
        attempt = 0
        t0 = time.perf_counter()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChatError("timeout", f"no reply within {total:.2f} s")
            try:
                raw = self._post(payload, left, deadline)
                break
            except ChatError as e:
                retriable = e.kind in ("timeout", "connection") or (e.kind == "http" and e.detail.startswith("5"))
                attempt += 1
                if not retriable or attempt > cfg.max_retries or deadline - time.monotonic() <= 0:
                    raise
        content, served_by = _content_of(raw)
        data = extract_json_object(content)
        return ChatReply(data=data, content=content, model=served_by, elapsed_s=time.perf_counter() - t0)

    def _post(self, payload: bytes, left: float, deadline: float) -> bytes:
        cfg = self.cfg
        limit = int(cfg.max_reply_bytes)
        try:
            with self._http.stream(
                "POST",
                "chat/completions",
                content=payload,
                headers={"Content-Type": "application/json"},
                timeout=httpx.Timeout(left),
            ) as resp:
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ChatError("too_large", f"reply body exceeds {limit} bytes; read stopped there")
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise ChatError("timeout", "reply still arriving when the time ran out")
                body = b"".join(chunks)
                if resp.status_code >= 400:
                    raise ChatError("http", f"{resp.status_code} {resp.reason_phrase}: {_excerpt(body.decode('utf-8', 'replace'))}")
                return body
        except httpx.TimeoutException as e:
            raise ChatError("timeout", f"{type(e).__name__} after {left:.2f} s") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            raise ChatError("connection", f"{type(e).__name__}: {e}") from None
        except httpx.HTTPError as e:
            raise ChatError("connection", f"{type(e).__name__}: {e}") from None


def _content_of(raw: bytes) -> tuple[str, str]:
    """(content text, model) of a chat-completion body; ChatError for anything else."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise ChatError("malformed", f"body is not JSON: {_excerpt(raw.decode('utf-8', 'replace'))}") from None
    if not isinstance(obj, dict):
        raise ChatError("malformed", "body is not a JSON object")
    if "error" in obj and not obj.get("choices"):
        raise ChatError("http", f"endpoint error: {_excerpt(json.dumps(obj['error'])[:200])}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ChatError("malformed", "body has no choices")
    choice = choices[0]
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise ChatError("malformed", "first choice has no message")
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal.strip():
        raise ChatError("refused", _excerpt(refusal, 160))
    if choice.get("finish_reason") == "content_filter":
        raise ChatError("refused", "finish_reason content_filter")
    content = msg.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if not isinstance(content, str) or not content.strip():
        raise ChatError("malformed", "message content is empty")
    model = obj.get("model")
    return content, model if isinstance(model, str) else ""
