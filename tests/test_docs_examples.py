"""Every YAML example in the README and docs/ loads with the plugin's own loaders: a stale
example is a bug. A fenced block says what it is in its info string:

    ```yaml spec        a whole spec file: load_spec
    ```yaml job         a whole job file: load_job, then its own benchmarks with load_spec
    ```yaml followers   a followers inventory: load_followers
    ```yaml keys        a key reference (values may list alternatives, `a | b`): every
                        statement is `section: {key: ...}` and every key must be a field of
                        that section's schema

A ```yaml block without one of these fails (so that every example is checked). Files an
example names (model files, traces, datasets, interpreters) are created empty in a temporary
directory first: the loaders check that they exist, the cells that would run them do the rest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_inferbench import spec as schema
from pytest_inferbench.spec import load_followers, load_job, load_spec
from pytest_inferbench.spec.yaml_lines import load_yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```yaml([^\n]*)\n(.*?)^```", re.M | re.S)
KINDS = ("spec", "job", "followers", "keys")
# a section of a key reference -> the schema its keys must belong to
SECTIONS = {"workload": schema.Workload, "serving": schema.Serving, "runtime": schema.RuntimeSpec,
            "threads": schema.Threads, "report": schema.ReportSection,
            "cost": schema.CostSection, "baseline": schema.BaselineSection,
            "ab": schema.ABSpec, "settings": schema.Settings}
NAMED_FILE = re.compile(r"(?<![\w:/])((?:[\w.-]+/)*[\w.-]+\.(?:onnx|pt|pth|csv|jsonl|npz|json))\b")
ABSOLUTE = re.compile(r"(?<![\w.])(/(?:[\w.-]+/)+[\w.-]+)")


def _examples():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield pytest.param(match.group(1).strip(), match.group(2), page,
                               id=f"{page.relative_to(ROOT)}:{line}")


EXAMPLES = list(_examples())


def test_there_are_examples_to_check():
    assert len(EXAMPLES) >= 8, [p.id for p in EXAMPLES]


def _with_files(text: str, tmp_path: Path) -> str:
    """Create what the example names; absolute paths (an interpreter in /opt) move under
    tmp_path so that the example reads as written in the docs."""
    for rel in set(NAMED_FILE.findall(text)):
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    for absolute in set(ABSOLUTE.findall(text)):
        if absolute.startswith(("/srv", "/opt", "/usr/local")):
            moved = tmp_path / absolute.lstrip("/")
            moved.parent.mkdir(parents=True, exist_ok=True)
            moved.touch()
            text = text.replace(absolute, str(moved))
    return text


def _statements(text: str) -> list[str]:
    """The top-level `key: value` statements of a key reference, continuation lines kept."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            out.append([line])
        elif out:
            out[-1].append(line)
    return ["\n".join(s) for s in out]


def _check_keys(section: str, value, where: str) -> None:
    if section in ("model",):
        fields = set()
        for cls in (*schema.FAMILIES.values(), schema.FileModel, schema.FactoryModel):
            fields |= set(cls.model_fields)
    elif section in SECTIONS:
        fields = set(SECTIONS[section].model_fields)
    else:
        raise AssertionError(f"{where}: unknown section '{section}' in a key reference")
    if not isinstance(value, dict):
        return      # `serving: inprocess`: a shorthand, no keys to check
    unknown = [k for k in value if k not in fields]
    assert not unknown, f"{where}: {section} has no key(s) {unknown}; its keys: {sorted(fields)}"


@pytest.mark.parametrize("kind, text, page", EXAMPLES)
def test_example_loads(kind, text, page, tmp_path):
    assert kind in KINDS, (f"a ```yaml block needs one of {KINDS} after `yaml` so that it is "
                           f"checked (got {kind!r})")
    text = _with_files(text, tmp_path)
    path = tmp_path / ("bench_example.yaml" if kind != "job" else "job.yaml")
    if kind == "keys":
        for i, statement in enumerate(_statements(text)):
            # the plugin's YAML reading: keys as written (YAML 1.1 would read `on:` as true)
            data, _ = load_yaml(tmp_path / f"statement{i}.yaml", text=statement)
            assert isinstance(data, dict) and len(data) == 1, statement
            ((section, value),) = data.items()
            _check_keys(section, value, f"{page.name}: {statement.splitlines()[0]}")
        return
    path.write_text(text, encoding="utf-8")
    if kind == "spec":
        cells = load_spec(path, rootdir=tmp_path)
        assert cells, "the example spec expands to no cell"
    elif kind == "job":
        job = load_job(path)
        cells = load_spec(path, job=job, rootdir=tmp_path)
        assert job.has_benchmarks == bool(cells)
    else:
        assert load_followers(path)


def test_a_stale_key_is_caught(tmp_path):
    """The check finds what it looks for: a key no schema has fails."""
    with pytest.raises(AssertionError, match="no key"):
        test_example_loads("keys", "serving: {system: triton, max_queue_dealy: 1ms}\n",
                           Path("x.md"), tmp_path)
    with pytest.raises(Exception, match="did you mean"):
        test_example_loads("spec", "name: x\nbenchmarks:\n  - model: mlp-tiny\n    "
                                   "batchsize: 2\n", Path("x.md"), tmp_path)
