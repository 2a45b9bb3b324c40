"""A generative session end to end into the analysis frame and the HTML report: the plugin's
own OpenAI-compatible server on a tiny generated decoder, the report's generative table and
chart, drawn without errors in a real browser."""

import json
import re

import pytest

from pytest_inferbench.analysis import load_results

from conftest import SHARE
from test_report import _browse, _chromium

SPEC = """name: gen
defaults: {warmup: 2, min_duration: 1s, max_duration: 1.5s, min_queries: 5, SHARE}
benchmarks:
  - model: {family: decoder, layers: 1, hidden: 64, heads: 2, vocab: 500, max_seq: 256}
    serving: {system: openai, max_batch_size: 4}
    workload: {scenario: server, rate: 4, timeout: 20s,
               prompts: {input_tokens: 30, output_tokens: 8},
               slo: [{ttft_p99: 5s, tpot_p99: 1s}, {ttft_p99: 1ms}]}
"""


def test_a_generative_run_in_the_frame_and_the_report(pytester, tmp_path):
    pytest.importorskip("fastapi", reason="fastapi not installed: "
                        "pip install 'pytest-inferbench[serve]'")
    pytest.importorskip("aiohttp", reason="aiohttp not installed: "
                        "pip install 'pytest-inferbench[serve]'")
    pytester.makefile(".yaml", bench_gen=SPEC.replace("SHARE", SHARE))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--infer-json", "run.json",
                                           "--infer-html", "gen.html")
    result.assert_outcomes(passed=2)
    df = load_results(pytester.path / "run.json")
    row, over = sorted(df.to_dict("records"), key=lambda r: r["slo_verdict"], reverse=True)
    assert over["slo_verdict"] == "fail" and "ttft_p99" in over["slo_reason"]
    assert row["runtime"] == "server" and row["serving"] == "openai"
    assert 0 < row["ttft_p50_ms"] <= row["ttft_p99_ms"] and 0 < row["tpot_p50_ms"]
    assert row["output_tokens_mean"] == 8 and row["input_tokens_mean"] == 30
    assert row["requests_per_s"] > 0 and row["output_tokens_per_s"] == pytest.approx(
        8 * row["requests_per_s"], rel=1e-6)
    assert row["slo_verdict"] == "undetermined" and "too few requests" in row["slo_reason"]
    html = (pytester.path / "gen.html").read_text()
    assert "<h3>Generative serving</h3>" in html and "TTFT p99 vs output tokens/s" in html
    assert "too few requests" in html               # the SLO problem lines say why
    assert "SLO not met" in html and "over the bound" in html

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium binary found (chromium, chromium-browser, google-chrome; or "
                    "set INFERBENCH_CHROMIUM): apt-get install chromium")
    page = pytester.path / "gen.html"
    dom = _browse(browser, page.as_uri() + "#ib-selftest", tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    status = re.search(r'<pre id="ib-status"[^>]*data-state="done"[^>]*>(.*?)</pre>',
                       dom.stdout, re.S)
    assert status, "the page's script did not finish drawing"
    errors = json.loads(status.group(1).replace("&quot;", '"').replace("&amp;", "&")
                        .replace("&lt;", "<").replace("&gt;", ">"))
    assert errors == [], errors
    charts = int(re.search(r'data-charts="(\d+)"', status.group(0)).group(1))
    assert dom.stdout.count('class="main-svg"') >= charts >= 3
