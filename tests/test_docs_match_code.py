"""The docs match the code (issue 28, part 7): every --infer-* option and inferbench_* ini key
pytest registers for the plugin is in a docs options table and nothing else is; the run-file
fields docs/results.md lists are the fields a real run file's results have."""

import json
import re
from pathlib import Path

from conftest import FAST

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def _table_rows() -> str:
    """Every markdown table row of the docs: where options are documented."""
    return "\n".join(line for path in DOCS for line in path.read_text().splitlines()
                     if line.lstrip().startswith("|"))


def _registered(pytester) -> tuple[set[str], set[str]]:
    """(options, ini keys) as pytest's own --help lists them with the plugin loaded."""
    text = pytester.runpytest("--help").stdout.str()
    options = set(re.findall(r"(?<![\w-])(--infer-[a-z-]+)", text))
    ini = set(re.findall(r"^\s+(inferbench_\w+)", text, re.M))
    return options, ini


def test_documented_options_and_ini_keys_are_the_registered_ones(pytester):
    options, ini = _registered(pytester)
    assert len(options) >= 15 and len(ini) >= 5, (options, ini)     # --help was read
    rows = _table_rows()
    documented = set(re.findall(r"(--infer-[a-z-]+)", rows))
    documented_ini = set(re.findall(r"ini `(inferbench_\w+)`", rows))
    assert options - documented == set(), "registered, in no docs options table"
    assert documented - options == set(), "in a docs table, not registered"
    assert ini - documented_ini == set(), "ini keys in no docs table"
    assert documented_ini - ini == set(), "documented ini keys that do not exist"


def test_baseline_help_names_every_kind_of_reference(pytester):
    text = " ".join(pytester.runpytest("--help").stdout.str().split())
    help_text = text[text.index("--infer-baseline"):][:600]
    for word in ("NAME", "PATH", "latest", "history", "--infer-save NAME"):
        assert word in help_text, (word, help_text)


def _documented_result_keys() -> set[str]:
    """The top-level keys of a result in results.md's run-file block: lines indented by four
    spaces inside `"results": [{ ... }]`, nested braces dropped, the first quoted word of each
    comma-separated part (`"status": "passed" | ...` -> status)."""
    text = (ROOT / "docs" / "results.md").read_text()
    block = text[text.index('"results": [{'):]
    block = block[:block.index("\n  }]")]
    keys = set()
    for line in block.splitlines()[1:]:
        if not re.match(r"^ {4}\"", line):
            continue
        line = line.split("#")[0]
        while re.search(r"\{[^{}]*\}|\[[^\[\]]*\]", line):
            line = re.sub(r"\{[^{}]*\}|\[[^\[\]]*\]", "", line)
        line = re.sub(r"\{.*$", "", line)           # a mapping that goes on below
        for part in line.split(","):
            found = re.search(r"\"(\w+)\"", part)
            if found:
                keys.add(found.group(1))
    return keys


# set by the plugin and the engine on some results only (paired cells, repeats, a failed
# verdict); documented elsewhere in the docs, not in every run file
SOMETIMES = {"ab", "repeat", "repeats", "failed_on"}


def test_documented_run_file_fields_are_the_real_ones(pytester):
    from pytest_inferbench.core.result import Result
    pytester.makefile(".yaml", bench_d=f"name: d\ndefaults: {{{FAST}}}\nbenchmarks:\n"
                                       f"  - model: mlp-tiny\n    runtime: torch\n")
    pytester.runpytest("--infer-json", "run.json", "--infer-no-html", "--infer-store", "none",
                       "-p", "no:cacheprovider").assert_outcomes(passed=1)
    (real,) = json.loads((pytester.path / "run.json").read_text())["results"]
    documented = _documented_result_keys()
    assert len(documented) >= 20, documented           # the block was found and read
    assert set(real) - documented == set(), "in a real run file, not in docs/results.md"
    assert set(Result.model_fields) - documented == set(), "Result fields not documented"
    extra = documented - set(Result.model_fields) - set(real) - SOMETIMES
    assert extra == set(), "documented, but neither a Result field nor in a run file"
