"""CI cannot pass by skipping: the required-parts check names what is missing, a skip other
than a missing GPU fails a CI session (tests/ci_skips.py), locally skips stay skips, and the
PP-OCR test data is read from a prepared cache, never fetched by a test."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import required_parts

SCRIPT = Path(required_parts.__file__)
TESTS = """
    import pytest

    def test_ok():
        pass

    def test_browser():
        pytest.skip("no Chromium binary: apt-get install chromium")

    @pytest.mark.gpu
    def test_cuda():
        pytest.skip("no CUDA device")

    @pytest.mark.xfail(reason="known", strict=True)
    def test_known():
        assert False
"""


def _session(pytester, monkeypatch, ci, body=TESTS):
    pytester.makeini("[pytest]\nmarkers =\n    gpu: a GPU test\n")
    pytester.makepyfile(test_x=body)
    pytester.makeconftest("from ci_skips import pytest_configure  # noqa: F401\n")
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    return pytester.runpytest("-rs")


def test_under_ci_a_skip_that_is_not_a_gpu_fails_the_session(pytester, monkeypatch):
    result = _session(pytester, monkeypatch, ci=True)
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*skips fail under CI (only a missing GPU may skip)*",
        "SKIPPED test_x.py::test_browser: no Chromium binary: apt-get install chromium",
        "1 test(s) skipped under CI=true: install the missing part*"])
    assert "SKIPPED test_x.py::test_cuda:" not in result.stdout.str()


def test_under_ci_a_gpu_skip_alone_passes_and_locally_skips_stay_skips(pytester, monkeypatch):
    gpu_only = TESTS.replace('pytest.skip("no Chromium binary: apt-get install chromium")',
                             "pass")
    result = _session(pytester, monkeypatch, ci=True, body=gpu_only)
    result.assert_outcomes(passed=2, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result = _session(pytester, monkeypatch, ci=False)
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK and "fail under CI" not in result.stdout.str()


def _check(**env):
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_the_parts_check_fails_naming_the_missing_part(tmp_path):
    proc = _check(PATH="/nonexistent", INFERBENCH_CHROMIUM="",
                  INFERBENCH_GUIDELLM_VENV=str(tmp_path / "no-venv"),
                  INFERBENCH_TEST_WHEELS=str(tmp_path / "no-wheels"))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(line.startswith("MISSING  chromium") and "apt-get install chromium" in line
               for line in lines), proc.stdout
    assert any(line.startswith("MISSING  GuideLLM") and str(tmp_path / "no-venv") in line
               for line in lines), proc.stdout
    assert any(line.startswith("MISSING  prepared test data")
               and "scripts/prepare_test_data.sh" in line for line in lines), proc.stdout
    assert "required real parts missing: chromium" in proc.stderr


def _conversions(pytester, monkeypatch, ci, wheels):
    """A subprocess pytest session of one PP-OCR test, reading the wheel from `wheels`."""
    monkeypatch.setenv("INFERBENCH_TEST_WHEELS", str(wheels))
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    test = Path(__file__).with_name("test_conversions.py")
    return pytester.runpytest_subprocess(
        f"{test}::test_cls_int8_dynamic_and_static_pass_the_check", "-rs", "-p",
        "no:cacheprovider")


def test_missing_prepared_data_skips_locally_naming_the_command_and_fails_under_ci(
        pytester, monkeypatch, tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    result = _conversions(pytester, monkeypatch, ci=False, wheels=empty)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*not in {empty}: run `scripts/prepare_test_data.sh`*"])
    result = _conversions(pytester, monkeypatch, ci=True, wheels=empty)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*CI: PP-OCR's ONNX models*not in {empty}*"])
    assert not any(empty.iterdir())                      # nothing was fetched
