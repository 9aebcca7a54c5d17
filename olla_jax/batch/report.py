"""What ``largest_batch`` and ``reachable_batch`` return: every probe, each
mode's answer, and the working-set floor's search (plain data and its tables)."""

from __future__ import annotations

import dataclasses

MIB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class Probe:
    """One step compiled (and planned) at one batch size."""
    mode: str
    batch: int
    total_bytes: int | None    # None when the mode could not produce a figure (see note)
    fits: bool
    seconds: float
    note: str = ""


@dataclasses.dataclass(frozen=True)
class ModeResult:
    mode: str
    largest_batch: int | None      # None: not even ``low`` fits, or the mode was skipped
    total_bytes: int | None        # the step's total at largest_batch
    smallest_failing: int | None   # the least probed batch above largest_batch that did not fit
    note: str = ""
    complete: bool = True          # False: the mode's time ran out; largest_batch is a lower bound


@dataclasses.dataclass(frozen=True)
class BatchReport:
    """The largest batch per mode under ``capacity_bytes``, with every probe."""
    backend: str
    capacity_bytes: int
    device_memory_bytes: int | None   # the device description's memory, when capacity came from it
    reserve_bytes: int | None         # what was held back from it
    results: tuple[ModeResult, ...]
    probes: tuple[Probe, ...]
    notes: tuple[str, ...] = ()
    reach: "Reach | None" = None      # the working-set floor's search (``reach_time_s``)

    def result(self, mode: str) -> ModeResult:
        for r in self.results:
            if r.mode == mode:
                return r
        raise KeyError(f"mode {mode!r} was not searched; searched: "
                       f"{', '.join(r.mode for r in self.results)}")

    def largest(self, mode: str) -> int | None:
        return self.result(mode).largest_batch

    @property
    def largest_batches(self) -> dict[str, int | None]:
        return {r.mode: r.largest_batch for r in self.results}

    def probe(self, mode: str, batch: int) -> Probe | None:
        """The last probe of ``mode`` at ``batch`` (recomputation: the confirmation,
        where the batch was confirmed after its memory-only probe)."""
        for p in reversed(self.probes):
            if p.mode == mode and p.batch == batch:
                return p
        return None

    def summary(self) -> str:
        """Markdown: per mode, the largest batch, its total and the ratio to XLA's
        batch (``summary()`` as ``Plan`` and ``DonationAdvice`` have it)."""
        return self.table()

    def table(self) -> str:
        """The text of ``summary()`` (its first name, kept)."""
        xla = self.largest_batches.get("xla")
        lines = [f"capacity {_mib(self.capacity_bytes)} ({self.capacity_bytes:,} bytes), "
                 f"backend {self.backend}", "",
                 "| mode | largest batch | total at largest | first batch over | vs xla |",
                 "|---|---:|---:|---:|---:|"]
        for r in self.results:
            if r.largest_batch and xla:
                ratio = f"{r.largest_batch / xla:.2f}x"
            else:
                ratio = "-"
            lines.append(f"| {r.mode} | {r.largest_batch if r.largest_batch is not None else '-'} "
                         f"| {_mib(r.total_bytes)} | "
                         f"{r.smallest_failing if r.smallest_failing is not None else '-'} "
                         f"| {ratio} |")
        lines += [f"\n{r.mode}: {r.note}" for r in self.results if r.note]
        lines += [f"\nnote: {n}" for n in self.notes]
        return "\n".join(lines)

    def probes_table(self) -> str:
        """Markdown: every probe in the order it was made."""
        # the note in a column of its own: text past a row's last cell is dropped
        # where markdown is rendered
        lines = ["| mode | batch | total | fits | seconds | note |", "|---|---:|---:|---|---:|---|"]
        for p in self.probes:
            note = p.note.replace("|", "\\|")
            lines.append(f"| {p.mode} | {p.batch} | {_mib(p.total_bytes)} | "
                         f"{'yes' if p.fits else 'no'} | {p.seconds:.1f} | {note} |")
        return "\n".join(lines)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.2f} MiB"


# ---- what no plan of these kernels can beat ---------------------------------------

@dataclasses.dataclass(frozen=True)
class FloorPoint:
    """The step at one batch, split as the batch question needs it (bytes)."""
    batch: int
    io_bytes: int          # arguments + outputs - aliased (parameters, optimizer state, the batch's data)
    xla_temp: int          # XLA's best plan's temp
    floor_temp: int        # the working-set floor: the temp one instruction needs (budget.working_set_bound)
    where: str             # that instruction

    @property
    def floor_total(self) -> int:
        return self.io_bytes + self.floor_temp


@dataclasses.dataclass(frozen=True)
class Reach:
    """The largest batch any plan that runs the step's kernels could fit
    (order, placement, recomputation by kernel copies all keep the arguments,
    the outputs and each instruction's operands and results): the largest batch
    whose ``FloorPoint.floor_total`` is within the capacity, searched like a mode."""
    batch: int | None              # None: not even the first batch's floor fits
    smallest_failing: int | None   # the least batch computed above it whose floor does not fit
    points: tuple[FloorPoint, ...]
    complete: bool                 # False: time ran out; ``batch`` is a lower bound
    seconds: float

    def point(self, batch: int) -> FloorPoint | None:
        return next((p for p in self.points if p.batch == batch), None)

