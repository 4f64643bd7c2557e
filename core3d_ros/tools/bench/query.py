"""``core3d bench query``: query latency (``core3d bench query --objects 1000 10000 --json OUT``).

Builds random MapSnapshots (random unit embeddings, a share of them near the text embeddings of
"mug" / "table" / ... with mugs placed on tables, so relation checks do real work) and measures
``QueryEngine.answer`` latency:

- cached:   the text embeddings are in the encoder's LRU cache (the steady state of a planner
            repeating queries);
- uncached: the encoder's text cache is cleared before every query, so each answer includes
            text encoding. With the default fake encoder that costs almost nothing; pass a real
            encoder (e.g. open_clip, even with random weights) to time a real text tower.

The snapshot index (stacked embeddings, boxes) is built once per snapshot before timing and
reported separately as ``index_build_ms``.
"""
from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...config import RetrievalConfig
from ...core.objects import MapSnapshot, ObjectInfo, OrientedBox
from ...core.retrieval.engine import QueryEngine

DEFAULT_QUERIES = (
    "the mug on the table",
    "the red chair near the window",
    "the largest box",
    "a cup between the plate and the laptop",
)
_CLASSES = ("mug", "table", "chair", "window", "box", "cup", "plate", "laptop")


class FakeTextEncoder:
    """Deterministic text encoder with an LRU cache; ``semantic`` is True (benchmarks/tests only).

    A text maps to a pseudo-random unit vector seeded by its CRC32. ``cost_ms`` adds a busy wait
    per uncached batch, to imitate a real text tower.
    """

    name = "fake"

    def __init__(self, dim: int = 512, cache_size: int = 1024, cost_ms: float = 0.0, semantic: bool = True):
        self.dim = int(dim)
        self.semantic = semantic
        self.cache_size = int(cache_size)
        self.cost_ms = float(cost_ms)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def vector(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(text.encode("utf-8", "replace")))
        v = rng.standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        missed = False
        for t in texts:
            e = self._cache.get(t)
            if e is None:
                missed = True
                e = self.vector(t)
                self._cache[t] = e
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(t)
            out.append(e)
        if missed and self.cost_ms > 0:
            end = time.perf_counter() + self.cost_ms / 1000.0
            while time.perf_counter() < end:
                pass
        return np.stack(out) if out else np.zeros((0, self.dim), np.float32)

    def clear_text_cache(self) -> None:
        self._cache.clear()


def random_snapshot(
    n: int,
    dim: int = 512,
    seed: int = 0,
    encoder: Any = None,
    template: str = "a photo of a {}",
    points_per_object: int = 24,
    views: bool = False,
) -> MapSnapshot:
    """A random map of ``n`` objects spread over a floor of about 1 m^2 per object.

    Every 8th object is a table with a mug on it; another share of objects get embeddings close
    to the text embeddings of common classes (from ``encoder``, default FakeTextEncoder).
    """
    rng = np.random.default_rng(seed)
    # best views (``views``): a pool of 16 random crops shared by reference (memory stays small)
    pool = [rng.integers(0, 256, (48 + 8 * j, 64, 3), dtype=np.uint8) for j in range(16)] if views else []
    enc = encoder or FakeTextEncoder(dim)
    class_vec = {c: np.asarray(enc.encode_text([template.replace("{}", c)])[0], np.float32) for c in _CLASSES}
    side = max(np.sqrt(n), 2.0)
    objs: list[ObjectInfo] = []
    i = 0
    while len(objs) < n:
        kind = "table" if i % 8 == 0 else ("mug" if i % 8 == 1 else None)
        if kind == "table":
            size = np.array([rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.8)])
            centre = np.array([rng.uniform(0, side), rng.uniform(0, side), size[2] / 2])
            last_table = (centre, size)
        elif kind == "mug":
            tc, ts = last_table
            size = np.array([0.08, 0.08, 0.1])
            off = (rng.uniform(-0.3, 0.3, 2) * ts[:2])
            centre = np.array([tc[0] + off[0], tc[1] + off[1], ts[2] + 0.05])
        else:
            size = rng.uniform(0.05, 1.2, 3)
            centre = np.array([rng.uniform(0, side), rng.uniform(0, side), size[2] / 2 + rng.choice([0.0, 0.75])])
        pts = (centre + (rng.random((points_per_object, 3)) - 0.5) * size).astype(np.float32)
        cols = rng.integers(0, 256, (points_per_object, 3), dtype=np.uint8)
        if kind is None and rng.random() < 0.3:
            kind = _CLASSES[rng.integers(2, len(_CLASSES))]
        if kind is not None:
            e = class_vec[kind] + 0.35 * rng.standard_normal(class_vec[kind].shape[0]).astype(np.float32) / np.sqrt(
                class_vec[kind].shape[0]
            )
        else:
            e = rng.standard_normal(class_vec["mug"].shape[0]).astype(np.float32)
        e = (e / np.linalg.norm(e)).astype(np.float32)
        box = OrientedBox(centre.astype(np.float64), np.eye(3), size.astype(np.float64))
        objs.append(
            ObjectInfo(
                id=len(objs) + 1, points=pts, colors=cols, box=box, num_observations=3,
                first_seen=0.0, last_seen=1.0, embedding=e, label=kind or "",
                best_view=pool[len(objs) % len(pool)] if pool else None,
            )
        )
        i += 1
    return MapSnapshot(objects=objs, voxel_size=0.025, stamp=float(seed), frames=1)


