"""The HTML report: rendered from hand-made run files, escaped, self-contained, several runs told
apart; the `report` command line; the plugin's --infer-html; and the page in a real browser
(Debian's chromium, headless): it loads without console errors and its charts render."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas  # noqa: F401 - imported before pytester's in-process runs, which drop new modules
import pytest

import pytest_inferbench.report.render as render_module
from conftest import FAST
from pytest_inferbench import load_results
from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.report import render_report
from pytest_inferbench.spec import load_job, load_spec

EVIL = "<script>alert(1)</script>"
EVIL_KEY = "<img src=x onerror=alert(2)>"
TINY_RESNET = {"family": "resnet", "depth": 10, "width": 16, "resolution": 64, "classes": 10}
MLP = {"family": "mlp", "layers": 2, "hidden": 64, "features": 32, "classes": 10}


def result(model, runtime, batch, scenario="offline", *, fixed=1.0, per=0.2, status="passed",
           reason=None, serving=None, rate=None, breakdown=None, spec=None, slo=None):
    mean = fixed + per * batch
    workload = {"scenario": scenario, **({"rate": rate, "arrival": "poisson"} if rate else {}),
                **({"slo": slo} if slo else {})}
    serving = serving or {"system": "inprocess"}
    label = (f"{runtime}-cpu-fp32-bs{batch}-{scenario}{rate or ''}"
             + ("" if serving["system"] == "inprocess" else f"-{serving['system']}"))
    r = {"id": f"suites/bench_demo.yaml::{model}[{label}]", "status": status, "reason": reason,
         "cell": {"id": f"{model}[{label}]", "spec": "suites/bench_demo.yaml",
                  "spec_name": "demo", "entry": 0, "model": spec or MLP, "model_label": model,
                  "runtime": runtime, "runtime_options": {}, "device": "cpu",
                  "precision": "fp32", "batch_size": batch, "threads": None,
                  "workload": workload, "serving": serving, "settings": {}, "marks": []},
         "scenario": scenario, "batch_size": batch, "valid": True}
    if status != "passed":
        return r
    pct = {f"p{p:g}": {"value": mean * k, "lower": mean * k * 0.97,
                       "upper": mean * k * 1.04 if p < 99.9 else None}
           for p, k in ((50, 1.0), (90, 1.1), (95, 1.15), (99, 1.3), (99.9, 1.6))}
    r.update({
        "latency_ms": {"n": 500, "mean": mean, "std": 0.1 * mean, "min": 0.8 * mean,
                       "max": 2 * mean, "confidence": 0.95, "percentiles": pct},
        "throughput": {"queries_per_s": 1e3 / mean, "samples_per_s": 1e3 * batch / mean},
        "stop": {"reason": "ci_converged", "ci_half_width_rel": 0.015},
        "process": {"cpu_cores_used": 1.1, "cpu_percent_system": 60.0, "peak_rss_mb": 250.0},
        "model": {"label": model, "check": {"ok": True, "max_rel_err": 1e-7}},
        "runtime": {"name": runtime, "version": "1.0"}, "gpu": None,
    })
    if breakdown:
        r["serving"] = {"system": serving["system"], "breakdown": breakdown}
    if slo:
        r["slo"] = {"verdict": "pass", "percentile": 99.0, "bound_ms": 50.0, "confidence": 0.99,
                    "queries": 500, "overlatency": 0}
    return r


def demo_run(model=EVIL, scale=1.0, start="2025-01-31T22:00:00+00:00", host="bench-1"):
    results = []
    for runtime, fixed, per in (("torch", 1.0, 0.3), ("onnxruntime", 0.4, 0.2)):
        for batch in (1, 4, 16):
            results.append(result(model, runtime, batch, fixed=fixed * scale, per=per * scale))
        results.append(result(model, runtime, 1, "single_stream", fixed=fixed * scale * 1.1,
                              per=per * scale))
    for system, breakdown in (("inprocess", None), ("triton", {
            "queue_ms": 0.3, "compute_ms": 1.9, "compute_infer_ms": 1.8, "other_ms": 0.6,
            "server_ms": 2.3, "avg_batch": 1.4})):
        for rate in (100, 300):
            results.append(result("resnet-tiny", "onnxruntime", 1, "server", rate=rate,
                                  fixed=2 + rate / 300, serving={"system": system},
                                  breakdown=breakdown, spec=TINY_RESNET, slo={"p99": 0.05}))
    results.append(result("resnet-tiny", "torch", 1, status="skipped", spec=TINY_RESNET,
                          reason="no CUDA device: torch.cuda.is_available() is False"))
    results.append(result("bert-tiny", "onnxruntime", 8, status="failed",
                          reason="RuntimeError: export failed <b>not bold</b>\nline 2",
                          spec={"family": "transformer", "layers": 2, "hidden": 128,
                                "heads": 2, "seq_len": 128}))
    return {"format": "pytest-inferbench-run", "version": 1, "name": "demo",
            "provenance": {"host": host, "platform": "Linux", "cpu_model": "Test CPU",
                           "cpu_count_logical": 2, "cpu_count_physical": 1, "memory_gb": 24,
                           "python": "3.11.2", "versions": {"torch": "2.13.0", EVIL_KEY: "1"},
                           "git": {"commit": "0123456789abcdef0123", "dirty": False},
                           "gpu": {"available": False}, "argv": ["pytest", "suites/"],
                           "start_time": start, "end_time": start},
            "results": results}


@pytest.fixture
def runs(tmp_path):
    """Two run files of the same job: last night's and this morning's (30% slower)."""
    a, b = tmp_path / "night.json", tmp_path / "morning.json"
    a.write_text(json.dumps(demo_run()))
    b.write_text(json.dumps(demo_run(scale=1.3, start="2025-02-01T08:00:00+00:00")))
    return a, b


def test_report_escapes_names_from_run_files(runs, tmp_path):
    out = render_report([runs[0]], tmp_path / "r.html", title="Nightly <i>run</i>")
    text = out.read_text()
    assert EVIL not in text and EVIL_KEY not in text and "<b>not bold</b>" not in text
    assert "<i>run</i>" not in text and "Nightly &lt;i&gt;run&lt;/i&gt;" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text           # shown as text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text
    # inside the chart data too (JSON in the page, then plotly's text rendering)
    figures = re.search(r'<script type="application/json" id="ib-figures">(.*?)</script>',
                        text, re.S).group(1)
    assert "<" not in figures
    assert "&lt;script&gt;alert(1)" in json.loads(figures)["chart-1"]["data"][0]["hovertext"][0]


def test_report_is_one_self_contained_file(runs, tmp_path):
    text = render_report([runs[0]], tmp_path / "r.html").read_text()
    assert "default-src 'none'" in text                      # the page may fetch nothing
    assert not re.search(r'<(script|img|link|iframe)[^>]+(src|href)=', text)
    assert text.count("plotly.js v") == 1                    # the library, embedded once
    headings = re.findall(r"<h2>(.*?)</h2>", text)
    assert headings[0] == "Summary"
    for heading in ("Roofline", "All cells", "Skipped and failed cells", "Provenance"):
        assert heading in headings
    assert any(h.startswith("Model: ") and "resnet-tiny" in h for h in headings)
    # problems come first in the summary, failures before the rest
    summary = text[text.index('<section id="summary">'):text.index("What ran, where")]
    assert "RuntimeError: export failed" in summary and "skipped" in summary
    assert "no CUDA device" in text and "0123456789ab" in text


def test_report_tells_several_runs_apart(runs, tmp_path):
    text = render_report(list(runs), tmp_path / "r.html").read_text()
    assert "<b>R1</b>demo @ bench-1, 2025-01-31 22:00" in text
    assert "<b>R2</b>demo @ bench-1, 2025-02-01 08:00" in text
    assert "Changes between runs" in text and "+30.0%" in text
    assert "slower in R2" in text                           # flagged among the problems
    figures = json.loads(re.search(r'id="ib-figures">(.*?)</script>', text, re.S).group(1))
    names = {t.get("name") for f in figures.values() for t in f["data"]}
    assert "torch · R1" in names and "torch · R2" in names


def test_report_from_frames_with_cost_slo_and_peak(runs, tmp_path):
    df = load_results(list(runs))
    out = render_report(df, tmp_path / "f.html", cost={"per_hour": {"cpu": 0.40}},
                        slo={"p99": "4ms"}, peak_flops={"cpu": 1e11})
    text = out.read_text()
    assert "Best configuration under the SLO (p99 ≤ 4 ms)" in text
    assert "cost per million inferences" in text and "Device peak 100 GFLOP/s" in text


def test_best_under_slo_and_batch_model_appear_in_the_report(runs, tmp_path):
    text = render_report([runs[0]], tmp_path / "r.html", slo="p99<=50ms").read_text()
    best = text[text.index("Best configuration under the SLO"):text.index("At a glance")]
    assert "onnxruntime-cpu-fp32-bs16-offline" in best     # highest throughput within 50 ms
    assert "Batch-size model" in text and "bs32:" in text   # a prediction for an untested size


def test_report_section_and_cost_section_in_the_job_file(write):
    job = write("job.yaml", """
        name: nightly
        report: {html: "out/{name}.html", title: "Nightly", slo: {p99: 20ms},
                 peak_flops: {cpu: 1.0e11}}
        cost: {per_hour: {cpu: 0.40, cuda: 2.50}}
        benchmarks:
          - model: mlp-tiny
    """)
    loaded = load_job(job)
    assert loaded.report.html == "out/{name}.html" and loaded.report.slo == {"p99": 0.02}
    assert loaded.cost.per_hour == {"cpu": 0.40, "cuda": 2.50} and loaded.cost.currency == "$"
    assert len(load_spec(job, job=loaded)) == 1             # the job file collects as a spec
    bad = write("bad.yaml", """
        name: x
        report:
          html: x.html
          titel: typo
    """)
    with pytest.raises(SpecError) as err:
        load_job(bad)
    assert err.value.render() == (f"{bad}:4: report.titel: unknown key 'titel' (did you mean "
                                  f"'title'?); expected one of: html, title, slo, peak_flops, "
                                  f"peak_bandwidth")
    bad_cost = write("bad_cost.yaml", "cost:\n  per_hour:\n    cpu: cheap\n")
    with pytest.raises(SpecError, match=r"bad_cost.yaml:3: cost.per_hour.cpu: .*number"):
        load_job(bad_cost)
    with pytest.raises(SpecError, match="report.slo"):
        load_job(write("bad_slo.yaml", "report: {slo: {latency: 5ms}}\n"))


def test_latency_cdf_from_a_histogram_else_from_the_percentiles():
    from pytest_inferbench.report.charts import cdf_points
    row = {"histogram": {"edges_ms": [0.0, 1.0, 2.0, 4.0], "counts": [10, 80, 10]}}
    assert cdf_points(row) == ([0.0, 1.0, 2.0, 4.0], [0.0, 0.1, 0.9, 1.0], "histogram")
    row = {"histogram": None, "min_ms": 0.5, "max_ms": 9.0, "p50_ms": 1.0, "p50_lower_ms": 0.9,
           "p99_ms": 4.0, "p99.9_ms": float("nan")}
    assert cdf_points(row) == ([0.5, 1.0, 4.0, 9.0], [0.0, 0.5, 0.99, 1.0], "percentiles")


# ----------------------------------------------------------------------------- command line

def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pytest_inferbench", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_renders_from_run_files_and_directories(runs, tmp_path):
    done = cli("report", tmp_path, "-o", tmp_path / "out" / "r.html", "--title", "From CLI",
               "--cost", "cpu=0.4", "--slo", "p99<=40ms", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"html report: {tmp_path / 'out' / 'r.html'}"
    text = (tmp_path / "out" / "r.html").read_text()
    assert "<title>From CLI</title>" in text and "<b>R2</b>" in text


def test_cli_refuses_bad_inputs_in_one_line(tmp_path):
    (tmp_path / "other.json").write_text('{"not": "a run"}')
    (tmp_path / "broken.json").write_text("{")
    cases = [(("report", "missing.json"), "missing.json: no such file or directory"),
             (("report", "other.json"), "other.json: not a pytest-inferbench run file"),
             (("report", "broken.json"), "broken.json:1: not valid JSON"),
             (("report", "other.json", "--cost", "cpu"), "--cost: expected KEY=NUMBER")]
    for args, message in cases:
        done = cli(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- the plugin

SPEC = f"""
name: small
defaults: {{{FAST}}}
benchmarks:
  - model: mlp-tiny
    runtime: torch
