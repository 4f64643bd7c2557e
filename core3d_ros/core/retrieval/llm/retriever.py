"""CORE-3D's model steps of retrieval, through an OpenAI-compatible chat-completions endpoint.

    retriever = LlmRetriever(QueryEngine(cfg.retrieval, encoder), cfg.retrieval.llm)
    answer = retriever.answer(snapshot, "the chair facing the tv", top_k=5)
    answer.stages      # [QueryStage(name, status ok|failed|skipped, detail, elapsed_ms), ...]
    answer.reason      # the model's reason for its choice ("" without a decide step)

Steps (each switched by config; every one is optional and may fail on its own):

1. parse        the LLM turns the query into target / attributes / relations / facing anchor,
                as JSON checked against PARSE_SCHEMA, then into the ParsedQuery the rule-based
                parser fills. A reply that does not fit is a failed step: the rule-based parse is
                used instead.
2. verify       the VLM sees the top-K candidates (``candidates``), each as its stored best view
                with a box drawn around the object, and gives each a confidence in [0, 1];
                score x ((1 - verify_weight) + verify_weight x confidence).
3. orientation  only for "facing" queries ("the chair facing the TV"): per candidate, the VLM
                gets the best view and a top-down plan drawn from the stored boxes (the
                candidate's footprint, numbered yaw-grid arrows, the top anchor objects) and picks
                the arrow its front points along; core3d scores how well that direction points at
                the anchors. The map stores one best view per object and no camera pose for it,
                so the model judges the front from appearance and the plan only: approximate.
4. decide       the LLM picks one candidate (or none) and gives a short reason; an id that is not
                among the candidates is a failed step.

Context is bounded: at most ``candidates`` targets and ``anchors`` anchor objects per relation are
sent, whatever the size of the map; the per-query lookups use the engine's cached index.

Fallback: a timeout, HTTP error, refusal, malformed or oversized reply fails that step only; the
answer is then the rule-based ranking (with whatever earlier steps contributed), and ``stages``
says which steps ran, which failed and why. The query's text stays data: it is sent as a JSON
string, the system prompt says so, and nothing the model returns is used unless it fits the
schema and names objects that were offered.
"""
from __future__ import annotations

import json
import math
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ....config import LlmConfig
from ...objects import MapSnapshot, ObjectInfo
from ..engine import QueryAnswer, QueryEngine, QueryHit, QueryStage, SnapshotIndex
from ..llm_client import ChatClient, ChatError
from ..parser import ParsedQuery, Phrase, QueryError, parse_query
from .drawing import ViewCache, data_url, plan_view
from .hierarchy import decomposition, estimate_tokens, fit_budget, scene_context, text_of
from .parse import parsed_from_reply, phrase_query, split_facing
from .prompts import DECIDE_PROMPT, ORIENT_PROMPT, PARSE_PROMPT, VERIFY_PROMPT
from .schemas import DECIDE_SCHEMA, ORIENTATION_SCHEMA, PARSE_SCHEMA, VERIFY_SCHEMA, StepFailed, check_reply

STEPS = ("parse", "verify", "orientation", "decide")
_MIN_CALL_S = 0.05  # a step with less time left than this is skipped
_MAX_REASON = 300


@dataclass
class _Run:
    """State of one query through the steps."""

    cfg: LlmConfig
    deadline: float
    text: str = ""  # the query as received
    stages: list[QueryStage] = field(default_factory=list)
    anchors: dict = field(default_factory=dict)  # phrase -> (rows, scores), found once per query

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self) -> float:
        return min(float(self.cfg.call_timeout), self.left())

    def add(self, name: str, status: str, detail: str, t0: float) -> None:
        self.stages.append(QueryStage(name, status, detail, (time.perf_counter() - t0) * 1e3))