class _TimingOnly:
    """Presents an encoder as semantic so that the semantic path is timed (never for answers)."""

    def __init__(self, encoder: Any):
        self._enc = encoder
        self.semantic = True
        self.name = getattr(encoder, "name", type(encoder).__name__)

    def encode_text(self, texts):
        return self._enc.encode_text(texts)

    def clear_text_cache(self):
        clear = getattr(self._enc, "clear_text_cache", None)
        if clear is not None:
            clear()


def _pct(xs: list[float], q: float) -> float | None:
    """Percentile in milliseconds; None when nothing was measured."""
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else None


def bench_query(
    num_objects: Sequence[int],
    repeats: int = 200,
    dim: int = 512,
    seed: int = 0,
    encoder: Any = None,
    queries: Sequence[str] = DEFAULT_QUERIES,
    cfg: RetrievalConfig | None = None,
) -> dict:
    """p50/p99 latency (ms) of QueryEngine.answer per map size, text cached and uncached.

    ``encoder``: None for FakeTextEncoder(dim); or any object with ``encode_text`` (its output
    dimension overrides ``dim``; a non-semantic one is timed on the semantic path anyway).
    Returns ``{"objects": {n: {"cached_p50_ms", "cached_p99_ms", "uncached_p50_ms",
    "uncached_p99_ms", "cached_cpu_p50_ms", "cached_cpu_p99_ms", "index_build_ms"}},
    "repeats", "dim", "encoder", "queries"}`` (wall-clock milliseconds; the cpu entries are
    the calling thread's CPU time, which a busy machine inflates less).
    """
    cfg = cfg or RetrievalConfig()
    if encoder is None:
        enc: Any = FakeTextEncoder(dim)
    else:
        enc = _TimingOnly(encoder)
        dim = int(np.asarray(enc.encode_text(["a photo of a mug"])).shape[1])
    can_clear = callable(getattr(enc, "clear_text_cache", None))
    out: dict[str, Any] = {
        "objects": {},
        "repeats": int(repeats),
        "dim": int(dim),
        "encoder": getattr(enc, "name", type(enc).__name__),
        "queries": list(queries),
    }
    for n in num_objects:
        n = int(n)
        snap = random_snapshot(n, dim=dim, seed=seed, encoder=enc, template=cfg.text_template)
        eng = QueryEngine(cfg, enc)
        t0 = time.perf_counter()
        eng.index(snap)
        build = time.perf_counter() - t0
        for q in queries:  # warm-up: text cache, lazily refined geometry, colours
            eng.answer(snap, q)
        cached: list[float] = []
        cached_cpu: list[float] = []  # this thread's CPU time: robust to a busy machine
        for r in range(repeats):
            q = queries[r % len(queries)]
            c = time.thread_time()
            t = time.perf_counter()
            eng.answer(snap, q)
            cached.append(time.perf_counter() - t)
            cached_cpu.append(time.thread_time() - c)
        uncached: list[float] = []
        if can_clear:
            for r in range(repeats):
                q = queries[r % len(queries)]
                enc.clear_text_cache()
                t = time.perf_counter()
                eng.answer(snap, q)
                uncached.append(time.perf_counter() - t)
        out["objects"][n] = {
            "cached_p50_ms": _pct(cached, 50),
            "cached_p99_ms": _pct(cached, 99),
            "uncached_p50_ms": _pct(uncached, 50),
            "uncached_p99_ms": _pct(uncached, 99),
            "cached_cpu_p50_ms": _pct(cached_cpu, 50),
            "cached_cpu_p99_ms": _pct(cached_cpu, 99),
            "index_build_ms": build * 1000.0,
        }
    return out


LLM_QUERIES = (
    "the mug on the table",
    "the chair facing the table",
    "the largest box",
    "the red chair near the window",
)


