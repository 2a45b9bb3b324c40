"""Documented features that had no test of their own (issue 28, item 4), each driven through
real pytest sessions of the plugin:

- the report's Trends section (docs/history.md): absent after a cell's first run, then each
  cell's p50, p99 and throughput over the runs in the results store;
- `--infer-baseline latest` (docs/baselines-and-gating.md): the newest earlier run file, and
  what a first run does;
- disjoint CPUs for a launched server and the load generator (docs/workloads-and-serving.md,
  `serving.cpu_affinity`, `pin_cpus`), observed with sched_getaffinity while it runs;
- the options and ini keys (docs/spec-reference.md): each registered one is in that page's
  Options table, and each ini key (with the option or variable that overrides it) takes
  effect. inferbench_fail_on has its own tests in tests/test_verdicts.py."""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"""
name: t
defaults: {{{FAST}}}
benchmarks:
  - model: mlp-tiny
    runtime: torch
"""


def _session(where: Path, *args, timeout=300) -> subprocess.CompletedProcess:
    """One pytest session of the plugin in `where` (its own rootdir), in a subprocess; no
    device leases (another session on this host must not make these wait)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("INFERBENCH_STORE", "INFERBENCH_CACHE_DIR", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "--infer-no-progress", "--infer-no-leases", *args],
                          cwd=where, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _runs(where: Path) -> list[Path]:
    return sorted((where / ".inferbench" / "runs").glob("*.json"),
                  key=lambda p: p.stat().st_mtime)


# ----------------------------------------------------------------------------- HTML

class _Page(HTMLParser):
    """The report's sections (id -> the ids of the chart divs inside it), its table of
    contents' links, the figures' JSON and each figure's caption."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.toc: list[str] = []
        self.captions: dict[str, str] = {}
        self.figures: dict = {}
        self._section = self._in_toc = self._script = self._figure = self._caption = None
        self._text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self._section = a["id"]
            self.sections[self._section] = []
        elif tag == "nav" and "toc" in (a.get("class") or ""):
            self._in_toc = True
        elif tag == "a" and self._in_toc and a.get("href", "").startswith("#"):
            self.toc.append(a["href"][1:])
        elif tag == "div" and "plot" in (a.get("class") or "").split() and self._section:
            self.sections[self._section].append(a["id"])
            self._figure = a["id"]
        elif tag == "figcaption" and self._figure:
            self._caption, self._text = self._figure, []
        elif tag == "script" and a.get("id") == "ib-figures":
            self._script, self._text = True, []

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag == "nav":
            self._in_toc = None
        elif tag == "figcaption" and self._caption:
            self.captions[self._caption] = "".join(self._text).strip()
            self._caption = self._figure = None
        elif tag == "script" and self._script:
            self.figures = json.loads("".join(self._text))
            self._script = None

    def handle_data(self, data):
        if self._caption or self._script:
            self._text.append(data)


# ----------------------------------------------------------------------------- latest + Trends

@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory):
    """Two sessions of one cell, each with --infer-baseline latest and the default results
    store; between them, an older run file (another name, an older mtime) in the runs
    directory, which `latest` must pass over."""
    where = tmp_path_factory.mktemp("latest")
    (where / "pytest.ini").write_text("[pytest]\n")
    (where / "bench_t.yaml").write_text(SPEC)
    first = _session(where, "--infer-baseline", "latest", "--infer-html", "first.html")
    assert first.returncode == 0, first.stdout + first.stderr
    (run1,) = _runs(where)
    older = run1.with_name("20000101-000000-1.json")
    shutil.copy(run1, older)
    os.utime(older, (946684800, 946684800))           # 2000-01-01: older than run 1
    second = _session(where, "--infer-baseline", "latest", "--infer-no-gate",
                      "--infer-html", "second.html")
    assert second.returncode == 0, second.stdout + second.stderr
    run2 = next(p for p in _runs(where) if p not in (run1, older))
    return {"where": where, "first": first, "second": second, "run1": run1, "run2": run2,
            "older": older}


def test_latest_without_an_earlier_run_compares_nothing_and_says_so(two_sessions):
    """docs/baselines-and-gating.md: `latest` needs no saved baseline and finds its run at the
    end; a first run has none: it passes, says so, and its run file has no comparison."""
    first, where = two_sessions["first"], two_sessions["where"]
    runs_dir = where / ".inferbench" / "runs"
    assert f"warning: no earlier run in {runs_dir}: nothing compared" in first.stdout, \
        first.stdout
    assert "against baseline" not in first.stdout
    doc = json.loads(two_sessions["run1"].read_text())
    assert "comparison" not in doc and doc["results"][0]["status"] == "passed"


