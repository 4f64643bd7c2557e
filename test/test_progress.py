"""core3d_ros.progress: the start-up phase lines of the demo and the nodes (no ROS)."""
from __future__ import annotations

import re
import threading
import time

import pytest

from core3d_ros.progress import Progress


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)


def test_a_quick_phase_is_one_line() -> None:
    out = Lines()
    progress = Progress("demo", out, every=5.0)
    with progress.phase("making the synthetic room"):
        pass
    assert len(out.lines) == 1
    assert re.fullmatch(r"\[demo +\d+\.\d s\] making the synthetic room\.\.\.", out.lines[0])


def test_a_long_phase_says_still_and_how_long() -> None:
    out = Lines()
    progress = Progress("start-up", out, every=0.05)
    with progress.phase("waiting for the services") as p:
        p.detail = "3/48 frames"
        time.sleep(0.3)
    assert out.lines[0].endswith("] waiting for the services...")
    still = [line for line in out.lines if "still waiting for the services (" in line]
    assert len(still) >= 2 and all(line.endswith("s, 3/48 frames)") for line in still)
    assert re.search(r"\] waiting for the services: done in \d+\.\d s$", out.lines[-1])
    n = len(out.lines)
    time.sleep(0.12)
    assert len(out.lines) == n  # the ticker stopped with the phase


def test_ticks_can_be_turned_off_and_failures_say_no_done() -> None:
    out = Lines()
    progress = Progress("", out, every=0.05)
    with progress.phase("publishing", every=0):
        time.sleep(0.12)
    assert [line.split("] ", 1)[1] for line in out.lines][0] == "publishing..."
    assert len(out.lines) == 2 and re.search(r"\] publishing: done in \d+\.\d s$", out.lines[1])
    out.lines.clear()
    with pytest.raises(RuntimeError):
        with progress.phase("waiting for the node"):
            time.sleep(0.07)
            raise RuntimeError("the node exited")
    assert not any("done" in line for line in out.lines)
    assert re.fullmatch(r"\[ *\d+\.\d s\] waiting for the node\.\.\.", out.lines[0])


def test_default_goes_to_stderr(capsys: pytest.CaptureFixture) -> None:
    Progress("demo").say("starting the mapping node")
    captured = capsys.readouterr()
    assert captured.out == "" and "] starting the mapping node" in captured.err


class FakeDiagnostics:
    """The node's /diagnostics as the demo reads them, changed by each spin."""

    def __init__(self, **values: int) -> None:
        self.values = values

    def get(self, key: str, default: int = 0) -> int:
        return self.values.get(key, default)


def _wait(diag: FakeDiagnostics, published: int, timeout: float, spin=lambda: time.sleep(0.01)) -> float:
    from core3d_ros.tools.demo import _wait_until_mapped

    with Progress("demo", Lines(), every=0).phase("waiting for the node to map every frame") as p:
        t0 = time.monotonic()
        _wait_until_mapped(spin, diag, published, p, timeout=timeout, quiet=0.2)
        return time.monotonic() - t0


def test_demo_waits_until_every_frame_is_mapped() -> None:
    diag = FakeDiagnostics(frames_received=48, frames_processed=40, work_queue_length=3)

    def spin() -> None:  # the node maps a frame a spin
        time.sleep(0.01)
        diag.values["frames_processed"] = min(48, diag.values["frames_processed"] + 1)
        diag.values["work_queue_length"] = max(0, diag.values["work_queue_length"] - 1)

    assert _wait(diag, 48, timeout=10.0, spin=spin) < 5.0
    assert diag.values["frames_processed"] == 48


def test_demo_does_not_wait_for_frames_that_never_arrived() -> None:
    """3 of 48 frames lost before the subscriptions matched: the wait ends once the node has
    handled the 45 it got and gone quiet, not after the full timeout (156 s in a real run)."""
    diag = FakeDiagnostics(frames_received=45, frames_processed=42, frames_dropped=3, work_queue_length=0)
    assert _wait(diag, 48, timeout=10.0) < 5.0


def test_demo_keeps_waiting_while_the_node_works() -> None:
    diag = FakeDiagnostics(frames_received=45, frames_processed=44, work_queue_length=0)  # one frame in the worker
    assert _wait(diag, 48, timeout=0.6) >= 0.6