class LlmRetriever:
    """The rule-based QueryEngine plus the model steps; thread-safe (see module doc)."""

    def __init__(self, engine: QueryEngine, cfg: LlmConfig, client: ChatClient | None = None):
        cfg.check()
        self.engine = engine
        self.cfg = cfg
        self.client = client or ChatClient(cfg)
        self._rows: "weakref.WeakKeyDictionary[SnapshotIndex, dict[int, int]]" = weakref.WeakKeyDictionary()
        self._rows_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(int(cfg.max_concurrent_queries))
        self._views = ViewCache()

    @property
    def semantic(self) -> bool:
        return self.engine.semantic

    def close(self) -> None:
        self.client.close()

    def clear_view_cache(self) -> None:
        """Forget encoded best views (benchmarks time the cold path with it)."""
        self._views.clear()

    # ------------------------------------------------------------------ API
    def answer(
        self,
        snapshot: MapSnapshot,
        text: str,
        top_k: int | None = None,
        viewpoint: np.ndarray | None = None,
        graph: Any = None,
    ) -> QueryAnswer:
        """As QueryEngine.answer (``graph``: the SceneGraph for floor / room constraints and the
        hierarchical context, see hierarchy.py), with the enabled model steps; QueryError for a
        bad query."""
        cfg = self.cfg
        ecfg = self.engine.cfg
        run = _Run(cfg, time.monotonic() + float(cfg.query_budget), text if isinstance(text, str) else "")
        if not isinstance(text, str):
            raise QueryError(f"query must be text, got {type(text).__name__}")
        if len(text) > ecfg.max_query_chars:  # before anything is sent anywhere
            raise QueryError(f"query is {len(text)} characters long; the limit is {ecfg.max_query_chars}")
        if not self._slots.acquire(blocking=False):
            return self._rule_only(snapshot, text, top_k, viewpoint, graph)
        try:
            return self._answer(run, snapshot, text, top_k, viewpoint, graph)
        finally:
            self._slots.release()

    def _rule_only(self, snapshot, text, top_k, viewpoint, graph=None) -> QueryAnswer:
        """Rule-based answer with every step skipped: too many model queries are running."""
        rule_text, facing_text = split_facing(text)
        parsed = parse_query(rule_text if facing_text else text, self.engine.cfg.max_query_chars)
        parsed.text = text
        ans = self.engine.answer(snapshot, text, top_k=top_k, viewpoint=viewpoint, parsed=parsed, graph=graph)
        why = f"{self.cfg.max_concurrent_queries} queries with model steps are already running"
        ans.stages = [QueryStage(name, "skipped", why) for name in STEPS if getattr(self.cfg, name)]
        ans.message = (ans.message + " " if ans.message else "") + f"model steps skipped: {why}; rule-based answer."
        return ans

    def _answer(self, run: _Run, snapshot, text: str, top_k, viewpoint, graph=None) -> QueryAnswer:
        cfg = self.cfg
        ecfg = self.engine.cfg
        k = max(int(top_k) if top_k is not None and int(top_k) > 0 else int(ecfg.top_k), 1)

        # ---- 1. parse
        rule_text, facing_text = split_facing(text)
        rule_parsed: ParsedQuery | None = None
        rule_error: QueryError | None = None
        try:
            rule_parsed = parse_query(rule_text if facing_text else text, ecfg.max_query_chars)
            if rule_parsed is not None and facing_text:
                rule_parsed.text = text
        except QueryError as e:
            if not cfg.parse or not text.strip() or "control character" in str(e) or "surrogate" in str(e):
                raise
            rule_error = e
        parsed, facing = rule_parsed, self._rule_facing(facing_text)
        if cfg.parse:
            t0 = time.perf_counter()
            got = self._step(run, "parse", t0, lambda tmo: self._parse(text, tmo))
            if got is not None:
                parsed, facing = got
        if parsed is None:
            assert rule_error is not None
            raise QueryError(f"{rule_error} (and the LLM parse step {run.stages[-1].status}: {run.stages[-1].detail})")
        if parsed.location is None and rule_parsed is not None:
            parsed.location = rule_parsed.location  # a reply without a location: the parser's

        # ---- rule-based ranking of the candidates (only in the rooms a constraint selects)
        n_cand = max(k, int(cfg.candidates))
        base = self.engine.answer(snapshot, text, top_k=n_cand, viewpoint=viewpoint, parsed=parsed, graph=graph)
        if graph is not None or parsed.location is not None:
            t0 = time.perf_counter()
            dec = decomposition(parsed)
            detail = ", ".join(f"{k_} {v!r}" for k_, v in dec.items() if v)
            if graph is None:
                run.add("hierarchy", "skipped", f"{detail}; no scene graph, floor / room ignored", t0)
            else:
                sel = f"; {len(base.room_ids)} of {len(graph.rooms)} room(s) selected" if base.room_ids else ""
                run.add("hierarchy", "ok", detail + sel, t0)
        hits = list(base.results)
        head, tail = hits[: cfg.candidates], hits[cfg.candidates :]
        reason = ""
        notes: list[str] = []
        if not head:
            for name in STEPS[1:]:
                if getattr(cfg, name):
                    run.add(name, "skipped", "the ranking gave no candidates", time.perf_counter())
        else:
            idx = self.engine.index(snapshot)
            rows = self._row_of(idx)
            verified: dict[int, float] = {}
            facing_of: dict[int, float] = {}
            # ---- 2. verify
            if cfg.verify:
                t0 = time.perf_counter()
                got = self._step(run, "verify", t0, lambda tmo: self._verify(text, parsed, head, idx, rows, tmo))
                if got is not None:
                    verified = got
                    w = float(cfg.verify_weight)  # candidates the model did not rate count as 0.5
                    head = _rescore(head, {h.object_id: (1 - w) + w * verified.get(h.object_id, 0.5) for h in head})
            # ---- 3. orientation
            if cfg.orientation:
                t0 = time.perf_counter()
                if facing is None:
                    run.add("orientation", "skipped", "the query has no facing relation", t0)
                else:
                    got = self._step(
                        run, "orientation", t0,
                        lambda tmo: self._orientation(run, snapshot, viewpoint, facing, head, idx, rows, tmo),
                    )
                    if got is not None:
                        facing_of = got
                        f = float(cfg.orientation_floor)  # no usable yaw from the model: 0.5
                        head = _rescore(head, {h.object_id: f + (1 - f) * facing_of.get(h.object_id, 0.5) for h in head})
            elif facing is not None:
                notes.append(f"'facing {facing.text}' was not checked (orientation step off).")
            # ---- 4. decide
            if cfg.decide:
                t0 = time.perf_counter()
                got = self._step(
                    run, "decide", t0,
                    lambda tmo: self._decide(run, snapshot, viewpoint, text, parsed, facing, head, verified, facing_of, idx, rows, tmo,
                                             graph, base.room_ids),
                )
                if got is not None:
                    chosen, reason = got
                    if chosen is not None:
                        head = [h for h in head if h.object_id == chosen] + [h for h in head if h.object_id != chosen]
        if facing is not None and not any(s.name == "orientation" and s.status == "ok" for s in run.stages):
            notes.append(f"'facing {facing.text}' could not be checked; ranked without it.")
        results = (head + tail)[:k]
        failed = [s for s in run.stages if s.status == "failed"]
        summary = "; ".join(f"{s.name} {s.status}" + (f" ({s.detail})" if s.status != "ok" and s.detail else "") for s in run.stages)
        msg = " ".join(x for x in [base.message, *notes] if x)
        if run.stages:
            msg = (msg + " " if msg else "") + f"model steps: {summary}."
            if failed:
                msg += " Failed steps fell back to the rule-based path."
        return QueryAnswer(parsed, results, base.semantic, msg.strip(), list(run.stages), reason, room_ids=base.room_ids)

    # ------------------------------------------------------------------ steps
    def _step(self, run: _Run, name: str, t0: float, fn):
        """Run one step with the time left; record ok / failed / skipped; None unless ok."""
        tmo = run.timeout()
        if tmo < _MIN_CALL_S:
            run.add(name, "skipped", f"query time budget ({self.cfg.query_budget:g} s) spent", t0)
            return None
        try:
            out = fn(tmo)
        except ChatError as e:
            run.add(name, "failed", str(e), t0)
            return None
        except StepFailed as e:
            run.add(name, "failed", f"unusable reply: {e}", t0)
            return None
        detail, value = out
        run.add(name, "ok", detail, t0)
        return value

    def _chat(self, prompt: str, user: Any, schema: dict, name: str, tmo: float, vision: bool = False) -> dict:
        n = estimate_tokens(prompt) + estimate_tokens(text_of(user))
        if n > int(self.cfg.context_tokens):  # never sent: the context is bounded whatever the map
            raise StepFailed(f"its context of about {n} tokens exceeds retrieval.llm.context_tokens ({self.cfg.context_tokens})")
        model = (self.cfg.vlm_model or self.cfg.model) if vision else self.cfg.model
        msgs = [{"role": "system", "content": prompt}, {"role": "user", "content": user}]
        data = self.client.chat(msgs, model=model, timeout=tmo, schema=schema, schema_name=f"core3d_{name}").data
        if name != "parse":  # parse has its own, stricter check
            check_reply(data, schema, name)
        return data

    def _parse(self, text: str, tmo: float):
        data = self._chat(PARSE_PROMPT, json.dumps({"request": text}, ensure_ascii=False), PARSE_SCHEMA, "parse", tmo)
        parsed, facing = parsed_from_reply(data, text)
        rels = ", ".join(f"{r} {a}" for r, a in parsed.relations)
        detail = f"target {parsed.target!r}" + (f", attributes {parsed.attributes}" if parsed.attributes else "")
        detail += (f", relations [{rels}]" if rels else "") + (f", facing {facing.text!r}" if facing else "")
        return detail, (parsed, facing)

    def _verify(self, text, parsed, head, idx, rows, tmo):
        parts: list[dict] = [{"type": "text", "text": json.dumps({"request": text, "target": parsed.target_phrase.text}, ensure_ascii=False)}]
        shown = []
        for h in head:
            obj = idx.objects[rows[h.object_id]]
            parts.append({"type": "text", "text": f"candidate id {h.object_id}" + (f" (label guess: {h.label})" if h.label else "")})
            if obj.best_view is not None and np.asarray(obj.best_view).ndim in (2, 3) and min(np.asarray(obj.best_view).shape[:2]) > 0:
                parts.append({"type": "image_url", "image_url": {"url": self._views.url(obj.best_view, self.cfg.image_size, self.cfg.image_format)}})
                shown.append(h.object_id)
            else:
                parts.append({"type": "text", "text": "(no stored view of this candidate)"})
        if not shown:
            raise StepFailed("no candidate has a stored best view")
        data = self._chat(VERIFY_PROMPT, parts, VERIFY_SCHEMA, "verify", tmo, vision=True)
        offered = {h.object_id for h in head}
        conf: dict[int, float] = {}
        unknown = 0
        for c in data["candidates"]:
            if c["id"] in offered:
                conf[c["id"]] = float(c["confidence"])
            else:
                unknown += 1
        if not conf:
            raise StepFailed(f"reply rates none of the offered candidates ({unknown} unknown id(s))")
        detail = ", ".join(f"{i}: {v:.2f}" for i, v in conf.items())
        if unknown:
            detail += f"; {unknown} unknown id(s) ignored"
        return f"confidence {detail}", conf

    def _anchors(self, run: _Run, snapshot, viewpoint, phrase: Phrase, idx, rows) -> tuple[list[int], list[float]]:
        """Row indices and normalised scores of the best ``anchors`` objects for a phrase."""
        if phrase not in run.anchors:
            run.anchors[phrase] = self._find_anchors(snapshot, viewpoint, phrase, rows)
        return run.anchors[phrase]

    def _find_anchors(self, snapshot, viewpoint, phrase: Phrase, rows) -> tuple[list[int], list[float]]:
        a = self.engine.answer(snapshot, phrase.text, top_k=self.cfg.anchors, viewpoint=viewpoint, parsed=phrase_query(phrase))
        if not a.results:
            return [], []
        best = max(h.score for h in a.results) or 1.0
        return [rows[h.object_id] for h in a.results], [h.score / best for h in a.results]

    def _orientation(self, run, snapshot, viewpoint, facing: Phrase, head, idx, rows, tmo):
        arows, ascore = self._anchors(run, snapshot, viewpoint, facing, idx, rows)
        if not arows:
            raise StepFailed(f"no object in the map matches the facing anchor {facing.text!r}")
        g = idx.geometry
        nb = int(self.cfg.yaw_bins)
        parts: list[dict] = [{"type": "text", "text": json.dumps({"request": run.text, "faces": facing.text}, ensure_ascii=False)}]
        grids: dict[int, np.ndarray] = {}
        for h in head:
            r = rows[h.object_id]
            others = [(ar, s) for ar, s in zip(arows, ascore) if ar != r]
            if not others:
                continue
            ax = g.foot_axes[r][0]
            yaws = math.atan2(ax[1], ax[0]) + 2 * math.pi * np.arange(nb) / nb
            grids[h.object_id] = yaws
            obj = idx.objects[r]
            parts.append({"type": "text", "text": f"candidate id {h.object_id}: yaw bins 0-{nb - 1}"})
            if obj.best_view is not None and min(np.asarray(obj.best_view).shape[:2]) > 0:
                parts.append({"type": "image_url", "image_url": {"url": self._views.url(obj.best_view, self.cfg.image_size, self.cfg.image_format)}})
            plan = plan_view(g, r, [o for o, _ in others], [int(idx.ids[o]) for o, _ in others], yaws, self.cfg.image_size)
            parts.append({"type": "image_url", "image_url": {"url": data_url(plan, "png")}})
        if not grids:
            raise StepFailed("no candidate has an anchor other than itself")
        data = self._chat(ORIENT_PROMPT, parts, ORIENTATION_SCHEMA, "orientation", tmo, vision=True)
        out: dict[int, float] = {}
        for o in data["orientations"]:
            i, b = o["id"], o["yaw_bin"]
            if i not in grids or b is None or not 0 <= b < nb:
                continue
            yaw = grids[i][b]
            d = np.array([math.cos(yaw), math.sin(yaw)])
            r = rows[i]
            best = 0.0
            for ar, s in zip(arows, ascore):
                if ar == r:
                    continue
                v = g.foot_center[ar] - g.foot_center[r]
                nv = float(np.linalg.norm(v))
                cosang = float(d @ v / nv) if nv > 1e-9 else 0.0
                best = max(best, s * max(cosang, 0.0))
            out[i] = best
        if not out:
            raise StepFailed("reply gives no usable yaw bin for any offered candidate")
        return "facing " + ", ".join(f"{i}: {v:.2f}" for i, v in out.items()), out

    def _decide(self, run, snapshot, viewpoint, text, parsed, facing, head, verified, facing_of, idx, rows, tmo, graph=None, room_ids=()):
        cands = []
        for h in head:
            o = idx.objects[rows[h.object_id]]
            c = {
                "id": h.object_id,
                "label": h.label,
                "score": round(float(h.score), 4) if math.isfinite(h.score) else None,
                "center": _rounded(o.box.center),
                "size": _rounded(o.box.extent),
                "color_rgb": [int(x) for x in np.clip(_mean_color(o) * 255, 0, 255)],
            }
            if math.isfinite(h.relation_score):
                c["relation_score"] = round(float(h.relation_score), 3)
            if h.object_id in verified:
                c["verify_confidence"] = round(verified[h.object_id], 3)
            if h.object_id in facing_of:
                c["facing_score"] = round(facing_of[h.object_id], 3)
            cands.append(c)
        anchors = {}
        phrases = [a for c in parsed.clauses for a in c.anchors] + ([facing] if facing is not None else [])
        for p in list(dict.fromkeys(phrases))[:4]:
            ar, _ = self._anchors(run, snapshot, viewpoint, p, idx, rows)
            anchors[p.text] = [
                {"id": int(idx.ids[r]), "label": idx.labels[r], "center": _rounded(idx.objects[r].box.center),
                 "size": _rounded(idx.objects[r].box.extent)}
                for r in ar
            ]
        payload = {"request": text, "relations": [list(r) for r in parsed.relations], "candidates": cands, "anchors": anchors}
        if graph is not None:
            payload["hierarchy"] = {"decomposition": decomposition(parsed), **scene_context(
                graph, self.engine.room_of(graph), list(room_ids), [c["id"] for c in cands], self.cfg.rooms)}
        user, n_tok, trimmed = fit_budget(payload, int(self.cfg.context_tokens) - estimate_tokens(DECIDE_PROMPT))
        data = self._chat(DECIDE_PROMPT, user, DECIDE_SCHEMA, "decide", tmo)
        size = f"; context {n_tok + estimate_tokens(DECIDE_PROMPT)} tokens" + (f" (trimmed: {', '.join(trimmed)})" if trimmed else "")
        reason = " ".join(str(data["reason"]).split())
        reason = "".join(ch for ch in reason if ch.isprintable())[:_MAX_REASON]
        chosen = data["id"]
        if chosen is None:
            return "the model found no fitting candidate; ranking kept" + size, (None, reason)
        offered = [c["id"] for c in json.loads(user)["candidates"]]
        if chosen not in offered:
            raise StepFailed(f"reply names object {chosen}, which is not among the candidates {offered}")
        return f"chose {chosen}" + size, (chosen, reason)

    # ------------------------------------------------------------------ helpers
    def _rule_facing(self, facing_text: str) -> Phrase | None:
        if not facing_text:
            return None
        try:
            p = parse_query(facing_text, self.engine.cfg.max_query_chars).target_phrase
        except QueryError:
            return None
        return p if (p.noun or p.attributes) else None

    def _row_of(self, idx: SnapshotIndex) -> dict[int, int]:
        """id -> row of the cached index (built once per snapshot index, like the index itself)."""
        with self._rows_lock:
            rows = self._rows.get(idx)
            if rows is None:
                rows = {int(i): r for r, i in enumerate(idx.ids.tolist())}
                self._rows[idx] = rows
            return rows


def _rounded(v) -> list:
    """Metres to 2 decimals; non-finite values (a damaged box) become null."""
    return [round(float(x), 2) if math.isfinite(float(x)) else None for x in np.asarray(v, dtype=np.float64).ravel()]


def _mean_color(o: ObjectInfo) -> np.ndarray:
    c = np.asarray(o.colors).reshape(-1, 3)
    return c.mean(axis=0) / 255.0 if len(c) else np.zeros(3)


def _rescore(hits: list[QueryHit], factor: dict[int, float]) -> list[QueryHit]:
    """Hits with scores multiplied by their factor (missing: 1), re-sorted best first."""
    out = [replace(h, score=float(h.score) * float(factor.get(h.object_id, 1.0))) for h in hits]
    return sorted(out, key=lambda h: -h.score)
