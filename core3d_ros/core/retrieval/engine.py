"""Answer natural-language queries against a map snapshot (CORE-3D retrieval, rule-based).

Scoring, per target object i (all factors in [0, 1]):

    S_i   = exp((cos_i - max_j cos_j) / temperature)      semantic target match (1 = best);
            cos_i = cosine(text("a photo of a <colours> <noun>"), embedding_i) (+ label_bonus
            when the object's label equals the noun); objects without an embedding get the
            lowest cosine. S = 1 for every object when there is no noun or no semantics.
    F_i   = (1 - color_weight) + color_weight * C_i       when a noun is matched semantically,
    F_i   = C_i                                           otherwise (colour is the main cue);
            C_i = geometric mean of the colour-word scores of the object's mean colour.
    R_i   = prod over relation clauses c of  max_j  A_cj * rel_c(i, j)
            A_cj = anchor score of candidate j for the clause's anchor phrase (same S * F *
            superlative formula, normalised to a best of 1; top anchor_candidates kept);
            "between" takes the max over anchor pairs (j, k) of A_j * A_k * between(i, j, k).
    base  = S_i * F_i * (relation_floor + (1 - relation_floor) * R_i)
    score = base * prod over superlatives of sup_i   (see relations.superlative_scores: the
            extreme among objects with base >= superlative_gate * best base gets 1)

Only the top ``target_candidates`` objects by S get colour, relation and superlative checks
when the target has a noun; without a noun every object (up to max_geometric_targets) does.
Relations are checked against the top ``anchor_candidates`` anchors plus well-matching anchors
(A >= local_anchor_gate x best) within ``local_anchor_radius`` of a target candidate.

Without a semantic encoder (None, or ``encoder.semantic`` False) text similarity is never used:
similarity is NaN, the nouns are ignored (the message says so), and the answer uses what
geometry and colour can tell: colour words, superlatives, and relations whose anchor phrase
has a colour or superlative ("near the biggest object"). A query with none of these gets no
results. Labels are used (as a small cosine bonus) only in semantic mode.

The snapshot is never modified. Per-snapshot arrays (stacked embeddings, boxes, colours) are
cached, keyed by the snapshot object's identity and stamp: callers should hand the same
MapSnapshot object to consecutive queries while the map has not changed (building the index
costs about 10 ms per 1000 objects). While a query runs, BLAS is limited to one thread.
"""
from __future__ import annotations

import contextlib
import math
import threading
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ...config import RetrievalConfig, up_vector
from ..objects import MapSnapshot
from .colors import colors_score
from .location import Location, resolve_location
from .parser import ParsedQuery, Phrase, QueryError, parse_query
from .index import SnapshotIndex
from .relations import (
    VIEW_RELATIONS,
    RelationParams,
    View,
    between_scores,
    extreme_scores,
    gap_distance,
    make_view,
    pair_scores,
    superlative_scores,
    unit,
)


@dataclass
class QueryHit:
    object_id: int
    score: float  # combined ranking score, higher is better
    similarity: float  # text-object cosine similarity; NaN without semantics or without a noun
    relation_score: float  # how well the relations hold, in [0, 1] (1 when there are none)
    label: str


@dataclass
class QueryStage:
    """One optional model step of a query (see llm/retriever.py): what ran, and how it ended."""

    name: str  # parse | hierarchy | verify | orientation | decide
    status: str  # ok | failed | skipped
    detail: str = ""  # why it failed / was skipped, or what it changed
    elapsed_ms: float = 0.0


@dataclass
class QueryAnswer:
    parsed: ParsedQuery
    results: list[QueryHit] = field(default_factory=list)  # best first
    semantic: bool = False  # True: ranked by text similarity from a semantic encoder
    message: str = ""
    stages: list[QueryStage] = field(default_factory=list)  # model steps; empty: rule-based only
    reason: str = ""  # the model's short reason for its choice ("" without a decide step)
    room_ids: list[int] = field(default_factory=list)  # rooms a floor / room constraint selected


