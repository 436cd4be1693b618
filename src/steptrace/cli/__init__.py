"""The ``steptrace`` command: run scripts inside a recorded run and read the store.

``steptrace run SCRIPT.py`` runs a script inside ``steptrace.run()`` with the run
store recording and a live progress display; ``runs``, ``show``, ``export``,
``replay``, ``prices`` and ``portal`` read, re-run and serve what was stored.
``main(argv)`` is the console script's entry point (``python -m steptrace.cli``
works too). Standard library only (argparse); each command lives in its own
module and imports what it needs when it runs, so ``steptrace --help`` is fast.
"""

from ._main import main

__all__ = ["main"]
