"""The search space as the optimiser sees it: each dimension an index into its choices
(an ordinal one as an integer, so the sampler knows 4 lies between 1 and 16), each candidate
a point, and the nearest point still to measure to any suggestion (a suggestion may fall on
a combination `exclude` removed, one measured already, or one that cannot run here)."""

from __future__ import annotations

import json

import numpy as np


def _canon(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


class Space:
    def __init__(self, dims, params: list[dict]):
        self.dims = list(dims)
        self._index = [{_canon(c): i for i, c in enumerate(d.choices)} for d in self.dims]
        self.points = [tuple(self._index[j][_canon(p[d.name])] for j, d in enumerate(self.dims))
                       for p in params]

    def __len__(self) -> int:
        return len(self.points)

    def distributions(self) -> dict:
        from optuna.distributions import (  # lazy: optuna
            CategoricalDistribution,
            IntDistribution,
        )
        return {d.name: (IntDistribution(0, len(d.choices) - 1) if d.ordinal
                         else CategoricalDistribution(tuple(range(len(d.choices)))))
                for d in self.dims}

    def coordinates(self, index: int) -> dict[str, int]:
        return {d.name: c for d, c in zip(self.dims, self.points[index])}

    def distance(self, a: tuple, b: tuple) -> float:
        """Ordinal steps as a share of the dimension's range, categorical mismatches as 1."""
        total = 0.0
        for d, x, y in zip(self.dims, a, b):
            if d.ordinal:
                total += abs(x - y) / max(1, len(d.choices) - 1)
            else:
                total += float(x != y)
        return total

    def nearest(self, suggested: dict[str, int], allowed, rng: np.random.Generator) -> int:
        """The allowed candidate closest to the suggestion (ties broken at random)."""
        want = tuple(int(suggested[d.name]) for d in self.dims)
        allowed = sorted(allowed)
        gaps = np.array([self.distance(want, self.points[i]) for i in allowed])
        ties = [i for i, g in zip(allowed, gaps) if g <= gaps.min() + 1e-12]
        return int(ties[0] if len(ties) == 1 else rng.choice(ties))