def bench_query_llm(
    num_objects: Sequence[int],
    delay_ms: float = 200.0,
    repeats: int = 40,
    dim: int = 512,
    seed: int = 0,
    queries: Sequence[str] = LLM_QUERIES,
    cfg: RetrievalConfig | None = None,
) -> dict:
    """Overhead core3d adds to a query with all model steps on, beyond the model server's time.

    The test chat server (tools/chat_server.py, auto replies, every reply delayed by ``delay_ms``) runs
    in its own process, so that its threads do not share this interpreter's lock. For each query,
    ``overhead = wall time of LlmRetriever.answer - sum of the server's own time per request``
    (the server measures each request from its handler starting to the last byte written and
    reports it on GET /stats). The overhead thus covers the rule-based ranking, prompt and image
    encoding (JPEG, base64; the encoded-view cache is cleared before every query, so this is the
    cold path), JSON, HTTP on the loopback and reply checking. The rule-based
    ``QueryEngine.answer`` alone is timed on the same queries in the same run (``rule_*``).
    ``overhead_cpu_*``: the querying thread's CPU time per query (all of core3d's work runs in
    that thread), which scheduling delays on a busy machine do not inflate.
    Returns ``{"objects": {n: {...}}, "delay_ms", "repeats", "queries", "target_p99_overhead_ms"}``.
    """
    import dataclasses
    import os
    import subprocess
    import sys

    import httpx

    from ...core.retrieval.llm import LlmRetriever

    base = cfg or RetrievalConfig()
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])  # the folder that holds core3d_ros: the server runs this code
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "core3d_ros.tools.chat_server", "--delay-ms", str(float(delay_ms))],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    out: dict[str, Any] = {
        "objects": {}, "delay_ms": float(delay_ms), "repeats": int(repeats), "queries": list(queries),
        "target_p99_overhead_ms": 25.0,
    }
    try:
        line = proc.stdout.readline() if proc.stdout is not None else ""
        if not line.strip().isdigit():
            raise RuntimeError(f"chat server did not start (said {line!r})")
        url = f"http://127.0.0.1:{int(line)}/v1"
        llm = dataclasses.replace(base.llm, enabled=True, base_url=url, model="bench", call_timeout=10.0, query_budget=30.0)
        rcfg = dataclasses.replace(base, llm=llm)
        enc = FakeTextEncoder(dim)
        with httpx.Client(trust_env=False) as stats:
            for n in num_objects:
                n = int(n)
                snap = random_snapshot(n, dim=dim, seed=seed, encoder=enc, template=rcfg.text_template, views=True)
                eng = QueryEngine(rcfg, enc)
                retr = LlmRetriever(eng, llm)
                eng.index(snap)
                for q in queries:  # warm-up: caches, connections
                    retr.answer(snap, q)
                    eng.answer(snap, q)
                stats.get(url.replace("/v1", "/stats?reset=1"))
                wall: list[float] = []
                over: list[float] = []
                rule: list[float] = []
                cpu: list[float] = []  # the querying thread's CPU time: what a busy machine inflates less
                calls: list[int] = []
                failed: dict[str, int] = {}
                for r in range(repeats):
                    q = queries[r % len(queries)]
                    t = time.perf_counter()
                    eng.answer(snap, q)
                    rule.append(time.perf_counter() - t)
                    retr.clear_view_cache()  # cold: every candidate's view is encoded again
                    c = time.thread_time()
                    t = time.perf_counter()
                    ans = retr.answer(snap, q)
                    w = time.perf_counter() - t
                    cpu.append(time.thread_time() - c)
                    srv = stats.get(url.replace("/v1", "/stats?reset=1")).json()["server_s"]
                    wall.append(w)
                    over.append(w - sum(srv))
                    calls.append(len(srv))
                    for st in ans.stages:
                        if st.status == "failed":
                            failed[st.name] = failed.get(st.name, 0) + 1
                retr.close()
                out["objects"][n] = {
                    "overhead_p50_ms": _pct(over, 50),
                    "overhead_p99_ms": _pct(over, 99),
                    "overhead_max_ms": _pct(over, 100),
                    "overhead_cpu_p50_ms": _pct(cpu, 50),
                    "overhead_cpu_p99_ms": _pct(cpu, 99),
                    "wall_p50_ms": _pct(wall, 50),
                    "wall_p99_ms": _pct(wall, 99),
                    "rule_p50_ms": _pct(rule, 50),
                    "rule_p99_ms": _pct(rule, 99),
                    "model_calls_per_query": float(np.mean(calls)) if calls else 0.0,
                    "failed_steps": failed,
                }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out