"""


def test_plugin_writes_the_html_report_after_the_run_file(pytester):
    pytester.makefile(".yaml", bench_small=SPEC)
    job = pytester.makefile(".yaml", job=f"name: tiny-job\nreport: {{title: Tiny}}\n")
    result = pytester.runpytest("--infer-config", str(job), "--infer-json", "run.json")
    result.assert_outcomes(passed=1)
    report = pytester.path / "reports" / "tiny-job.html"
    result.stdout.fnmatch_lines([f"html report: {report}"])
    assert "<title>Tiny</title>" in report.read_text()
    # again in the same process: rendering left nothing behind that breaks the next session
    result = pytester.runpytest("--infer-html", "here.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"html report: {pytester.path / 'here.html'}"])
    result = pytester.runpytest("--infer-no-html")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("html report:*")


def test_a_rendering_error_is_a_warning_and_loses_no_result(pytester, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("template exploded\nsecond line")
    monkeypatch.setattr(render_module, "render_report", broken)
    pytester.makefile(".yaml", bench_small=SPEC)
    result = pytester.runpytest("--infer-json", "run.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["warning: the HTML report was not written (RuntimeError: "
                                 "template exploded)*python -m pytest_inferbench report*"])
    assert len(json.loads((pytester.path / "run.json").read_text())["results"]) == 1
    assert result.ret == 0


# ----------------------------------------------------------------------------- a real browser

def _chromium() -> str | None:
    for name in (os.environ.get("INFERBENCH_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _browse(browser, url: str, profile: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
         "--virtual-time-budget=15000", *args, url],
        capture_output=True, text=True, timeout=180)


def test_report_in_a_real_browser(runs, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium binary found (chromium, chromium-browser, google-chrome; or "
                    "set INFERBENCH_CHROMIUM): apt-get install chromium")
    page = render_report(list(runs), tmp_path / "report.html", cost={"per_hour": {"cpu": 0.4}})
    # "#ib-selftest": once drawn, the page hovers the first chart's first point
    dom = _browse(browser, page.as_uri() + "#ib-selftest", tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    status = re.search(r'<pre id="ib-status"[^>]*data-state="done"[^>]*>(.*?)</pre>',
                       dom.stdout, re.S)
    assert status, "the page's script did not finish drawing"
    tag = status.group(0)
    errors = json.loads(status.group(1).replace("&quot;", '"').replace("&amp;", "&")
                        .replace("&lt;", "<").replace("&gt;", ">"))
    assert errors == [], errors                    # no console errors, nothing fetched
    charts = int(re.search(r'data-charts="(\d+)"', tag).group(1))
    svgs = int(re.search(r'data-svgs="(\d+)"', tag).group(1))
    assert charts >= 8 and svgs >= charts          # every chart drew its SVG
    assert dom.stdout.count('class="main-svg"') >= charts
    hover = re.search(r'data-hover="([^"]*)"', tag).group(1)     # the cell's configuration
    for part in ("runtime: torch", "batch size: 1", "workload: offline", "serving: inprocess",
                 "alert(1)"):
        assert part in hover, (part, hover)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom.stdout   # text, not an element
    assert EVIL not in dom.stdout
    shot = tmp_path / "report.png"
    done = _browse(browser, page.as_uri(), tmp_path / "profile", "--window-size=1400,3000",
                   f"--screenshot={shot}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"report screenshot: {shot}")
