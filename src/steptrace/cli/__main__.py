"""``python -m steptrace.cli``: the same as the ``steptrace`` console script."""

from ._main import main

raise SystemExit(main())
