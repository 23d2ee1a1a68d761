"""Settings grids (`edit --grid`): every combination of a few edit settings, each decoded from
the same inversion as one cell, so that settings can be tried for the price of the decoding.

Pure data and checks, before any model loads; `workflow.run_edit_grid` runs a grid.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UsageError
from .methods import edit_method, method_hint
from .presets import RANGES, check_number

GRID_KEYS = tuple(RANGES)  # guidance, tau, cross_replace, self_replace, amplify, blend_threshold
MAX_CELLS = 64


@dataclass(frozen=True)
class Grid:
    """The axes in the order given: (setting, values); cells vary the last axis fastest."""

    axes: tuple[tuple[str, tuple[float, ...]], ...]

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.axes]

    def cells(self) -> list[dict[str, float]]:
        return [dict(zip(self.keys, values)) for values in itertools.product(*(v for _, v in self.axes))]

    @staticmethod
    def label(cell: dict[str, float]) -> str:
        return ", ".join(f"{key}={value:g}" for key, value in cell.items())

    @staticmethod
    def name_part(cell: dict[str, float]) -> str:
        """A file-name part carrying the cell's settings: 'cross_replace0.2-self_replace0.4'."""
        return "-".join(f"{key}{value:g}" for key, value in cell.items())


def parse_grid(items: Iterable[str], flags: Iterable[str] = ()) -> Grid | None:
    """`--grid KEY=V1,V2,...` (repeatable) -> a Grid, or None without any. `flags`: the settings
    given as plain flags too, which a grid axis may not repeat."""
    axes: dict[str, tuple[float, ...]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in GRID_KEYS:
            raise UsageError(f"--grid {item!r} is not KEY=V1,V2,...", f"KEY is one of {', '.join(GRID_KEYS)}")
        if key in axes:
            raise UsageError(f"--grid {key} is given twice", "give each setting's values in one --grid")
        if key in set(flags):
            raise UsageError(f"--{key.replace('_', '-')} and --grid {key} are both given", "keep one of them")
        values = []
        for part in text.split(","):
            try:
                number = float(part)
            except ValueError:
                raise UsageError(
                    f"--grid {key}: {part.strip()!r} is not a number", f"e.g. --grid {key}=0.2,0.4"
                ) from None
            values.append(check_number(key, number, f"--grid {key}"))
        axes[key] = tuple(dict.fromkeys(values))  # a repeated value is one cell
        shown = [f"{value:g}" for value in axes[key]]
        if len(set(shown)) != len(shown):  # file names carry values to 6 digits: they must differ there
            raise UsageError(
                f"--grid {key}: two values look the same in file names ({', '.join(shown)})",
                "use values that differ in 6 significant digits",
            )
    if not axes:
        return None
    grid = Grid(tuple(axes.items()))
    if len(grid.cells()) > MAX_CELLS:
        raise UsageError(f"--grid makes {len(grid.cells())} cells, more than {MAX_CELLS}", "try fewer values")
    return grid


def check_grid_method(grid: Grid, method: str) -> None:
    """A grid axis that the edit method does not read (`EditMethod.ignored`) would make identical
    cells: refused, as a flag the method would ignore is (`preparation.check_method_options`)."""
    chosen = edit_method(method)
    unread = chosen.ignored(grid.keys)
    if unread:  # a usage error (exit 2), as a --grid value the tool cannot take
        raise UsageError(
            f"--grid {', '.join(unread)}: the {method!r} method {chosen.why_ignored(unread)}, so every cell would be "
            "the same",
            method_hint(unread, "or grid guidance and tau"),
        )


# -- scoring cells (`--score`, `--pick`) -----------------------------------------------------------
def _lower_is_better(metric: str) -> bool:
    """Its direction, from the metric table (distances: lower is better)."""
    from .metrics import TABLE

    return TABLE[metric].lower_is_better


def _value(scores: dict[str, float], metric: str) -> float | None:
    """A metric's score by its name, the whole-image form included (a grid has no mask)."""
    for name in (metric, f"{metric}_whole"):
        if name in scores:
            return scores[name]
    return None


@dataclass(frozen=True)
class PickRule:
    """`--pick METRIC[,OTHER<BOUND][,OTHER>BOUND]...`: the best cell by METRIC (its own direction:
    lowest for distances, highest otherwise) among the cells within every bound."""

    metric: str
    bounds: tuple[tuple[str, str, float], ...] = ()

    @property
    def metrics(self) -> list[str]:
        return [self.metric, *(name for name, _, _ in self.bounds)]

    def key(self, scores: dict[str, float]) -> float:
        """Sort key, best first; a cell without a finite score sorts last."""
        value = _value(scores, self.metric)
        if value is None or value != value:
            return float("inf")
        return value if _lower_is_better(self.metric) else -value

    def allows(self, scores: dict[str, float]) -> bool:
        for name, op, bound in self.bounds:
            value = _value(scores, name)
            if value is None or not (value < bound if op == "<" else value > bound):
                return False
        return True

    def describe(self) -> str:
        direction = "lowest" if _lower_is_better(self.metric) else "highest"
        limits = "".join(f", {name} {op} {bound:g}" for name, op, bound in self.bounds)
        return f"{direction} {self.metric}{limits}"


def parse_pick(text: str, metrics: Iterable[str]) -> PickRule:
    known = set(metrics)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or parts[0] not in known:
        raise UsageError(
            f"--pick {text!r} does not start with a metric",
            f"e.g. --pick clip_whole,structure<0.05; metrics: {', '.join(sorted(known))}",
        )
    bounds = []
    for part in parts[1:]:
        op = "<" if "<" in part else ">" if ">" in part else None
        name, _, number = part.partition(op) if op else (part, "", "")
        try:
            bound = float(number)
        except ValueError:
            bound = None
        if op is None or name.strip() not in known or bound is None:
            raise UsageError(f"--pick: {part!r} is not METRIC<NUMBER or METRIC>NUMBER", "e.g. structure<0.05")
        bounds.append((name.strip(), op, bound))
    return PickRule(parts[0], tuple(bounds))


def rank(scores: list[dict[str, float]], rule: PickRule) -> tuple[list[int], int | None]:
    """Cell indices best first, and the picked cell (the best within the bounds, or None)."""
    order = sorted(range(len(scores)), key=lambda i: rule.key(scores[i]))
    allowed = [i for i in order if rule.allows(scores[i]) and rule.key(scores[i]) != float("inf")]
    return order, (allowed[0] if allowed else None)