def test_latest_compares_with_the_newest_earlier_run_file(two_sessions):
    """The second session compares with the first session's run file, not with an older run
    file beside it (the newest by time, not the first found); the gate section and the run
    file name it."""
    run1, run2, older = two_sessions["run1"], two_sessions["run2"], two_sessions["older"]
    out = two_sessions["second"].stdout
    doc = json.loads(run2.read_text())
    c = doc["comparison"]
    assert c["baseline"]["label"] == run1.name and c["baseline"]["path"] == str(run1), c
    first_doc = json.loads(run1.read_text())
    assert c["baseline"]["start_time"] == first_doc["provenance"]["start_time"]
    assert c["new"]["start_time"] == doc["provenance"]["start_time"] != c["baseline"][
        "start_time"]
    (entry,) = c["verdicts"]                            # the cell was compared, not skipped
    assert entry["mode"] == "stored" and entry["id"] == doc["results"][0]["id"], entry
    assert {m["metric"] for m in entry["metrics"]} == {"p50", "throughput"}
    assert c["only_in_baseline"] == c["only_in_new"] == []
    assert re.search(rf"\) against baseline {re.escape(run1.name)} \(", out), out
    assert older.name not in out


def test_the_trends_section_waits_for_a_second_run(two_sessions):
    """docs/history.md: a cell is drawn in the Trends section once it has two runs in the
    store; after the first session there is neither the section nor its link."""
    page = _Page((two_sessions["where"] / "first.html").read_text())
    assert "cells" in page.sections and "summary" in page.sections   # the page was read
    assert "trends" not in page.sections and "trends" not in page.toc, page.toc
    assert "results store: sqlite:///" in two_sessions["first"].stdout


def test_the_trends_section_draws_each_cells_runs_from_the_store(two_sessions):
    """After the second session: a Trends section (linked from the table of contents) with
    one chart for the cell, its p50 and p99 (ms, left axis) and throughput (right axis) at
    runs 1 and 2, oldest first, the values the two run files hold, and each run's date on
    hover; the caption counts the runs."""
    where = two_sessions["where"]
    page = _Page((where / "second.html").read_text())
    assert "trends" in page.toc
    (chart,) = page.sections["trends"]
    figure = page.figures[chart]
    docs = [json.loads(two_sessions[k].read_text()) for k in ("run1", "run2")]
    results = [d["results"][0] for d in docs]
    cell = "bench_t.yaml::mlp-tiny[torch-cpu-fp32-bs1-offline]"
    assert cell in json.dumps(figure["layout"]["title"])
    traces = {t["name"]: t for t in figure["data"]}
    assert set(traces) == {"p50 (ms)", "p99 (ms)", "throughput (/s)"}
    for name, want in (("p50 (ms)", [r["latency_ms"]["percentiles"]["p50"]["value"]
                                     for r in results]),
                       ("p99 (ms)", [r["latency_ms"]["percentiles"]["p99"]["value"]
                                     for r in results]),
                       ("throughput (/s)", [r["throughput"]["samples_per_s"]
                                            for r in results])):
        assert traces[name]["x"] == [1, 2], traces[name]
        assert traces[name]["y"] == pytest.approx(want, rel=1e-9), name
    assert traces["throughput (/s)"].get("yaxis") == "y2"
    assert figure["layout"]["yaxis2"]["side"] == "right"
    assert "yaxis" not in traces["p50 (ms)"] and "yaxis" not in traces["p99 (ms)"]
    for k, doc in enumerate(docs):                       # oldest first, dated on hover
        assert doc["provenance"]["start_time"][:19] in traces["p50 (ms)"]["text"][k]
    assert page.captions[chart].startswith("2 runs on "), page.captions[chart]
    assert "dashed lines: change points" in page.captions[chart]


# ----------------------------------------------------------------------------- CPU pinning

# A conftest for the session under test: a thread that watches, while pytest runs, the CPUs
# of pytest's main thread (transitions, with the time) and of every process of a launched
# server's tree (keyed by the server's port, the last word of each one's command line: each
# distinct set seen, and the last), and writes what it saw at the end.
WATCHER = '''
import json, os, threading, time
import psutil

SEEN = {"main": [], "servers": {}}
_stop = threading.Event()
_thread = None


def _watch():
    me = psutil.Process()
    main = threading.main_thread().native_id
    last = None
    while not _stop.is_set():
        cpus = sorted(os.sched_getaffinity(main))
        if cpus != last:
            SEEN["main"].append([time.time(), cpus])
            last = cpus
        for child in me.children(recursive=True):
            try:
                argv = child.cmdline()
                if "pytest_inferbench.serving" not in " ".join(argv):
                    continue
                seen = SEEN["servers"].setdefault(argv[-1], {}).setdefault(
                    str(child.pid), {"sets": [], "last": None})
                now = sorted(child.cpu_affinity())
                seen["last"] = now
                if now not in seen["sets"]:
                    seen["sets"].append(now)
            except psutil.Error:
                pass
        time.sleep(0.002)


def pytest_configure(config):
    global _thread
    _thread = threading.Thread(target=_watch, daemon=True)
    _thread.start()


def pytest_unconfigure(config):
    _stop.set()
    _thread.join()
    SEEN["after"] = sorted(os.sched_getaffinity(0))
    with open(os.environ["AFFINITY_LOG"], "w") as f:
        json.dump(SEEN, f)
'''


