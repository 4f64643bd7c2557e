"""Approximate-time synchroniser of the ROS layer (pure Python, no ROS graph)."""
from __future__ import annotations

import threading

import pytest

from core3d_ros.core.frame import FrameError
from core3d_ros.ros.sync import ApproximateTimeSync, check_pose_age

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
