"""The real parts CI must have: the one list. `.ci/run` runs this file before the tests
(`python tests/required_parts.py`) and stops naming whatever is missing; a test that needs a
part skips locally with the same words, and under CI (CI=true) any skip but a GPU one fails the
session (tests/ci_skips.py). Nothing here imports pytest or the plugin.

Each part: a name, and a check returning None (present) or what is missing and how to get it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# PP-OCR's ONNX models inside the PyPI wheel rapidocr-onnxruntime (tests/test_conversions.py)
PPOCR_WHEEL = "rapidocr-onnxruntime==1.4.4"
WHEELS = Path(os.environ.get("INFERBENCH_TEST_WHEELS",
                             Path.home() / ".cache" / "pytest-inferbench-tests" / "wheels"))
PREPARE = "scripts/prepare_test_data.sh"
GUIDELLM_VENV = Path(os.environ.get("INFERBENCH_GUIDELLM_VENV", ROOT / ".venv-guidellm"))
MLSERVER_VENV = ROOT / ".venv-mlserver"


def ci() -> bool:
    """Running under CI (the CI=true convention of GitHub Actions, GitLab, .ci/run)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def chromium() -> str | None:
    for name in (os.environ.get("INFERBENCH_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def ppocr_wheel() -> Path | None:
    return next(iter(sorted(WHEELS.glob("rapidocr_onnxruntime-1.4.4-*.whl"))), None)


def _browser():
    if chromium() is None:
        return ("no Chromium binary (chromium, chromium-browser, google-chrome; or set "
                "INFERBENCH_CHROMIUM): apt-get install chromium")
    return None


def _followers():
    if os.geteuid() != 0:
        return "network namespaces and veth pairs need root"
    for tool, package in (("ip", "iproute2"), ("ssh", "openssh-client"),
                          ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            return f"no `{tool}` command: apt-get install {package}"
    if not Path("/usr/sbin/sshd").exists():
        return "no sshd at /usr/sbin/sshd: apt-get install openssh-server"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns list` fails: network namespaces are not available here"
    return None


def _postgresql():
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found or not Path(found[0]).with_name("pg_ctl").exists():
        return "no initdb/pg_ctl under /usr/lib/postgresql: apt-get install postgresql"
    if shutil.which("runuser") is None:
        return "no runuser (util-linux) to start the cluster as user postgres"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not importable here: pip install -e '.[test]'"
    return None


def _guidellm():
    if not (GUIDELLM_VENV / "bin" / "guidellm").exists():
        return (f"no guidellm at {GUIDELLM_VENV}/bin/guidellm: `/usr/bin/python3.11 -m venv "
                f"{GUIDELLM_VENV} && {GUIDELLM_VENV}/bin/pip install torch==2.13.0 && "
                f"{GUIDELLM_VENV}/bin/pip install guidellm==0.8.1` (or set "
                f"INFERBENCH_GUIDELLM_VENV)")
    return None


def _mlserver():
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        return (f"no mlserver at {MLSERVER_VENV}/bin/mlserver: `/usr/bin/python3.11 -m venv "
                f"{MLSERVER_VENV} && {MLSERVER_VENV}/bin/pip install mlserver==1.7.1 "
                f"mlserver-sklearn==1.7.1 uvloop==0.21.0`")
    return None


def prepared_test_data():
    if ppocr_wheel() is None:
        return (f"PP-OCR's ONNX models (the wheel {PPOCR_WHEEL}) are not in {WHEELS}: run "
                f"`{PREPARE}` where PyPI is reachable (INFERBENCH_TEST_WHEELS names the folder)")
    return None


PARTS = {   # name -> check; what CI must have (docs: README, "Run the tests")
    "chromium (the HTML report in a real browser)": _browser,
    "sshd + network namespaces (followers on real hosts)": _followers,
    "PostgreSQL (the results store)": _postgresql,
    "GuideLLM mock server venv (generative serving)": _guidellm,
    "MLServer venv (a KServe v2 server nobody here wrote)": _mlserver,
    "prepared test data (PP-OCR ONNX files from a wheel)": prepared_test_data,
}


def missing() -> dict[str, str]:
    """{part: what is missing and how to get it} for every absent part."""
    return {name: why for name, check in PARTS.items() if (why := check()) is not None}


def main() -> int:
    gone = missing()
    for name in PARTS:
        print(f"{'MISSING' if name in gone else 'ok':8} {name}"
              + (f": {gone[name]}" if name in gone else ""))
    if gone:
        print(f"required real parts missing: {', '.join(gone)}; the tests that need them would "
              f"only skip, so CI stops here", file=sys.stderr)
    return 1 if gone else 0


if __name__ == "__main__":
    sys.exit(main())