_VIEW_ATTRS = frozenset({"closest", "farthest", "leftmost", "rightmost"})


# A query does one (N, D) x (D, P) product and many tiny array ops. Multi-threaded BLAS makes
# that slower (thread wake-up, and spinning workers compete with the caller on a busy CPU), so
# queries run with BLAS limited to one thread; the limit is process-wide while any query runs
# and is restored when the last concurrent query finishes.
_blas_lock = threading.Lock()
_blas_users = 0
_blas_ctx: Any = None
_blas_controller: Any = None


@contextlib.contextmanager
def _single_thread_blas():
    global _blas_users, _blas_ctx, _blas_controller
    with _blas_lock:
        if _blas_users == 0:
            try:
                if _blas_controller is None:
                    from threadpoolctl import ThreadpoolController

                    _blas_controller = ThreadpoolController()
                _blas_ctx = _blas_controller.limit(limits=1, user_api="blas")
            except Exception:  # threadpoolctl missing or failing: run as is
                _blas_ctx = None
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_ctx is not None:
                try:
                    _blas_ctx.restore_original_limits()
                finally:
                    _blas_ctx = None


class QueryEngine:
    """Rule-based query answering over MapSnapshots; thread-safe."""

    def __init__(self, cfg: RetrievalConfig | None = None, encoder: Any = None):
        self.cfg = cfg or RetrievalConfig()
        self.encoder = encoder
        self.params = RelationParams.from_config(self.cfg)
        self._cache: list[tuple[weakref.ref, tuple, SnapshotIndex]] = []
        self._lock = threading.Lock()
        self._graph_rooms: tuple = (None, -1, {})  # (graph, its version, object id -> room id)
        self._up = list(unit(up_vector(self.cfg.up_axis)))  # auto ([0, 0, 0]) is z here; ValueError for a malformed one

    # ------------------------------------------------------------------ snapshot cache
    def index(self, snapshot: MapSnapshot) -> SnapshotIndex:
        key = (id(snapshot), float(snapshot.stamp), int(snapshot.frames), len(snapshot.objects))
        with self._lock:
            for ref, k, idx in self._cache:
                if k == key and ref() is snapshot:
                    return idx
            built = SnapshotIndex(snapshot, self._up)
            if self._cache:  # what the last version's queries derived (its snapshot may be gone)
                built.carry(self._cache[-1][2])
            self._cache = [(r, k, i) for r, k, i in self._cache if r() is not None][-1:]
            self._cache.append((weakref.ref(snapshot), key, built))
            return built

    @property
    def semantic(self) -> bool:
        return self.encoder is not None and bool(getattr(self.encoder, "semantic", False))

    # ------------------------------------------------------------------ API
    def answer(
        self,
        snapshot: MapSnapshot,
        text: str,
        top_k: int | None = None,
        viewpoint: np.ndarray | None = None,
        parsed: ParsedQuery | None = None,
        graph: Any = None,
    ) -> QueryAnswer:
        """Rank the snapshot's objects for a query; raises QueryError for a bad query/viewpoint.

        ``parsed``: an already parsed query (e.g. from the LLM parse step) used instead of the
        rule-based parse of ``text``. ``graph``: the map's SceneGraph (core/hierarchy), used for
        floor / room constraints ("the mug in the kitchen"): only objects in the rooms they
        select are ranked; a floor or room that does not exist gives no results and a message
        saying what is missing. Without a graph such constraints are ignored (the message says
        so)."""
        cfg = self.cfg
        if parsed is None:
            parsed = parse_query(text, cfg.max_query_chars)
        if graph is not None and parsed.location is None:
            parsed = _room_label_clause(parsed, graph)
        k = int(top_k) if top_k is not None and int(top_k) > 0 else int(cfg.top_k)
        k = max(k, 1)
        if viewpoint is not None:
            vp = np.asarray(viewpoint, dtype=np.float64)
            if vp.shape != (4, 4) or not np.all(np.isfinite(vp)):
                raise QueryError("viewpoint must be a finite 4x4 camera-to-world matrix")
        if not snapshot.objects:
            return QueryAnswer(parsed, [], self.semantic, "the map has no objects yet")
        idx = self.index(snapshot)
        text_emb: tuple[list[str], np.ndarray] | None = None
        err = ""
        if self.semantic and idx.has_emb.any():
            text_emb, err = self._encode(parsed, idx.dim)  # the text model runs with its own threads
        with _single_thread_blas():
            return self._answer(idx, parsed, k, viewpoint, text_emb, err, graph)

    def _answer(self, idx: SnapshotIndex, parsed: ParsedQuery, k: int, viewpoint, text_emb, err: str, graph=None) -> QueryAnswer:
        cfg = self.cfg
        notes: list[str] = []
        semantic = self.semantic
        q_sims: dict[str, np.ndarray] = {}
        if semantic and not idx.has_emb.any():
            semantic = False
            notes.append("the map's objects have no embeddings, so text similarity cannot be used;")
        elif semantic and err:
            semantic = False
            notes.append(err)
        elif semantic and text_emb is not None:
            prompts, emb = text_emb
            sims = (idx.emb @ emb.T).astype(np.float64)  # (N, P): one pass over the embedding matrix
            q_sims = {p: sims[:, j] for j, p in enumerate(prompts)}
        if not semantic:
            nouns = [parsed.target_phrase.noun] + [a.noun for c in parsed.clauses for a in c.anchors]
            nouns = list(dict.fromkeys(n for n in nouns if n))
            why = "no semantic encoder is loaded" if not self.semantic else "semantic matching is unavailable"
            if nouns:
                notes.append(
                    f"{why}: the noun(s) {', '.join(repr(n) for n in nouns)} were ignored; "
                    "ranked by colour, size and geometry only."
                )
            else:
                notes.append(f"{why}: ranked by colour, size and geometry only.")

        view = make_view(viewpoint, idx.geometry.up, idx.geometry.center) if viewpoint is not None else idx.default_view
        uses_view = bool(set(parsed.attributes) & _VIEW_ATTRS) or any(
            c.relation in VIEW_RELATIONS for c in parsed.clauses
        ) or any(set(a.attributes) & _VIEW_ATTRS for c in parsed.clauses for a in c.anchors)
        if uses_view and viewpoint is None:
            notes.append(
                "no viewpoint given: left/right/front/behind/closest are judged from a default "
                "observer on the -y side of the map looking along +y."
            )

        # ---- floor / room constraint: the rows the target may be in (None: the whole map)
        allowed, room_ids = None, []
        if parsed.location is not None:
            got = self._location_rows(idx, parsed, graph, semantic, q_sims, view, notes)
            if isinstance(got, QueryAnswer):
                return got
            allowed, room_ids = got

        target = parsed.target_phrase
        n = len(idx)
        # ---- target similarity
        sims = np.full(n, np.nan)
        if semantic and target.noun:  # S = 1 for the best match where the target may be
            sims, S = self._phrase_similarity(idx, target, q_sims, allowed)
        else:
            S = np.ones(n)

        # ---- usable relation clauses
        clauses = []
        for c in parsed.clauses:
            if all(self._anchor_usable(a, semantic) for a in c.anchors):
                clauses.append(c)
            else:
                what = " and ".join(a.text for a in c.anchors)
                notes.append(
                    f"relation \"{c.relation.replace('_', ' ')} {what}\" was ignored: its anchor "
                    + ("cannot be identified without a semantic encoder" if not semantic else "names no object")
                    + " (give it a colour or a superlative, e.g. 'the biggest object')."
                )

        has_cue = bool(semantic and target.noun) or bool(target.attributes) or bool(clauses) or allowed is not None
        if not has_cue:
            notes.append("nothing in the query can be answered, so there are no results.")
            return QueryAnswer(parsed, [], semantic, " ".join(notes))

        # ---- target candidates
        pool = np.arange(n) if allowed is None else allowed
        if semantic and target.noun:
            cand = pool[_top(S[pool], max(int(cfg.target_candidates), k))]
        else:
            limit = max(int(cfg.max_geometric_targets), k)
            if len(pool) > limit:
                pre = self._color_factor(idx, pool, target, semantic)
                cand = pool[_top(pre, limit)]
                notes.append(f"only the {limit} best colour matches of {len(pool)} objects were checked.")
            else:
                cand = pool
        F = self._color_factor(idx, cand, target, semantic)

        # ---- relations (coarse box geometry first when there are many targets)
        R = np.ones(len(cand))
        anchors_per_clause: list = []
        if clauses:
            a_scores = [[self._anchor_scores(idx, a, semantic, q_sims, view) for a in c.anchors] for c in clauses]
            cap = max(4 * int(cfg.target_candidates), k)
            if len(cand) > cap:  # many targets: prune with the globally best anchors first
                glob = [[self._select_anchors(idx, A, c.relation, None) for A in As] for c, As in zip(clauses, a_scores)]
                idx.refine(np.concatenate([a[0] for ac in glob for a in ac]))
                coarse = np.ones(len(cand))
                for c, ac in zip(clauses, glob):
                    if not c.extreme:
                        coarse *= self._clause_scores(idx, c.relation, cand, ac, view)
                keep = _top(S[cand] * F * coarse, cap)
                cand, F = cand[keep], F[keep]
                R = np.ones(len(cand))
            anchors_per_clause = [
                [self._select_anchors(idx, A, c.relation, cand, S[cand] * F) for A in As]
                for c, As in zip(clauses, a_scores)
            ]
            idx.refine(np.concatenate([cand] + [a[0] for ac in anchors_per_clause for a in ac]))
            for c, ac in zip(clauses, anchors_per_clause):
                if not c.extreme:  # superlative relations rank below, over the good matches
                    R *= self._clause_scores(idx, c.relation, cand, ac, view)
        floor = float(np.clip(cfg.relation_floor, 0.0, 1.0))
        base = S[cand] * F * (floor + (1.0 - floor) * R)

        # ---- superlatives, over the objects that match well enough
        score = base.copy()
        sups = target.superlatives
        if sups:
            _refine_best(idx, cand, base, cfg.superlative_gate)
            for s in sups:
                score *= superlative_scores(
                    s, idx.geometry, cand, base, view, cfg.superlative_gate, cfg.superlative_floor
                )
        for c, ac in zip(clauses, anchors_per_clause):
            if c.extreme:  # "closest to" / "farthest from": a superlative of the gap to the anchor
                m = self._extreme(idx, c.relation, cand, ac[0], score)
                score *= m
                R *= m

        order = np.argsort(-score, kind="stable")[: k]
        results = []
        for j in order:
            if not score[j] > 1e-12:
                break
            i = int(cand[j])
            results.append(
                QueryHit(
                    object_id=int(idx.ids[i]),
                    score=float(score[j]),
                    similarity=float(sims[i]) if semantic and target.noun else math.nan,
                    relation_score=float(R[j]),
                    label=idx.labels[i],
                )
            )
        if not results:
            notes.append("no object matches.")
        return QueryAnswer(parsed, results, semantic, " ".join(notes).strip(), room_ids=room_ids)

    def room_of(self, graph) -> dict[int, int]:
        """object id -> room id of a scene graph, built once per graph version."""
        with self._lock:
            g, version, room_of = self._graph_rooms
            if g is graph and version == graph.version:
                return room_of
        room_of = {int(o): r.id for r in graph.rooms for o in r.object_ids}
        with self._lock:
            self._graph_rooms = (graph, graph.version, room_of)
        return room_of

    def _location_rows(self, idx, parsed, graph, semantic, q_sims, view, notes):
        """(rows of the objects in the rooms the query's floor / room constraint selects, room
        ids), None-and-a-note without a graph, or an empty QueryAnswer naming what is missing."""
        loc = parsed.location
        if graph is None:
            notes.append(f"the constraint '{loc.text}' was ignored: no scene graph (floors and rooms) is available.")
            return None, []
        if loc.room_with is not None and not self._anchor_usable(loc.room_with, semantic):
            notes.append(f"'in the room with the {loc.room_with.text}' was ignored: that object cannot be identified without a semantic encoder.")
            loc = replace(loc, room_with=None)
            if not loc.has_floor and not loc.has_room:
                return None, []

        def rooms_with(phrase) -> set[int]:
            A = self._anchor_scores(idx, phrase, semantic, q_sims, view)
            top, _ = self._select_anchors(idx, A, "near", None)
            good = {int(i) for i in idx.ids[top[A[top] >= float(self.cfg.local_anchor_gate) * A[top[0]]]]} if len(top) else set()
            room_of = self.room_of(graph)
            return {room_of[i] for i in good if i in room_of}

        res = resolve_location(loc, graph, rooms_with)
        if res.missing:
            msg = " ".join([*notes, f"{res.missing}; no results."])
            return QueryAnswer(parsed, [], semantic, msg.strip())
        rows = idx.rows_of(res.object_ids)
        notes.append(f"restricted to {res.text} ({len(rows)} object(s) of the map).")
        if not len(rows):
            return QueryAnswer(parsed, [], semantic, " ".join([*notes, "no object of the map is there yet."]), room_ids=res.room_ids)
        return rows, res.room_ids

    # ------------------------------------------------------------------ pieces
    def _prompt(self, phrase: Phrase) -> str:
        words = phrase.prompt_text()
        tpl = self.cfg.text_template or "{}"
        return tpl.replace("{}", words) if "{}" in tpl else f"{tpl} {words}".strip()

    def _encode(self, parsed: ParsedQuery, dim: int) -> tuple[tuple[list[str], np.ndarray] | None, str]:
        """(prompts, (P, dim) unit text embeddings) for the query's noun phrases, or an error note."""
        phrases = [parsed.target_phrase] + [a for c in parsed.clauses for a in c.anchors]
        if parsed.location is not None and parsed.location.room_with is not None:
            phrases.append(parsed.location.room_with)
        prompts = list(dict.fromkeys(self._prompt(p) for p in phrases if p.noun))
        if not prompts:
            return None, ""
        try:
            emb = np.asarray(self.encoder.encode_text(prompts), dtype=np.float32)
        except Exception as e:  # a failing text encoder degrades to geometry, it does not crash
            return None, f"the text encoder failed ({type(e).__name__}: {e});"
        if emb.ndim != 2 or emb.shape[0] != len(prompts) or emb.shape[1] != dim:
            return None, (
                f"the text encoder's embeddings {tuple(emb.shape)} do not match the map's "
                f"object embeddings (dimension {dim});"
            )
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms < 1e-8):
            return None, "the text encoder returned invalid embeddings;"
        return (prompts, emb / norms), ""

    def _phrase_similarity(self, idx: SnapshotIndex, phrase: Phrase, q_sims: dict, pool=None) -> tuple[np.ndarray, np.ndarray]:
        """Cosines (N,) and S = exp((cos + bonus - best) / T) (N,) for a phrase with a noun; with
        ``pool`` (the rows of the selected rooms), best = max(the pool's best, the map's best -
        _ROOM_SLACK x T): the room's best match scores 1 when it is within that slack of the
        map's best, and decays from there (a room without any such object gives no results)."""
        sims = q_sims[self._prompt(phrase)].copy()
        if not idx.has_emb.all():
            low = float(sims[idx.has_emb].min()) if idx.has_emb.any() else 0.0
            sims[~idx.has_emb] = low
        adj = sims
        hit = idx.by_label.get(phrase.noun.strip().lower())
        if hit is not None and self.cfg.label_bonus:
            adj = sims.copy()
            adj[hit] += float(self.cfg.label_bonus)
        T = max(float(self.cfg.temperature), 1e-6)
        best = adj.max()
        if pool is not None and len(pool):  # a room's best match is a full match unless it is
            best = max(float(adj[pool].max()), best - _ROOM_SLACK * T)  # far below the map's best
        S = np.exp(np.clip((adj - best) / T, -700.0, 0.0))
        return sims, S

    def _color_factor(self, idx: SnapshotIndex, sel: np.ndarray, phrase: Phrase, semantic: bool) -> np.ndarray:
        if not phrase.colors:
            return np.ones(len(sel))
        C = colors_score(phrase.colors, idx.mean_colors(sel))
        if semantic and phrase.noun:  # the noun leads; colour refines
            w = float(np.clip(self.cfg.color_weight, 0.0, 1.0))
            return (1.0 - w) + w * C
        return C

    @staticmethod
    def _anchor_usable(phrase: Phrase, semantic: bool) -> bool:
        if phrase.attributes:
            return True
        return semantic and bool(phrase.noun)

    def _anchor_scores(self, idx: SnapshotIndex, phrase: Phrase, semantic: bool, q_sims: dict, view: View) -> np.ndarray:
        """(N,) how well each object matches an anchor phrase (same S * F * superlative rule)."""
        n = len(idx)
        wide = max(4 * int(self.cfg.anchor_candidates), 256)
        if semantic and phrase.noun:
            _, A = self._phrase_similarity(idx, phrase, q_sims)
        else:
            A = np.ones(n)
        if phrase.colors:
            # colour only on the best semantic matches (all objects when the noun is unused)
            sel = _top(A, wide) if semantic and phrase.noun else np.arange(n)
            A2 = np.zeros(n)
            A2[sel] = A[sel] * self._color_factor(idx, sel, phrase, semantic)
            A = A2
        if phrase.superlatives:
            sel = _top(A, wide) if semantic and phrase.noun else np.flatnonzero(A > 0)
            if not len(sel):
                sel = np.arange(n)
            _refine_best(idx, sel, A[sel], self.cfg.superlative_gate)
            sub = A[sel].copy()
            base = sub.copy()
            for s in phrase.superlatives:
                sub *= superlative_scores(
                    s, idx.geometry, sel, base, view, self.cfg.superlative_gate, self.cfg.superlative_floor
                )
            A = np.zeros(n)
            A[sel] = sub
        return A

    def _select_anchors(
        self,
        idx: SnapshotIndex,
        A: np.ndarray,
        relation: str,
        targets: np.ndarray | None,
        target_scores: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores normalised to a best of 1) of the anchors a relation is checked against.

        The ``anchor_candidates`` best anchors, plus (when ``targets`` are given, for local
        relations) good anchors (A >= local_anchor_gate x best) within ``local_anchor_radius``
        of a good target candidate (score >= local_anchor_gate x best), so that in maps with
        many similar anchors (tables) the one under a candidate is not missed. At most
        4 x anchor_candidates local anchors (anchor_candidates / 2 for "between"), those near
        the best targets first.
        """
        cfg = self.cfg
        m = max(int(cfg.anchor_candidates), 1)
        if relation == "between":  # anchor pairs: keep it to m/2 x m/2
            m = max(m // 2, 1)
        top = _top(A, m)
        top = top[A[top] > 0]
        if not len(top):
            return top, np.zeros(0)
        radius = float(cfg.local_anchor_radius)
        if targets is not None and len(targets) and radius > 0 and relation != "far_from":
            gate = float(cfg.local_anchor_gate)
            ts = np.ones(len(targets)) if target_scores is None else np.asarray(target_scores, float)
            order = np.argsort(-ts, kind="stable")
            good = targets[order[ts[order] >= gate * ts[order[0]]]]
            near = idx.neighbours(good, radius)  # in the order of the targets, best first
            near = near[A[near] >= gate * A[top[0]]]
            cap = m if relation == "between" else 4 * m  # between checks anchor pairs
            if len(near) > cap:
                near = near[np.argsort(-A[near], kind="stable")[:cap]]
            top = np.union1d(top, near)
        return top, A[top] / A[top].max()

    def _extreme(self, idx, relation, cand, anchors, base) -> np.ndarray:
        """Multiplier per candidate for "closest to" (near) / "farthest from" (far_from): the gap
        to the nearest good anchor (score >= local_anchor_gate x best, never the candidate
        itself), ranked like a superlative over the candidates scoring >= superlative_gate."""
        ai, sa = anchors
        good = ai[sa >= float(self.cfg.local_anchor_gate)] if len(ai) else ai
        if not len(good):
            return np.zeros(len(cand))
        d = gap_distance(idx.geometry, cand, good)
        d = np.where(cand[:, None] == good[None, :], np.inf, d).min(axis=1)
        ok = np.isfinite(d)
        if not ok.any():
            return np.zeros(len(cand))
        far = relation == "far_from"
        d = np.where(ok, d, d[ok].min() - 1.0 if far else d[ok].max() + 1.0)  # itself only: worst
        return extreme_scores(d, far, base, self.cfg.superlative_gate, self.cfg.superlative_floor)

    def _clause_scores(self, idx, relation, cand, anchors, view) -> np.ndarray:
        g = idx.geometry
        if relation == "between":
            (a1, s1), (a2, s2) = anchors
            if not len(a1) or not len(a2):
                return np.zeros(len(cand))
            b = between_scores(g, cand, a1, a2, self.params)  # (T, A1, A2)
            w = s1[:, None] * s2[None, :]
            b = b * w[None]
            # a target is not between itself and something else
            b = np.where(cand[:, None, None] == a1[None, :, None], 0.0, b)
            b = np.where(cand[:, None, None] == a2[None, None, :], 0.0, b)
            return b.reshape(len(cand), -1).max(axis=1)
        ((ai, sa),) = anchors
        if not len(ai):
            return np.zeros(len(cand))
        rel = pair_scores(relation, g, cand, ai, self.params, view)  # (T, A)
        return (rel * sa[None, :]).max(axis=1)


def _room_label_clause(parsed: ParsedQuery, graph) -> ParsedQuery:
    """"the shelf in the storage" where "storage" is no room word the parser knows but a room
    label of the graph: the clause "in <label>" becomes the room constraint (first such clause)."""
    for c in parsed.clauses:
        a = c.anchors[0]
        if c.relation == "in" and len(c.anchors) == 1 and a.noun and not a.attributes and any(
            _words_equal(r.label, a.noun) for r in graph.rooms
        ):
            clauses = [x for x in parsed.clauses if x is not c]
            return replace(parsed, clauses=clauses, relations=[(x.relation, y.text) for x in clauses for y in x.anchors],
                           location=Location(room_label=a.noun, text=f"in the {a.noun}"))
    return parsed


def _words_equal(label: str, noun: str) -> bool:
    return label.lower().split() == noun.lower().split()


def _top(values: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m largest values, best first (stable for ties)."""
    n = len(values)
    if m >= n:
        return np.argsort(-values, kind="stable")
    part = np.argpartition(-values, m - 1)[:m]
    return part[np.argsort(-values[part], kind="stable")]


_REFINE_CAP = 4096
_ROOM_SLACK = 10.0  # temperatures: see QueryEngine._phrase_similarity


def _refine_best(idx: SnapshotIndex, sel: np.ndarray, base: np.ndarray, gate: float) -> None:
    """Refine the geometry of the objects a superlative ranks (base >= gate x best), capped."""
    if not len(sel):
        return
    bmax = float(base.max())
    elig = np.flatnonzero(base >= gate * bmax) if bmax > 0 else np.arange(len(sel))
    if len(elig) > _REFINE_CAP:
        elig = elig[_top(base[elig], _REFINE_CAP)]
    idx.refine(sel[elig])
