#!/usr/bin/env python3
"""Compare the tests a pytest run skipped with the skips expected on this machine.

    python3 .ci/check_skips.py JUNIT_XML EXPECTED_FILE

JUNIT_XML is pytest's ``--junitxml`` report (``-o junit_family=xunit1``, so that each test case
names its file and the test ids below are pytest's node ids); EXPECTED_FILE lists one node id a
line (``test/test_ros_tools.py::test_rviz_argument_starts_rviz``; a module skipped at collection
is its path), ``#`` starts a comment line. Exit status 0 when the skipped set is exactly the
expected set, 1 when it differs (each unexpected skip is printed with its reason, each expected
skip that ran or is no longer in the run is named), 2 when the report is missing or unreadable.
Standard library only: ``.ci/run`` calls it with any python3, outside the project's venv.
"""
from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunSkips:
    """What a junit report says: every test id of the run, and the skipped ones with reasons."""

    tests: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)  # node id -> reason


@dataclass
class SkipDiff:
    unexpected: dict[str, str]  # skipped, not expected: node id -> reason
    ran: list[str]  # expected to skip, but ran (passed or failed)
    absent: list[str]  # expected to skip, but not in the run at all (renamed? removed?)

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.ran or self.absent)


def _node_id(case: ET.Element) -> str:
    """pytest's node id of a junit <testcase>: 'test/test_x.py::TestK::test_p[a.b]'."""
    classname, name, path = case.get("classname", ""), case.get("name", ""), case.get("file")
    if path:
        module = path[:-3].replace("/", ".") if path.endswith(".py") else path.replace("/", ".")
        if not classname and name == module:  # a whole module skipped (or failed) at collection
            return path
        if classname == module or classname.startswith(module + "."):
            classes = classname[len(module) + 1 :].split(".") if classname != module else []
            return "::".join([path, *[c for c in classes if c], name])
    # xunit2 reports carry no file: the dotted class name is the best id there is
    return f"{classname}::{name}" if classname else name


def _reason(skipped: ET.Element) -> str:
    message = skipped.get("message") or ""
    if message == "collection skipped" and skipped.text:
        # the text is repr((path, line, 'Skipped: reason'))
        try:
            value = ast.literal_eval(skipped.text.strip())
            message = str(value[2]) if isinstance(value, tuple) and len(value) == 3 else message
        except (ValueError, SyntaxError):
            pass
    return message.removeprefix("Skipped: ").strip() or "(no reason given)"


def read_report(path: str | Path) -> RunSkips:
    """The test ids and skips (with their reasons) of a pytest junit xml report. Expected
    failures (xfail, reported as skipped with type pytest.xfail) are not skips."""
    run = RunSkips()
    for case in ET.parse(path).getroot().iter("testcase"):
        node = _node_id(case)
        run.tests.add(node)
        skipped = case.find("skipped")
        if skipped is not None and skipped.get("type") != "pytest.xfail":
            run.skipped[node] = _reason(skipped)
    return run


def read_expected(path: str | Path) -> set[str]:
    """Node ids, one a line; blank lines and lines starting with '#' are ignored."""
    ids = set()
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.add(line)
    return ids


def compare(run: RunSkips, expected: set[str]) -> SkipDiff:
    unexpected = {k: v for k, v in sorted(run.skipped.items()) if k not in expected}
    missing = sorted(expected - set(run.skipped))
    return SkipDiff(
        unexpected=unexpected,
        ran=[k for k in missing if k in run.tests],
        absent=[k for k in missing if k not in run.tests],
    )


def format_diff(diff: SkipDiff, run: RunSkips, expected_file: str) -> str:
    if diff.ok:
        return (
            f"skips as expected: {len(run.skipped)} of {len(run.tests)} tests skipped, "
            f"exactly those listed in {expected_file}"
        )
    lines = [f"the skipped tests differ from {expected_file} ({len(run.skipped)} of {len(run.tests)} tests skipped):"]
    if diff.unexpected:
        lines.append(f"  {len(diff.unexpected)} unexpected skip(s):")
        lines += [f"    SKIPPED {k}\n        reason: {v}" for k, v in diff.unexpected.items()]
    if diff.ran:
        lines.append(f"  {len(diff.ran)} expected skip(s) that ran instead (if they now run on CI, drop them from the list):")
        lines += [f"    RAN     {k}" for k in diff.ran]
    if diff.absent:
        lines.append(f"  {len(diff.absent)} expected skip(s) not in this run at all (renamed or removed?):")
        lines += [f"    ABSENT  {k}" for k in diff.absent]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    report, expected_file = args
    try:
        run = read_report(report)
    except (OSError, ET.ParseError) as e:
        print(f"check_skips: no readable pytest junit report at {report} ({e}); did the test command run pytest?", file=sys.stderr)
        return 2
    if not run.tests:
        print(f"check_skips: {report} lists no tests at all", file=sys.stderr)
        return 1
    diff = compare(run, read_expected(expected_file))
    print(("check_skips: " if diff.ok else "check_skips: FAIL: ") + format_diff(diff, run, expected_file), file=sys.stderr)
    return 0 if diff.ok else 1


if __name__ == "__main__":
    sys.exit(main())
