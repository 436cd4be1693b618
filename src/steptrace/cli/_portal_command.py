"""``steptrace portal``: serve the local web viewer (``steptrace.portal``).

The viewer is its own subpackage with the ``portal`` extra; it is imported
only when this command runs, and a missing one is an error with the install
hint. Binding anything but loopback needs a token (the viewer refuses
otherwise; the refusal is shown as an error). Like the other reading
commands it never creates an empty store: a missing one is an error.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from typing import Any

from ._common import CliError, existing_store_location

__all__ = ["add_parser"]

INSTALL_HINT = "the web viewer needs the portal extra: pip install 'steptrace[portal]'"

EXAMPLES = """\
examples:
  steptrace portal                               http://127.0.0.1:8765
  steptrace portal --port 9000 --open
  steptrace portal --host 0.0.0.0 --token "$(openssl rand -hex 16)"
"""


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "portal",
        help="serve the read-only local web viewer",
        description="Serve the read-only web viewer of the run store (extra: "
        "pip install 'steptrace[portal]').",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (8765)")
    parser.add_argument(
        "--token",
        default=os.environ.get("STEPTRACE_PORTAL_TOKEN"),
        help="access token, required to bind a non-loopback address "
        "(default: $STEPTRACE_PORTAL_TOKEN)",
    )
    parser.add_argument("--open", action="store_true", help="open the viewer in a browser")
    parser.set_defaults(handler=run_portal)


def run_portal(args: argparse.Namespace) -> int:
    try:
        from .. import portal
    except ImportError as exc:
        raise CliError(f"{INSTALL_HINT} ({exc})") from None
    location = existing_store_location(args.store)
    try:
        portal.serve(
            location, host=args.host, port=args.port, token=args.token, open_browser=args.open
        )
    except ImportError as exc:
        raise CliError(f"{INSTALL_HINT} ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise CliError(
            f"cannot read the store at {location}: {exc}; the file may be damaged "
            "(`sqlite3 FILE 'PRAGMA integrity_check'` says more)"
        ) from None
    except ConnectionError as exc:  # a database that refuses the connection
        raise CliError(f"cannot open the store at {location}: {exc}") from None
    except ValueError as exc:  # a non-loopback address without a token, a bad port
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    except KeyboardInterrupt:
        return 0
    return 0
