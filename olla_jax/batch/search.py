"""The searches over batch sizes, given a probe: by prediction from measured
totals (``_predict``), by doubling and bisection (``_search``), and
recomputation's by memory then confirmation (``_recompute_search``).  They
know nothing of compiles or plans."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from olla_jax.batch.report import ModeResult

_MAX_BATCH = 2 ** 31


def _search(probe: Callable[[int], bool], low: int, high: int | None, start: int) -> int | None:
    """Largest b in [low, high] with probe(b), assuming probe is monotone (True then False).

    Doubles from ``start`` (>= low) until a probe fails, then bisects.  A failure
    at ``start`` > ``low`` restarts below it."""
    fit, fail = low - 1, None
    b = start
    while True:
        if probe(b):
            fit = b
            if (high is not None and b >= high) or b >= _MAX_BATCH:
                return b
            b = 2 * b if high is None else min(2 * b, high)
        else:
            fail = b
            break
    while fail - fit > 1:
        mid = (fit + fail) // 2
        if probe(mid):
            fit = mid
        else:
            fail = mid
    return fit if fit >= low else None


# The most a prediction may multiply the largest fitting batch by before a batch
# has failed: a linear fit through two small batches (where the arguments
# dominate) can predict far too much.
_GROWTH = 8


@dataclasses.dataclass(frozen=True)
class _Point:
    """A batch whose fit is known; ``total`` None when it was inferred, not compiled."""
    batch: int
    fits: bool
    total: int | None


def _slope(a: _Point | None, b: _Point | None) -> float | None:
    if a is None or b is None or a.total is None or b.total is None or a.batch == b.batch:
        return None
    slope = (b.total - a.total) / (b.batch - a.batch)
    return slope if slope > 0 else None


def _predict(probe: Callable[[int], _Point], low: int, high: int | None, capacity: int,
             known: Sequence[_Point] = (), slope_hint: float | None = None) -> int | None:
    """Largest b in [low, high] whose probe fits, assuming fit is monotone in b.

    ``known``: points already settled (not probed again).  Until a batch fails,
    the next batch is where a line through the largest fit and the nearest
    smaller batch with a lower total (``slope_hint`` while there is none)
    reaches ``capacity``, at most ``_GROWTH`` x the largest fit; when three
    predictions in a row by the mode's own line fit, the step at least doubles.  Then the line through
    the largest fit and the least failure, with a bisection whenever two probes
    in a row land on the same side."""
    points = {p.batch: p for p in known if p.batch >= low and (high is None or p.batch <= high)}
    top_limit = min(_MAX_BATCH, high) if high is not None else _MAX_BATCH
    bracket_sides: list[bool] = []
    crawl = 0   # predictions in a row (before any failure) that fit
    while True:
        fit = max((p for p in points.values() if p.fits), key=lambda p: p.batch, default=None)
        f = fit.batch if fit is not None else low - 1
        fail = min((p for p in points.values() if not p.fits and p.batch > f),
                   key=lambda p: p.batch, default=None)
        if fail is not None and fail.batch - f <= 1:
            return fit.batch if fit is not None else None
        if fit is not None and f >= top_limit:
            return f
        predicted = False
        if fit is None:
            guess = low
        elif fit.total is None or fit.total > capacity:
            guess = f + 1   # fit known without a figure: is one more already too many?
        elif fail is not None:
            # While probes keep landing on one side, the end that stays put
            # weighs half as much each time (the Illinois rule), pulling the
            # next guess toward it; the fourth same side in a row bisects.
            run = _run_length(bracket_sides)
            if run >= 4 or fail.total is None or fail.total <= capacity:
                guess = (f + fail.batch) // 2   # (a failure for another reason: no line)
            else:
                shrink = 0.5 ** (run - 1) if run else 1.0   # (run 0: a failure was known)
                under = (capacity - fit.total) * (shrink if run and not bracket_sides[-1] else 1)
                over = (fail.total - capacity) * (shrink if run and bracket_sides[-1] else 1)
                guess = f + int((fail.batch - f) * under / (under + over))
        else:
            lower = [p for p in points.values() if p.batch < f and p.total is not None
                     and p.fits and p.total < fit.total]
            slope = _slope(max(lower, key=lambda p: p.batch), fit) if lower else None
            if slope or slope_hint:
                guess = f + int((capacity - fit.total) // (slope or slope_hint))
                predicted = bool(slope) and guess < f * _GROWTH   # by this mode's own line
            else:
                guess = 2 * f
            if crawl >= 3:
                prev = max((p.batch for p in points.values() if p.fits and p.batch < f),
                           default=f // 2)
                guess = max(guess, f + 2 * (f - prev))
        hi = fail.batch - 1 if fail is not None else (f * _GROWTH if fit is not None else low)
        guess = max(f + 1, min(guess, hi, top_limit))
        point = probe(guess)
        points[guess] = point
        if fail is not None or not point.fits:
            bracket_sides.append(point.fits)
        crawl = crawl + 1 if predicted and point.fits else 0


def _run_length(sides: Sequence[bool]) -> int:
    """How many of the last entries of ``sides`` equal the last one."""
    n = 0
    for side in reversed(sides):
        if side != sides[-1]:
            break
        n += 1
    return n


def _boundary_slope(pts, capacity: int) -> float | None:
    """Bytes per batch element of a finished mode near its answer: through its
    largest fit and least failure when both have figures, else its two largest fits."""
    measured = sorted((p for p in pts if p.total is not None and (p.total <= capacity) == p.fits),
                      key=lambda p: p.batch)
    fits = [p for p in measured if p.fits]
    if not fits:
        return None
    fails = [p for p in measured if not p.fits and p.batch > fits[-1].batch]
    return (_slope(fits[-1], fails[0]) if fails else None) or \
        (_slope(fits[-2], fits[-1]) if len(fits) > 1 else None)


def _bisect_mode(fits: Callable[[int], bool], low: int, high: int | None,
                 results: Sequence[ModeResult], mode: str) -> int | None:
    """The earlier search: doubling then bisection from the previous modes' answer
    (probed again)."""
    floor_modes = {"olla": ("xla",), "recompute": ("olla", "xla")}.get(mode, ())
    known = [r.largest_batch for r in results if r.mode in floor_modes and r.largest_batch]
    return _search(fits, low, high, max(low, max(known)) if known else low)


def _recompute_search(memory: Callable[[int], _Point], confirm: Callable[[int], _Point],
                      known: dict[int, _Point], low: int, ceiling: int | None,
                      aim: int | None, hint: int | None = None) -> int | None:
    """The largest batch whose recomputing plan fits by memory and then, fed
    back, verified and timed, within the step-time limit.

    From the largest batch known to fit without recomputation (ours, else XLA's)
    up to ``ceiling`` (the working-set floor's last fitting batch, when known),
    by memory alone: ``aim`` (e.g. 1.5 x XLA's batch) first, confirmed at once
    when it fits (so a search cut short still answers that question), then
    ``hint`` and the batch above it, then doubling and bisection.  The largest
    batch that fits by memory is then confirmed; where that fails (the
    executable over the capacity, verification, or the step time), the
    confirmations bisect between it and the largest batch confirmed (a slow
    plan at one batch says little about the next, which recomputes other
    values, but the fewer values a smaller batch needs recomputed the faster
    it tends to run)."""
    base = max((b for b, p in known.items() if p.fits), default=low - 1)
    lo, hi = base, (ceiling + 1 if ceiling is not None else None)   # memory: lo fits, hi not
    if hi is not None and lo + 1 >= hi:
        return base if base >= low else None
    firsts = [aim] if aim else []
    firsts += [hint, hint + 1] if hint else []
    for b in firsts:
        if lo < b and (hi is None or b < hi):
            if memory(b).fits:
                lo = b
                if b == aim:
                    confirm(b)   # the question asked, answered before anything else
            else:
                hi = b
    while hi is None:   # nothing failed yet: double
        b = 2 * max(lo, 1) if ceiling is None else min(2 * max(lo, 1), ceiling)
        if b <= lo:
            break
        if memory(b).fits:
            lo = b
            if ceiling is not None and b >= ceiling:
                break
        else:
            hi = b
    while hi is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        if memory(mid).fits:
            lo = mid
        else:
            hi = mid
    if lo <= base:
        return base if base >= low else None
    good = max([base] + [b for b in range(base + 1, lo + 1) if b == aim and confirm(b).fits])
    bad, candidate = lo + 1, lo
    while True:
        if candidate > good:
            if confirm(candidate).fits:
                good = candidate
            else:
                bad = candidate
        if bad - good <= 1:
            return good if good >= low else None
        candidate = (good + bad) // 2
