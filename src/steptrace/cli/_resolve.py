"""Which stored run a person means by RUN: an id, a unique id prefix,
``last``/``latest``, or a run name (its latest run).

An unknown RUN is a ``CliError`` listing near matches (``difflib`` over the
ids and names of recent runs); an ambiguous prefix lists the candidates.
"""

from __future__ import annotations

import difflib

from ..store import RunStore
from ._common import CliError

__all__ = ["resolve_run_id"]

LATEST = ("last", "latest")
_RECENT = 500
_CANDIDATES_SHOWN = 10


def resolve_run_id(store: RunStore, query: str) -> str:
    """The id of the run ``query`` names in ``store``; ``CliError`` otherwise."""
    query = query.strip()
    if not query:
        raise CliError("RUN is empty: give a run id, a unique prefix of one, or `last`")
    if query.lower() in LATEST:
        newest = store.list_runs(limit=1)
        if not newest:
            raise CliError("the store holds no runs yet; record one with `steptrace run SCRIPT.py`")
        return newest[0].id
    matches = store.run_ids(query, limit=_CANDIDATES_SHOWN + 1)
    if query in matches:
        return query
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = "\n".join(f"  {run_id}" for run_id in matches[:_CANDIDATES_SHOWN])
        more = " (and more)" if len(matches) > _CANDIDATES_SHOWN else ""
        raise CliError(
            f"run id prefix {query!r} is ambiguous: it matches{more}\n{shown}\nGive more of the id."
        )
    by_name = store.list_runs(name=query, limit=1)
    if by_name:
        return by_name[0].id
    raise CliError(_unknown(store, query))


def _unknown(store: RunStore, query: str) -> str:
    recent = store.list_runs(limit=_RECENT)
    if not recent:
        return f"no run {query!r}: the store holds no runs yet"
    ids = [run.id for run in recent]
    names = list(dict.fromkeys(run.name for run in recent))
    near_ids = difflib.get_close_matches(query, ids, n=5, cutoff=0.6)
    near_names = difflib.get_close_matches(query, names, n=5, cutoff=0.6)
    lines = [f"no run {query!r} in the store (not an id, an id prefix or a run name)."]
    if near_ids or near_names:
        lines.append("Did you mean:")
        by_id = {run.id: run for run in recent}
        for run_id in near_ids:
            run = by_id[run_id]
            lines.append(f"  {run_id}  {run.name}  {run.status}")
        lines.extend(f"  {name}  (run name: its latest run)" for name in near_names)
    else:
        lines.append(
            f"The latest run is {ids[0]} ({recent[0].name}); list runs with `steptrace runs`."
        )
    return "\n".join(lines)
