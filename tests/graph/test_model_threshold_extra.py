"""A threshold bound problem counts in a node's extra only the inner units
larger than its threshold: the others may sit in the regions it counts as 0."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_model import captured, graph_of  # noqa: E402


def test_a_loop_extra_in_a_threshold_problem_counts_only_inner_units_above_it():
    graph = graph_of(captured("lstm", "cpu"))
    inner = graph._inner_units()
    loops = sorted(set(inner.values()))
    assert loops, "the scan model should have a while loop with inner units"
    caps = sorted({c for c in graph.order_problem().region_sizes if c > 0})
    small = min(graph.units[u].size for u in inner)
    tried = 0
    for c in caps:
        problem = graph.threshold_problem(c, for_bound=True)
        for node in loops:
            above = sum(graph.units[u].size for u, n in inner.items() if n == node
                        and graph.units[u].size > c)
            assert problem.node_extra[node] <= above
        tried += c >= small
    assert tried, "no threshold at or above an inner unit's size: nothing tested"
