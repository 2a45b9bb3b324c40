"""Property tests: matrix expansion against a plain reference of GitHub Actions' matrix rules."""

import itertools
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_inferbench.core.errors import SpecError
from pytest_inferbench.spec import load_spec

VALUES = {"runtime": ["torch", "onnxruntime"], "device": ["cpu", "cuda", "cuda:1"],
          "precision": ["fp32", "fp16", "bf16", "int8"], "batch_size": [1, 2, 8, 32]}
DEFAULTS = {"runtime": "onnxruntime", "device": "cpu", "precision": "fp32", "batch_size": 1}


def sub_lists(values):
    return st.lists(st.sampled_from(values), min_size=1, max_size=len(values), unique=True)


axes_strategy = st.fixed_dictionaries({}, optional={k: sub_lists(v) for k, v in VALUES.items()})
condition = st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in VALUES.items()})


class NewCombinationUnsaid(Exception):
    """The reference's rule for what GitHub leaves open: an include that matches no
    combination adds one, and an axis with several values that it does not name has no
    value to take (the plugin's spec error names the first such axis)."""

    def __init__(self, axis, count):
        super().__init__(axis)
        self.axis, self.count = axis, count


def reference(axes, excludes, includes):
    """GitHub Actions: product, drop excludes, then includes extend or add."""
    lists = {k: axes.get(k, [DEFAULTS[k]]) for k in VALUES}
    combos = [dict(zip(lists, c)) for c in itertools.product(*lists.values())]
    combos = [c for c in combos
              if not any(e and all(c[k] == v for k, v in e.items()) for e in excludes)]
    originals = [dict(c) for c in combos]
    extra = [dict() for _ in combos]
    for inc in includes:
        axis_part = {k: v for k, v in inc.items() if k in VALUES}
        added = False
        for c, orig, ex in zip(combos[:len(originals)], originals, extra):
            if all(k not in axes or orig[k] == v for k, v in axis_part.items()):
                c.update(axis_part)
                ex.update({k: v for k, v in inc.items() if k not in VALUES})
                added = True
        if not added:
            unsaid = [k for k in VALUES if k not in axis_part and len(lists[k]) > 1]
            if unsaid:
                raise NewCombinationUnsaid(unsaid[0], len(lists[unsaid[0]]))
            new = {k: axis_part.get(k, lists[k][0]) for k in VALUES}
            combos.append(new)
            extra.append({k: v for k, v in inc.items() if k not in VALUES})
    return sorted((c["runtime"], c["device"], c["precision"], c["batch_size"],
                   ex.get("min_queries", 100)) for c, ex in zip(combos, extra))


def expand(axes, excludes, includes):
    entry = {"model": "mlp-tiny", **axes}
    if excludes:
        entry["exclude"] = excludes
    if includes:
        entry["include"] = includes
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "bench_p.yaml")
        path.write_text(yaml.safe_dump({"name": "p", "benchmarks": [entry]}))
        cells = load_spec(path)
    return sorted((c.runtime, c.device, c.precision, c.batch_size, c.settings.min_queries)
                  for c in cells)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(axes_strategy)
def test_product_without_adjustments(axes):
    got = expand(axes, [], [])
    n = 1
    for k in VALUES:
        n *= len(axes.get(k, [1]))
    assert len(got) == n == len(set(got))


@settings(max_examples=150, deadline=None)
@given(axes_strategy, st.lists(condition.filter(bool), max_size=3))
def test_exclude_removes_exactly_the_matching_cells(axes, excludes):
    want = reference(axes, excludes, [])
    if not want:
        return  # an empty matrix is an error, tested elsewhere
    assert expand(axes, excludes, []) == want


@settings(max_examples=200, deadline=None)
@given(axes_strategy, st.lists(condition.filter(bool), max_size=2),
       st.lists(st.builds(lambda c, q: {**c, "min_queries": q}, condition.filter(bool),
                          st.integers(1, 50)), max_size=3))
def test_include_follows_github_rules(axes, excludes, includes):
    """The expansion equals the reference's, and raises exactly where the reference finds a
    new combination that leaves a multi-valued axis unset, naming that axis and its count."""
    try:
        want = reference(axes, excludes, includes)
    except NewCombinationUnsaid as unsaid:
        with pytest.raises(SpecError) as info:
            expand(axes, excludes, includes)
        assert (f"does not say which '{unsaid.axis}' to use (the matrix has {unsaid.count} "
                f"values for it)") in str(info.value)
        return
    if not want:
        return  # an empty matrix is an error, tested elsewhere
    assert expand(axes, excludes, includes) == want
