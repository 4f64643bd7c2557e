"""The entry point every core3d executable shares: nodes spun on one executor until a signal.

    sys.exit(run_nodes(argv, prog="core3d_mapping", build=lambda config_file: [MappingNode(...)]))
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from typing import Any, Callable

import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from ..config import ConfigError


def exit_now_if_busy(code: int) -> int:
    """After the nodes shut down, a thread may still be inside a model call, which nothing can
    interrupt (a CPU keyframe takes minutes). Interpreter shutdown would then tear the library
    down under it and C++ aborts the process (SIGABRT instead of the exit code), so end the
    process at once, output flushed. Returns ``code`` when no such thread is left. Only for a
    process's entry point: it never returns into a caller when it exits."""
    # Threads that mark themselves idle (the fusion engine's workers waiting for a frame) are
    # no work in flight.
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not getattr(t, "idle", False)]
    if busy:
        print(f"ending with {len(busy)} thread(s) still busy: {', '.join(t.name for t in busy)[:200]}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run_nodes(argv: list[str] | None, *, prog: str, build: Callable[[str | None], list[Node]]) -> int:
    """The entry point of every core3d executable: parse ``--config FILE`` and the ROS
    arguments, ``build(config_file)`` the nodes, spin them on one MultiThreadedExecutor until
    SIGINT/SIGTERM, then shut down cleanly.

    Exit codes: 0 after a signal, 2 for a configuration error (one line naming the parameter),
    1 when the executor stopped on its own (an unexpected error).
    """
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description="core3d online open-vocabulary 3D mapping (ROS 2)")
    parser.add_argument("--config", metavar="FILE", help="YAML config (nested or ROS parameters file)")
    opts = parser.parse_args(remove_ros_args([prog, *args])[1:])

    # The interpreter lock changes hands every 1 ms instead of 5: a query waits less behind
    # the mapping threads' Python (core3d bench load: p99 298-367 ms -> 143 ms on this CPU).
    sys.setswitchinterval(0.001)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        # Every SIGINT / SIGTERM asks for the same clean shutdown (exit code 0). Under `ros2
        # launch` a terminal Ctrl-C reaches the node twice (its process group, then launch
        # forwarding SIGINT), so a repeated signal must not turn into a hard exit; the shutdown
        # below is bounded by timeouts, and launch escalates to SIGKILL if it ever hangs.
        stop.set()

    # Our own handlers instead of rclpy's: a KeyboardInterrupt cannot then land in the middle
    # of the shutdown sequence below.
    rclpy.init(args=[prog, *args], signal_handler_options=SignalHandlerOptions.NO)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    nodes: list[Node] = []
    executor = None
    spinner = None
    code = 0
    spin_error: list[BaseException] = []

    def spin() -> None:
        try:
            executor.spin()
        except BaseException as e:  # callbacks are guarded; this is the executor itself failing
            spin_error.append(e)
            traceback.print_exc()

    try:
        nodes.extend(build(opts.config))
        executor = MultiThreadedExecutor(num_threads=4 + 2 * (len(nodes) - 1))
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=spin, name="core3d_executor", daemon=True)
        spinner.start()
        while not stop.is_set() and spinner.is_alive():
            stop.wait(0.2)
        if not stop.is_set():  # the executor stopped on its own: an error, never exit code 0
            print(f"{prog}: the executor stopped unexpectedly: {spin_error[:1]}", file=sys.stderr)
            code = 1
    except ConfigError as e:
        print(f"{prog}: configuration error: {e}", file=sys.stderr)
        code = 2
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if spinner is not None:
            spinner.join(5.0)  # no thread may still wait on the nodes' entities below
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
