"""Change points in a cell's series of runs: Apache Otava's E-Divisive means with Student t
significance (Fleming et al., "Hunter: Using Change Point Detection to Hunt for Performance
Regressions", ICPE 2023), the descendant of MongoDB's E-Divisive.

Why vendored (otava/, Apache-2.0, unmodified but for its import lines): the algorithm needs
only numpy and scipy, but the `apache-otava` 0.8 wheel pins numpy==2.2.0 exactly (PyTriton 0.7
needs numpy < 2) and pulls BigQuery, Slack and Graphite clients; MongoDB's
`signal-processing-algorithms` 2.1 pins setuptools < 71 (torch 2.13 needs >= 77) and gevent
< 25 (tritonclient's geventhttpclient needs >= 25.9). Neither resolves beside the plugin's
own dependencies, so the detector's five modules travel with the plugin instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from .otava.analysis import compute_change_points

MAX_PVALUE = 0.001          # Otava's default: a change point is a strong claim
# A step smaller than this is not a new level, however steady the runs either side: on a
# few very steady runs a 1.5% step has p < 0.001, yet it is far inside these machines'
# run-to-run noise (one small CNN's p50 moved 4.5 to 7.4 ms between CPU runs), and taking
# it as a change would restart the history that judges the next run.
MIN_MAGNITUDE = 0.05
WINDOW = 30                 # Otava's sliding window for the split step


@dataclass(frozen=True)
class Change:
    index: int              # the first run of the new level
    pvalue: float           # Otava's t-test between the neighbouring segments
    before: float           # median of the segment before
    after: float            # median of the segment after

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before else math.nan


def change_points(values: Sequence[float], max_pvalue: float = MAX_PVALUE,
                  window: int = WINDOW, min_magnitude: float = MIN_MAGNITUDE) -> list[Change]:
    """Where the series' level shifted (indices into `values`, oldest first); each with the
    medians of the segments either side. Missing values (None, nan) are skipped."""
    kept = [(i, float(v)) for i, v in enumerate(values)
            if v is not None and math.isfinite(float(v)) and float(v) > 0]
    if len(kept) < 3:
        return []
    where, series = zip(*kept)
    # the detector compares means: on the log scale a step is the same size at any level.
    # Shifted to 1 + log(v / median), which changes neither E-Divisive nor the t-test, so
    # that Otava's relative change of the segment means (its min_magnitude, applied in its
    # merge step, which re-tests the neighbours of a dropped point) is the log ratio.
    mid = median(series)
    logs = [1.0 + math.log(v / mid) for v in series]
    found, _weak = compute_change_points(logs, window_len=max(2, window),
                                         max_pvalue=max_pvalue, min_magnitude=min_magnitude)
    cuts = [c.index for c in found]
    bounds = [0, *cuts, len(series)]
    out = []
    for k, c in enumerate(found):
        left = series[bounds[k]:bounds[k + 1]]
        right = series[bounds[k + 1]:bounds[k + 2]]
        out.append(Change(where[c.index], float(c.stats.pvalue), median(left), median(right)))
    return out


def segments(n: int, changes: Sequence[Change]) -> list[range]:
    """The runs between change points, oldest first."""
    bounds = [0, *sorted(c.index for c in changes), n]
    return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]