def _active(transitions: list, at: float) -> list:
    """The CPU set in force at time `at` (transitions: [time, cpus], in order)."""
    current = None
    for t, cpus in transitions:
        if t > at:
            break
        current = cpus
    return current


def test_a_launched_server_and_the_load_generator_run_on_disjoint_cpus(pytester, monkeypatch):
    """docs/workloads-and-serving.md, Disjoint CPUs: with two or more cores, the launched
    server and every process it starts run on all cores but the first, the pytest process
    that issues the requests runs on the first while it measures (and gets its CPUs back
    afterwards), and the result records the split in `serving.cpu_affinity`; `pin_cpus:
    false` turns it off."""
    pytest.importorskip("tritonclient", reason="tritonclient not installed: "
                        "pip install 'pytest-inferbench[serve]'")
    cpus = sorted(os.sched_getaffinity(0))
    log = pytester.path / "affinity.json"
    monkeypatch.setenv("AFFINITY_LOG", str(log))
    pytester.makeconftest(WATCHER)
    pytester.makefile(".yaml", bench_pin=f"""
        name: pin
        defaults: {{{FAST}}}
        benchmarks:
          - model: mlp-tiny
            runtime: torch
            workload: single_stream
            serving: [http, {{system: http, pin_cpus: false}}]
        """)
    # a subprocess: tritonclient's HTTP stack (gevent) is not importable twice in one process
    result = pytester.runpytest_subprocess("--infer-json", "run.json", "--infer-no-html",
                                           "--infer-store", "none", "--infer-no-leases",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    seen = json.loads(log.read_text())
    pinned, unpinned = json.loads((pytester.path / "run.json").read_text())["results"]
    assert pinned["cell"]["serving"]["pin_cpus"] is True
    assert unpinned["cell"]["serving"]["pin_cpus"] is False
    assert unpinned["serving"]["cpu_affinity"] is None
    assert seen["after"] == cpus                       # pytest got its CPUs back
    for r in (pinned, unpinned):
        assert r["latency_ms"]["n"] > 0 and r["serving"]["system"] == "http"

    def tree(result) -> list[dict]:       # the processes of the server a result ran on
        procs = seen["servers"][result["serving"]["url"].rsplit(":", 1)[1]]
        assert len(procs) == 2, procs     # the guard and the server it started
        return list(procs.values())

    window, quiet = pinned["window"], unpinned["window"]
    if len(cpus) < 2:                    # a one-core host: nothing pinned, and it says so
        assert pinned["serving"]["cpu_affinity"] is None
        assert all(p["sets"] == [cpus] for p in tree(pinned)), seen["servers"]
        return
    split = {"client": cpus[:1], "server": cpus[1:]}
    assert pinned["serving"]["cpu_affinity"] == split
    # while it measured, pytest's main thread was on the first core only
    assert seen["main"][0][1] == cpus, seen["main"]              # before: every core
    assert _active(seen["main"], window["start"]) == split["client"], seen["main"]
    assert all(set(c) <= set(split["client"]) for t, c in seen["main"]
               if window["start"] <= t <= window["end"]), seen["main"]
    # the unpinned cell measured on every core
    assert _active(seen["main"], quiet["start"]) == cpus, seen["main"]
    assert _active(seen["main"], quiet["end"]) == cpus, seen["main"]
    # the pinned server's processes never had the first core (native libraries probe each
    # core they are allowed once at start: a set inside the server's is no fault); the
    # other server's had every core
    for p in tree(pinned):
        assert p["last"] == split["server"], seen["servers"]
        assert all(set(s) <= set(split["server"]) for s in p["sets"]), seen["servers"]
    for p in tree(unpinned):
        assert p["last"] == cpus and cpus in p["sets"], seen["servers"]


# ----------------------------------------------------------------------------- options, ini

def _options_table() -> str:
    """The rows of docs/spec-reference.md's Options table."""
    text = (ROOT / "docs" / "spec-reference.md").read_text()
    section = text[text.index("\n## Options\n"):]
    section = section[:section.index("\n## ", 1)]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_every_option_and_ini_key_is_in_the_spec_references_options_table(pytester):
    """tests/test_docs_match_code.py finds each registered name in some docs table; the
    reference page's Options table is where a user looks, so each is there, and each ini
    key's documented default is the one pytest gets with no ini file."""
    from test_docs_match_code import _registered
    options, ini = _registered(pytester)
    assert len(options) >= 15 and len(ini) >= 6, (options, ini)
    rows = _options_table()
    documented = set(re.findall(r"(--infer-[a-z-]+)", rows))
    documented_ini = set(re.findall(r"ini `(inferbench_\w+)`", rows))
    assert options - documented == set(), "registered, not in spec-reference's Options table"
    assert ini - documented_ini == set(), "ini keys not in spec-reference's Options table"
    config = pytester.parseconfig()
    for key in ("inferbench_runs_dir", "inferbench_cache_dir", "inferbench_baselines_dir",
                "inferbench_spec_patterns"):
        (row,) = [r for r in rows.splitlines() if f"ini `{key}`" in r]
        default = row.split("|")[2].strip().strip("`").split()
        got = config.getini(key)
        assert default == (got if isinstance(got, list) else [got]), (key, default, got)


ONNX_SPEC = f"""
name: ini
defaults: {{{FAST}}}
benchmarks:
  - model: mlp-tiny
"""


def test_each_ini_key_takes_effect_and_what_overrides_it(pytester, monkeypatch):
    """An ini file sets where specs are found, where run files, the results store, named
    baselines and converted models go: the first session collects and writes only there.
    A second one overrides them as documented: --infer-runs-dir, INFERBENCH_STORE and
    INFERBENCH_CACHE_DIR win over the ini; --infer-baseline NAME is looked up in the ini's
    baselines directory. (inferbench_fail_on: tests/test_verdicts.py.)"""
    for name in ("INFERBENCH_STORE", "INFERBENCH_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    root = pytester.path
    pytester.makeini("""
        [pytest]
        inferbench_spec_patterns = perf_*.yaml
        inferbench_runs_dir = out/runs
        inferbench_store = out/hist.db
        inferbench_baselines_dir = out/baselines
        inferbench_cache_dir = out/cache
        """)
    pytester.makefile(".yaml", perf_a=ONNX_SPEC)
    pytester.makefile(".yaml", bench_b=ONNX_SPEC.replace("name: ini", "name: default"))
    common = ("--infer-no-html", "--infer-no-leases", "--infer-no-progress",
              "-p", "no:cacheprovider")
    first = pytester.runpytest("--infer-save", "nightly", "-v", *common)
    first.assert_outcomes(passed=5)     # a saved baseline: 5 fresh processes by default
    out = first.stdout.str()
    assert "perf_a.yaml::mlp-tiny[onnxruntime-cpu-fp32-bs1-offline] PASSED" in out, out
    assert "perf_a.yaml::mlp-tiny[onnxruntime-cpu-fp32-bs1-offline-p5] PASSED" in out, out
    assert "bench_b.yaml" not in out                      # not a spec under these patterns
    (run,) = (root / "out" / "runs").glob("*.json")
    first.stdout.fnmatch_lines([f"run file: {run}",
                                f"results store: sqlite:///{root}/out/hist.db (run 1, 5 results)",
                                "saved baseline nightly with 5 fresh processes per cell (the "
                                f"noise between processes kept): {root}/out/baselines/"
                                f"nightly.json"])
    results = json.loads(run.read_text())["results"]
    assert sorted(r["fresh_process"]["index"] for r in results) == [1, 2, 3, 4, 5]
    for result in results:      # every process found the artifact in the configured cache
        assert result["model"]["artifact"].startswith(f"{root}/out/cache/"), result["model"]
        assert Path(result["model"]["artifact"]).is_file()
    assert not (root / ".inferbench").exists()            # nothing in the default places

    monkeypatch.setenv("INFERBENCH_STORE", "env.db")
    monkeypatch.setenv("INFERBENCH_CACHE_DIR", str(root / "envcache"))
    second = pytester.runpytest("--infer-runs-dir", "other", "--infer-baseline", "nightly",
                                "--infer-no-gate", *common)
    second.assert_outcomes(passed=1)
    (other,) = (root / "other").glob("*.json")
    assert len(list((root / "out" / "runs").glob("*.json"))) == 1
    second.stdout.fnmatch_lines([f"run file: {other}",
                                 f"results store: sqlite:///{root}/env.db (run 1, 1 results)",
                                 "*against baseline nightly*"])
    (result,) = json.loads(other.read_text())["results"]
    assert result["model"]["artifact"].startswith(f"{root}/envcache/"), result["model"]
    assert not (root / ".inferbench").exists()
