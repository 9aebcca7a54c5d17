"""Boolean terms on one CP-SAT model where True and False stand for constants.

The bound models (``bound_park``, ``bound_block``) build "ran before the
node", "live at the node" and "region idle" terms, many of them settled by
the graph alone; these helpers fold the constants away and add a variable
only for what is left to choose.
"""

from __future__ import annotations

from typing import Any, Callable


class Lits:
    """OR and AND of terms on ``model``.  Where ``rules`` is a list, each new
    variable is appended with its value as a function of the earlier
    variables' values (``val[lit]``), for building a solution hint."""

    def __init__(self, model: Any, rules: list[tuple[Any, Callable]] | None = None):
        self.model = model
        self.rules = rules

    def any_of(self, terms) -> Any:
        """A literal equal to the OR of ``terms`` (bools or literals)."""
        lits = []
        for t in terms:
            if t is True:
                return True
            if t is not False:
                lits.append(t)
        if not lits:
            return False
        if len(lits) == 1:
            return lits[0]
        v = self.model.new_bool_var("")
        self.model.add_bool_or(lits).only_enforce_if(v)
        for lit in lits:
            self.model.add_implication(lit, v)
        if self.rules is not None:
            self.rules.append((v, lambda val: any(val[lit] for lit in lits)))
        return v

    def both(self, a, b) -> Any:
        """A literal equal to ``a`` AND ``b``."""
        if a is False or b is False:
            return False
        if a is True:
            return b
        if b is True:
            return a
        v = self.model.new_bool_var("")
        self.model.add_bool_and([a, b]).only_enforce_if(v)
        self.model.add_bool_or([a.Not(), b.Not()]).only_enforce_if(v.Not())
        if self.rules is not None:
            self.rules.append((v, lambda val: val[a] and val[b]))
        return v


class RanBefore:
    """Whether node ``v`` ran before node ``n``: True for ``n``'s ancestors
    ``anc``, False for ``n`` and its descendants ``desc``, else one variable
    per node, made on first asking (``variables``: node -> variable)."""

    def __init__(self, model: Any, n: int, anc, desc):
        self.model, self.n, self.anc, self.desc = model, n, anc, desc
        self.variables: dict[int, Any] = {}

    def __call__(self, v: int) -> Any:
        if v in self.anc:
            return True
        if v == self.n or v in self.desc:
            return False
        if v not in self.variables:
            self.variables[v] = self.model.new_bool_var("")
        return self.variables[v]


def neg(t) -> Any:
    """NOT ``t``."""
    return (not t) if isinstance(t, bool) else t.Not()
