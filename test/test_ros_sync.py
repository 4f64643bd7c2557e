"""Approximate-time synchroniser of the ROS layer (pure Python, no ROS graph)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from core3d_ros.core.frame import FrameError
from core3d_ros.core.mapping.frames import check_pose_age
from core3d_ros.ros.sync import ApproximateTimeSync

KEYS = ["color", "depth", "camera_info", "pose"]


def make(slop: float = 0.02, queue: int = 5, max_pose_age: float = 0.1) -> ApproximateTimeSync:
    return ApproximateTimeSync(
        KEYS,
        slop=slop,
        queue_size=queue,
        tolerances={"pose": max_pose_age},
        reasons={"pose": ("no_pose", "stale_pose")},
    )


def feed(sync: ApproximateTimeSync, key: str, t: float):
    return sync.add(key, f"{key}@{t:.3f}", t)


def test_exact_stamps_emit_one_set_per_frame_in_any_arrival_order() -> None:
    sync = make()
    sets = []
    for k, order in enumerate([KEYS, KEYS[::-1], ["depth", "pose", "color", "camera_info"]]):
        t = 1.0 + 0.1 * k
        for key in order:
            s, r = feed(sync, key, t)
            assert not r
            sets += s
    assert [s.stamp for s in sets] == pytest.approx([1.0, 1.1, 1.2])
    assert sets[1].messages == {k: f"{k}@1.100" for k in KEYS}
    assert sync.stats().emitted == 3


def test_matched_within_slop() -> None:
    sync = make(slop=0.02)
    feed(sync, "color", 1.000)
    feed(sync, "depth", 1.015)
    feed(sync, "camera_info", 0.990)
    sets, _ = feed(sync, "pose", 1.005)
    assert not sets  # a camera info closer to 1.000 may still come
    sets, _ = feed(sync, "camera_info", 1.030)  # it did not: 0.990 gives the smaller spread
    assert len(sets) == 1
    assert sets[0].stamps == pytest.approx({"color": 1.0, "depth": 1.015, "camera_info": 0.99, "pose": 1.005})


def test_nearest_neighbours_chosen() -> None:
    sync = make(slop=0.05)
    for t in (0.96, 0.99, 1.03):
        feed(sync, "depth", t)
    feed(sync, "camera_info", 1.0)
    feed(sync, "pose", 1.0)
    sets, _ = feed(sync, "color", 1.0)
    assert len(sets) == 1 and sets[0].stamps["depth"] == pytest.approx(0.99)


def test_waits_for_a_better_partner_beyond_slop_then_decides() -> None:
    sync = make(slop=0.01, max_pose_age=0.1)
    feed(sync, "depth", 1.0)
    feed(sync, "camera_info", 1.0)
    feed(sync, "pose", 0.95)  # within max_pose_age but beyond slop: a closer pose may follow
    sets, rej = feed(sync, "color", 1.0)
    assert not sets and not rej
    sets, _ = feed(sync, "pose", 1.002)
    assert len(sets) == 1 and sets[0].stamps["pose"] == pytest.approx(1.002)


def test_unmatched_colour_rejected_once_partner_moved_on() -> None:
    sync = make(slop=0.01)
    feed(sync, "color", 1.0)
    feed(sync, "camera_info", 1.0)
    feed(sync, "pose", 1.0)
    sets, rej = feed(sync, "depth", 1.2)  # depth jumped past: colour 1.0 can never match
    assert not sets
    assert [r.reason for r in rej] == ["unsynced_depth"]
    assert sync.stats().rejected["unsynced_depth"] == 1


def test_stale_and_missing_pose_reasons() -> None:
    sync = make(slop=0.01, queue=2, max_pose_age=0.1)
    rejected = []
    for k in range(4):  # no pose at all: frames wait, then overflow forces "no_pose"
        t = 1.0 + 0.1 * k
        for key in ("depth", "camera_info", "color"):
            rejected += feed(sync, key, t)[1]
    assert rejected and {r.reason for r in rejected} == {"no_pose"}
    assert sync.queue_lengths()["color"] <= 2
    sync2 = make(slop=0.01, queue=5, max_pose_age=0.1)
    feed(sync2, "pose", 0.5)
    feed(sync2, "depth", 1.0)
    feed(sync2, "camera_info", 1.0)
    feed(sync2, "color", 1.0)
    _, rej = feed(sync2, "pose", 1.5)  # poses around 1.0 are 0.5 s away: stale
    assert [r.reason for r in rej] == ["stale_pose"]


def test_out_of_order_colour_dropped_and_counted() -> None:
    sync = make()
    for key in KEYS:
        feed(sync, key, 2.0)
    sets, rej = feed(sync, "color", 1.5)  # older than the emitted set
    assert not sets and [r.reason for r in rej] == ["out_of_order"]
    _, rej = feed(sync, "color", 2.0)  # duplicate stamp
    assert [r.reason for r in rej] == ["out_of_order"]
    feed(sync, "depth", 1.0)  # partner older than the one used: useless
    st = sync.stats()
    assert st.out_of_order["color"] == 2 and st.out_of_order["depth"] == 1
    assert st.rejected["out_of_order"] == 2


def test_slow_camera_info_reused_for_several_frames() -> None:
    sync = make(slop=0.2)
    feed(sync, "camera_info", 1.0)
    emitted = []
    for t in (1.0, 1.05, 1.1):
        feed(sync, "depth", t)
        feed(sync, "pose", t)
        emitted += feed(sync, "color", t)[0]
    feed(sync, "camera_info", 1.5)  # decides the waiting frames
    assert len(sync.stats().rejected) == 0
    assert sync.stats().emitted == 3


def test_bounded_memory_under_flood() -> None:
    sync = make(slop=0.001, queue=8)
    for k in range(5000):  # depth flood with no colour, colour flood that never matches
        feed(sync, "depth", k * 0.01)
        feed(sync, "color", k * 0.01 + 0.005)
    lengths = sync.queue_lengths()
    assert max(lengths.values()) <= 9
    st = sync.stats()
    assert st.dropped["depth"] >= 5000 - 9
    assert sum(st.rejected.values()) >= 5000 - 9  # every colour frame accounted for


def test_thread_safe_under_concurrent_publishers() -> None:
    sync = make(slop=0.004, queue=50)
    n = 400
    emitted = []
    lock = threading.Lock()

    def collect(s):
        with lock:
            emitted.append(s.stamp)

    sync.on_set = collect

    barrier = threading.Barrier(len(KEYS), timeout=10)

    def publisher(key: str) -> None:
        for k in range(n):
            if k % 10 == 0:  # keep the streams within a few frames of each other, like real time
                barrier.wait()
            sync.add(key, key, 1.0 + k * 0.033)

    threads = [threading.Thread(target=publisher, args=(k,)) for k in KEYS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    st = sync.stats()
    assert all(st.received[k] == n for k in KEYS)
    # every colour frame is emitted, rejected, or still waiting: none lost silently
    waiting = sync.queue_lengths()["color"]
    assert st.emitted + sum(st.rejected.values()) + waiting == n
    assert st.emitted >= n * 0.8
    # callbacks run outside the lock, so their order across threads is free; no set twice
    assert len(set(emitted)) == len(emitted) == st.emitted


def test_check_pose_age() -> None:
    check_pose_age(1.0, 1.05, 0.1)
    with pytest.raises(FrameError) as e:
        check_pose_age(1.0, 1.3, 0.1)
    assert e.value.reason == "stale_pose"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a", "a"], slop=0.1, queue_size=3)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a"], slop=-1, queue_size=3)
    with pytest.raises(KeyError):
        make().add("nope", None, 1.0)


# --------------------------------------------------------------------------- fault 2 (issue 10)
# A set is the wrong one when a partner closer to the colour frame was still to come. These
# streams reproduce what a well-formed camera publishes; the sets must be the best ones the
# stream allows, not the first ones within the slop.


def _stream(order: list[tuple[str, float, float]], sync: ApproximateTimeSync) -> list:
    """Feed (key, stamp, arrival) tuples in arrival order; return the emitted sets."""
    sets = []
    for key, stamp, _ in sorted(order, key=lambda x: x[2]):
        sets += feed(sync, key, stamp)[0]
    return sets


def test_colour_first_partners_3ms_later_gives_exact_sets() -> None:
    sync = make(slop=0.05, queue=30, max_pose_age=0.2)
    period, n = 1 / 30, 40
    events = []
    for i in range(n):
        t = 100.0 + i * period
        events.append(("color", t, t))
        events += [(k, t, t + 0.003) for k in ("depth", "camera_info", "pose")]
    sets = _stream(events, sync)
    assert len(sets) == n
    exact = [s for s in sets if all(v == s.stamp for v in s.stamps.values())]
    assert len(exact) == n, [(s.stamp, s.stamps) for s in sets if s not in exact][:3]
    assert sets[5].messages["depth"] == f"depth@{100.0 + 5 * period:.3f}"
    assert sum(sync.stats().rejected.values()) == 0


def test_partners_first_gives_exact_sets() -> None:
    sync = make(slop=0.05, queue=30)
    period, n = 1 / 30, 40
    events = []
    for i in range(n):
        t = 100.0 + i * period
        events += [(k, t, t) for k in ("depth", "camera_info", "pose")]
        events.append(("color", t, t + 0.003))
    sets = _stream(events, sync)
    assert len(sets) == n and all(all(v == s.stamp for v in s.stamps.values()) for s in sets)


def _best_spread(c: float, stream: dict[str, list[float]], tol: dict[str, float]) -> float:
    """Smallest spread (max - min stamp, colour included) of any set the whole stream allows."""
    import itertools

    cands = [[t for t in stream[k] if abs(t - c) <= tol[k]] for k in KEYS[1:]]
    return min(max(c, *combo) - min(c, *combo) for combo in itertools.product(*cands))


def test_jittered_stamps_and_slow_camera_info_give_the_smallest_spread() -> None:
    rng = np.random.default_rng(3)
    slop, max_pose_age = 0.05, 0.1
    tol = {"depth": slop, "camera_info": slop, "pose": max_pose_age}
    period, n = 1 / 30, 60
    stream: dict[str, list[float]] = {k: [] for k in KEYS}
    events = []
    for i in range(n):
        base = 10.0 + i * period
        c = base + rng.uniform(-0.004, 0.004)
        stream["color"].append(c)
        events.append(("color", c, c + rng.uniform(0, 0.01)))
        for key in ("depth", "pose"):
            t = base + rng.uniform(-0.008, 0.008)
            stream[key].append(t)
            events.append((key, t, t + rng.uniform(0, 0.01)))
        if i % 3 == 0:  # camera info at 10 Hz
            t = base + rng.uniform(-0.004, 0.004)
            stream["camera_info"].append(t)
            events.append(("camera_info", t, t + rng.uniform(0, 0.01)))
    sync = make(slop=slop, queue=30, max_pose_age=max_pose_age)
    sets = _stream(events, sync)
    # the last frames may still wait for a later partner; every earlier one is emitted
    assert len(sets) >= n - 2 and sum(sync.stats().rejected.values()) == 0
    info_used = set()
    for s in sets:
        spread = max(s.stamps.values()) - min(s.stamps.values())
        assert spread == pytest.approx(_best_spread(s.stamp, stream, tol), abs=1e-9), s.stamps
        info_used.add(s.stamps["camera_info"])
    assert len(info_used) < len(sets) / 2  # a 10 Hz camera info serves several frames


def test_matched_partner_not_reused_when_a_better_one_arrives_later() -> None:
    sync = make(slop=0.05)
    for key in KEYS:
        feed(sync, key, 1.0)
    sets, _ = feed(sync, "color", 1.033)  # partners of 1.0 are within slop, but 1.033 comes next
    assert not sets
    for key in ("depth", "camera_info"):
        assert not feed(sync, key, 1.033)[0]
    sets, _ = feed(sync, "pose", 1.033)
    assert len(sets) == 1 and set(sets[0].stamps.values()) == {1.033}


def test_partners_used_at_most_as_often_as_the_stream_needs() -> None:
    """Every emitted set keeps the per-reason accounting; emitted + rejected covers every frame."""
    sync = make(slop=0.05, queue=5)
    for i in range(10):
        t = 1.0 + i / 30
        feed(sync, "color", t)
        if i != 4:  # depth of frame 4 lost: frame 4 takes the nearest other depth within slop
            feed(sync, "depth", t)
        feed(sync, "camera_info", t)
        feed(sync, "pose", t)
    st = sync.stats()
    assert st.emitted == 10 and not st.rejected
