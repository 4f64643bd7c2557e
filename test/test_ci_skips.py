"""`.ci/check_skips.py`: the skipped tests of a pytest junit report against the expected list
(what `.ci/run` fails on). Cheap: no ROS; one small pytest run in a subprocess."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("check_skips", ROOT / ".ci" / "check_skips.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_skips"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cs = _load()

TINY_TESTS = {
    "test_a.py": """
import pytest
def test_ok(): pass
def test_skip(): pytest.skip("no rviz2 here")
@pytest.mark.skipif(True, reason="tools missing")
def test_marked(): pass
@pytest.mark.xfail(reason="known")
def test_xfail(): assert 0
class TestK:
    @pytest.mark.parametrize("x", [1, "a.b"])
    def test_p(self, x):
        if x == 1:
            pytest.skip("param one")
""",
    "sub/__init__.py": "",
    "sub/test_b.py": "import pytest\npytest.importorskip('core3d_no_such_module')\ndef test_never(): pass\n",
}
SKIPPED = {
    "test/test_a.py::test_skip": "no rviz2 here",
    "test/test_a.py::test_marked": "tools missing",
    "test/test_a.py::TestK::test_p[1]": "param one",
    "test/sub/test_b.py": "could not import 'core3d_no_such_module': No module named 'core3d_no_such_module'",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The junit report of a real pytest run over a tiny test tree, as .ci/run asks for it."""
    root = tmp_path_factory.mktemp("tiny")
    for name, text in TINY_TESTS.items():
        (root / "test" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "test" / name).write_text(text)
    xml = root / "junit.xml"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}  # not .ci/run's own report
    env["PYTEST_ADDOPTS"] = f"-rs -o junit_family=xunit1 --junitxml={xml}"
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:dash", "test"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return xml


def _expected(tmp_path: Path, ids) -> Path:
    path = tmp_path / "expected.txt"
    path.write_text("# why these skip\n\n" + "\n".join(ids) + "\n")
    return path


def test_report_gives_node_ids_and_reasons(report: Path) -> None:
    run = cs.read_report(report)
    assert run.skipped == SKIPPED  # xfail is not a skip
    assert {"test/test_a.py::test_ok", "test/test_a.py::test_xfail", "test/test_a.py::TestK::test_p[a.b]"} <= run.tests


def test_expected_set_passes(report: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cs.main([str(report), str(_expected(tmp_path, SKIPPED))]) == 0
    assert "skips as expected: 4 of" in capsys.readouterr().err


def test_differences_fail_and_are_named(report: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ids = [k for k in SKIPPED if k != "test/test_a.py::test_marked"]
    ids += ["test/test_a.py::test_ok", "test/test_gone.py::test_old"]
    assert cs.main([str(report), str(_expected(tmp_path, ids))]) == 1
    err = capsys.readouterr().err
    assert "SKIPPED test/test_a.py::test_marked\n        reason: tools missing" in err
    assert "RAN     test/test_a.py::test_ok" in err
    assert "ABSENT  test/test_gone.py::test_old" in err


def test_compare_splits_the_differences() -> None:
    run = cs.RunSkips(tests={"a", "b", "c"}, skipped={"a": "why a", "b": "why b"})
    diff = cs.compare(run, {"a", "c", "d"})
    assert (diff.unexpected, diff.ran, diff.absent, diff.ok) == ({"b": "why b"}, ["c"], ["d"], False)
    assert cs.compare(run, {"a", "b"}).ok


def test_missing_or_empty_report_fails(tmp_path: Path) -> None:
    expected = _expected(tmp_path, [])
    assert cs.main([str(tmp_path / "none.xml"), str(expected)]) == 2
    empty = tmp_path / "empty.xml"
    empty.write_text('<testsuites><testsuite name="pytest" tests="0"/></testsuites>')
    assert cs.main([str(empty), str(expected)]) == 1


def test_ci_list_names_existing_test_files() -> None:
    """Every id of the CI list points into a test file of this tree (a typo would only show as
    an ABSENT line on CI); today only the rviz2 case, which PyPI cannot provide, is listed."""
    ids = cs.read_expected(ROOT / ".ci" / "expected-skips.txt")
    assert "test/test_ros_tools.py::test_rviz_argument_starts_rviz" in ids
    for node_id in ids:
        assert (ROOT / node_id.split("::")[0]).is_file(), node_id
