"""Plans on disk: a versioned JSON file tied to a fingerprint of the module.

A saved plan records the entry order and every moved value's place.  It is
only ever applied to the very module it was made for: the fingerprint is a
hash of XLA's optimized HLO text, so another program, another jax version or
other compile options give another fingerprint and the plan is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from olla_jax.errors import OllaJaxError

FORMAT = "olla_jax.plan"
VERSION = 1


class PlanFileError(OllaJaxError, ValueError):
    """A plan file is unreadable, of another version, or for another program."""


_METADATA = re.compile(r", metadata=\{[^}]*\}")


def fingerprint(hlo_text: str) -> str:
    """A hash of the optimized module without its source metadata (file names,
    stack frames, op names), so the same step saved from another script matches."""
    lines = hlo_text.splitlines()
    body = [lines[0]] + [l for l in lines[next((i for i, l in enumerate(lines)
                                                if l.startswith(("%", "ENTRY"))), len(lines)):]]
    return hashlib.sha256(_METADATA.sub("", "\n".join(body)).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class SavedPlan:
    fingerprint: str
    backend: str
    xla_scheduler: str
    order: tuple[str, ...]
    places: dict[int, tuple[int, int]]
    allocation_sizes: dict[int, int]
    figures: dict[str, Any]
    engine: str
    notes: tuple[str, ...]
    # values computed twice: dicts with value, producer, before, late_users,
    # place, size, and where set, scratch and done_before (``recompute_record``)
    recomputes: tuple[dict[str, Any], ...] = ()
    # the file it was read from ('' where it was not: ``Plan.to_saved()``); not in the file
    path: str = dataclasses.field(default="", compare=False)

    def __repr__(self) -> str:
        # The order and places run to thousands of entries: printing a loaded plan
        # said nothing for screens of them.  summary() has the figures.
        return (f"SavedPlan(backend={self.backend!r}, fingerprint={self.fingerprint[:12]!r}..., "
                f"engine={self.engine!r}, {len(self.order):,} instructions, "
                f"{len(self.places):,} placed values, {len(self.recomputes):,} recomputed)")

    def summary(self) -> str:
        f = self.figures
        lines = [f"saved olla_jax plan for {self.backend} (module {self.fingerprint[:12]}...)"]
        keys = ("xla_default_temp_bytes", "xla_best_temp_bytes", "planned_temp_bytes",
                "achieved_temp_bytes", "lower_bound_bytes")
        if f.get("jax_program_temp_bytes") is not None:   # planned with threefry2x32 unrolled
            keys = ("jax_program_temp_bytes",) + keys
        for key in keys:
            value = f.get(key)
            # a recomputing plan's bound is the working set's floor (as Plan.summary says)
            label = ("lower_bound (working set)" if key == "lower_bound_bytes" and self.recomputes
                     else key)
            lines.append(f"  {label:24s} {'-' if value is None else f'{value:,d} B'}")
        lines.append(f"  engine                   {self.engine}")
        if self.recomputes:
            from olla_jax.graph import layout
            count = layout.count_recomputes([recompute_of(r) for r in self.recomputes],
                                            set(self.order))
            lines.append(f"  recomputed               {count.text}")
        lines.append(f"  verified when saved      {f.get('verified')}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
            "backend": self.backend, "xla_scheduler": self.xla_scheduler,
            "order": list(self.order),
            "places": {str(k): list(v) for k, v in sorted(self.places.items())},
            "allocation_sizes": {str(k): v for k, v in sorted(self.allocation_sizes.items())},
            "figures": self.figures, "engine": self.engine, "notes": list(self.notes),
            "recomputes": [dict(r) for r in self.recomputes]},
            indent=1)


def from_json(text: str, source: str = "<string>") -> SavedPlan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PlanFileError(f"{source} is not a plan file (invalid JSON: {err}); "
                            "make a new one with plan.save(path)") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlanFileError(f"{source} is not an olla_jax plan file")
    if data.get("version") != VERSION:
        raise PlanFileError(f"{source} has plan format version {data.get('version')}; this "
                            f"olla_jax reads version {VERSION}: plan the step again")
    try:
        return SavedPlan(
            fingerprint=str(data["fingerprint"]), backend=str(data["backend"]),
            xla_scheduler=str(data["xla_scheduler"]), order=tuple(map(str, data["order"])),
            places={int(k): (int(v[0]), int(v[1])) for k, v in data["places"].items()},
            allocation_sizes={int(k): int(v) for k, v in data["allocation_sizes"].items()},
            figures=_figures(data["figures"]), engine=str(data["engine"]),
            notes=tuple(map(str, data.get("notes", ()))),
            recomputes=tuple(_recompute(r) for r in data.get("recomputes", ())))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise PlanFileError(f"{source} is a damaged plan file ({type(err).__name__}: {err}); "
                            "plan the step again") from err


def _recompute(raw) -> dict[str, Any]:
    out = {"value": int(raw["value"]), "producer": str(raw["producer"]),
           "before": str(raw["before"]), "late_users": [str(u) for u in raw["late_users"]],
           "place": [int(raw["place"][0]), int(raw["place"][1])], "size": int(raw["size"])}
    if raw.get("scratch"):
        out["scratch"] = [[int(v), [int(p[0]), int(p[1])]] for v, p in raw["scratch"]]
    if raw.get("done_before"):
        out["done_before"] = str(raw["done_before"])
    return out


def recompute_record(r) -> dict[str, Any]:
    """A ``graph.layout.Recompute`` as a plan file keeps it: a library call's
    copy keeps its workspace's place (``scratch``) and a collective run again
    its done's (``done_before``), which the checker asks for."""
    return _recompute({"value": r.value, "producer": r.producer, "before": r.before,
                       "late_users": list(r.late_users), "place": list(r.place), "size": r.size,
                       "scratch": [[v, list(p)] for v, p in r.scratch],
                       "done_before": r.done_before})


def recompute_of(raw: dict[str, Any]):
    """The ``graph.layout.Recompute`` of a plan file's record (``recompute_record``)."""
    from olla_jax.graph import layout
    return layout.Recompute(
        value=raw["value"], producer=raw["producer"], before=raw["before"],
        late_users=tuple(raw["late_users"]), place=tuple(raw["place"]), size=raw["size"],
        done_before=raw.get("done_before", ""),
        scratch=tuple((v, tuple(p)) for v, p in raw.get("scratch", ())))


def _figures(raw) -> dict[str, Any]:
    figures = dict(raw)
    for key, value in figures.items():
        if key.endswith("_bytes") and value is not None and not isinstance(value, int):
            raise ValueError(f"figure {key} is {value!r}, not a byte count")
    return figures


def check_folder(path: str | Path, what: str = "the file") -> None:
    """Raise ``FileNotFoundError`` naming ``path``'s folder when it does not
    exist: what to do, rather than an error about a temporary file or from
    inside an image library, after the plan was paid for."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {what} {path}: the folder {folder} does not "
                                "exist (create it first, or give a path in an existing folder)")


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: a
    reader (another process sharing a cache) sees the old file or the new one,
    never half of one."""
    path = Path(path)
    check_folder(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_plan(path: str | Path) -> SavedPlan:
    """Read a plan written by ``Plan.save``; apply it with ``olla_jax.plan(..., saved=...)``."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise PlanFileError(f"{path} is not a plan file (not UTF-8 text)") from err
    except OSError as err:
        raise PlanFileError(f"cannot read plan file {path}: {err}") from err
    return dataclasses.replace(from_json(text, str(path)), path=str(path))
