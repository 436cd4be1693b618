"""``steptrace replay RUN SCRIPT.py [ARGS...]``: the script again, offline, on
the stored run's recorded answers.

The stored run's LLM call transcripts (``store.transcripts``), with those of
the runs opened inside it (its child runs, as under ``steptrace run``),
ordered by their ``chat`` spans' start, become a replay cassette
(``cassette_from_calls``; ``--cassette PATH`` keeps it). The script then runs
like ``steptrace run`` (stored as a new run whose metadata names the one it
replays, as do the runs the script opens meanwhile: the store marks them all
as replays and keeps them out of spend totals) with every ``llm_call``
answered by a ``ReplayProvider`` over that cassette, whatever provider the
script configures or passes, and with connections beyond loopback refused
(``steptrace.testing.block_network``), so a replay never spends money. A run
stored without content (``--no-content``) cannot be replayed: the error says
so.

The provider is pinned with ``steptrace.llm.override_provider``, which keeps
the model name each call would have sent.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..spans import Span, add_span_processor, remove_span_processor
from ..store import StoredRun
from ._common import CliError, reading_store
from ._render import Style
from ._resolve import resolve_run_id
from ._run_command import add_script_arguments, record_script
from ._script import check_script

if TYPE_CHECKING:
    from .._run import Run
    from ..llm.providers.replay import ReplayProvider

__all__ = ["add_parser", "cassette_calls"]

EXAMPLES = """\
examples:
  steptrace replay last agent.py               the latest run's answers, offline
  steptrace replay 20261122-0318 agent.py --topic batteries
  steptrace replay last agent.py --cassette calls.jsonl   (keep the cassette)

The script must ask for the same calls the stored run made (same model,
messages, tools); a call that was not recorded fails with a diff against the
closest recorded one.
"""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "replay",
        help="run a script again offline, answered from a stored run",
        description="Run a script again, offline: every LLM call is answered from the "
        "transcripts of a stored run (no network), and the new run is stored.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run", metavar="RUN", help="the stored run to replay: an id, a prefix, `last`, a name"
    )
    parser.add_argument(
        "--cassette", metavar="PATH", help="also keep the replay cassette at PATH (JSON lines)"
    )
    parser.add_argument(
        "--strict-order",
        action="store_true",
        help="calls must come in exactly the recorded order (default: matched by request)",
    )
    add_script_arguments(parser)
    parser.set_defaults(handler=run_replay)


def cassette_calls(store: Any, stored: StoredRun) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(request, response)`` pairs of the LLM calls of the run and of the
    runs opened inside it (``steptrace run``'s wrapper holds none of its own),
    in the order their spans started; ``CliError`` when the run was stored
    without content."""
    family = [stored]
    for member in family:  # grows as children are found
        for child_id in member.child_run_ids:
            child = store.get_run(child_id)
            if child is not None:
                family.append(child)
    transcripts = [t for member in family for t in store.transcripts(member.id)]
    if not transcripts:
        if stored.run.llm_calls:
            raise CliError(
                f"run {stored.id} made {stored.run.llm_calls} LLM call(s) but the store holds "
                "no transcript of them (were they made outside llm_call?): nothing to replay"
            )
        return []
    contentless = [t for t in transcripts if t.request is None or t.response is None]
    if contentless:
        raise CliError(
            f"run {stored.id} was stored without content (steptrace run --no-content, or "
            f"STEPTRACE_CAPTURE_CONTENT=0): {len(contentless)} of its {len(transcripts)} LLM "
            "call(s) have no prompt or response to replay. Record it again without "
            "--no-content to replay it."
        )
    started = {
        (member.id, span.span_id): (span.start_ns, span.span_id)
        for member in family
        for span in member.spans
    }
    ordered = sorted(transcripts, key=lambda t: started.get((t.run_id, t.span_id), (0, t.span_id)))
    return [(t.request, t.response) for t in ordered if t.request and t.response]


def run_replay(args: argparse.Namespace) -> int:
    path = check_script(args.script)
    with reading_store(args.store) as store:
        run_id = resolve_run_id(store, args.run)
        stored = store.get_run(run_id)
        if stored is None:
            raise CliError(f"run {run_id} vanished from the store while reading it")
        calls = cassette_calls(store, stored)

    from ..llm.providers.replay import CassetteError, ReplayProvider, cassette_from_calls

    with tempfile.TemporaryDirectory(prefix="steptrace-replay-") as scratch:
        cassette = Path(args.cassette) if args.cassette else Path(scratch) / "cassette.jsonl"
        try:
            cassette_from_calls(calls, cassette)
        except CassetteError as exc:
            raise CliError(f"run {run_id}: its transcripts do not make a cassette: {exc}") from None
        except OSError as exc:
            raise CliError(f"cannot write the cassette {cassette}: {exc}") from None
        source = f"the calls recorded in run {run_id}"
        if args.cassette:
            source += f" (cassette {cassette})"
        provider = ReplayProvider(cassette, strict_order=args.strict_order, source=source)
        metadata = {"script": str(path), "argv": list(args.script_args), "replay_of": run_id}

        def after(run: Run, out: TextIO, style: Style) -> None:
            unplayed = len(provider.unplayed)
            line = f"replayed run {run_id}: {len(provider) - unplayed} of {len(provider)} recorded"
            line += " call(s) answered"
            if args.cassette:
                line += f"; cassette kept at {cassette}"
            out.write(style.paint(line, "dim") + "\n")

        return record_script(
            args,
            path,
            name=args.name or (path.absolute().name if path.is_dir() else path.stem),
            metadata=metadata,
            around=lambda: replaying(provider, run_id),
            after=after,
        )


@contextlib.contextmanager
def replaying(provider: ReplayProvider, original: str) -> Iterator[None]:
    """Offline on ``provider``, every run opened meanwhile marked as a replay
    of ``original``."""
    marker = _MarkReplays(original)
    add_span_processor(marker)
    try:
        with offline(provider):
            yield
    finally:
        remove_span_processor(marker)


class _MarkReplays:
    """Puts ``replay_of`` in the metadata of every run that starts (the store
    reads it into the run's ``replay_of``), unless the run says otherwise."""

    def __init__(self, original: str) -> None:
        self.original = original

    def on_start(self, span: Span) -> None:
        run: Run | None = getattr(span, "run", None)
        if run is not None and span is run.root and not run.is_default:
            run.metadata.setdefault("replay_of", self.original)

    def on_end(self, span: Span) -> None:
        pass


@contextlib.contextmanager
def offline(provider: ReplayProvider) -> Iterator[None]:
    """Every ``llm_call`` answered by ``provider``, no connection beyond loopback."""
    from ..llm import override_provider
    from ..testing import block_network

    with override_provider(provider), block_network():
        yield
