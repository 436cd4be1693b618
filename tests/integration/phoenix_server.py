"""Start Arize Phoenix on loopback only, for the opt-in integration test.

Run with the Python of Phoenix's own venv (``scripts/phoenix.sh`` makes it),
never steptrace's: ``python phoenix_server.py --working-dir D --port P
--grpc-port G``. It owns the settings that keep Phoenix local and quiet: HTTP
on ``127.0.0.1``, its data, temp files and working directory under ``D``, no
usage telemetry, no external resources (fonts, scripts), no agent assistant,
no MCP server. Phoenix's gRPC receiver binds ``[::]`` whatever ``PHOENIX_HOST``
says (the address is fixed in its code), so before handing over to
``phoenix.server.main.main()`` this wrapper makes every gRPC server it creates
bind ``127.0.0.1`` instead: nothing listens beyond loopback. Standard library
only at import, so steptrace's type checker and linter can read it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

LOOPBACK = "127.0.0.1"


def settings(working_dir: str, port: int, grpc_port: int) -> dict[str, str]:
    """The environment Phoenix reads, keeping everything local and quiet."""
    return {
        "PHOENIX_WORKING_DIR": working_dir,
        "PHOENIX_HOST": LOOPBACK,
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
        "PHOENIX_ENABLE_MCP_SERVER": "false",
        "PHOENIX_LOG_MIGRATIONS": "false",
        "TMPDIR": working_dir,
    }


def bind_grpc_to_loopback() -> None:
    """Make ``grpc.aio`` servers turn ``[::]:PORT`` and ``0.0.0.0:PORT`` into
    ``127.0.0.1:PORT`` (Phoenix passes the wildcard address literally)."""
    server_module: Any = importlib.import_module("grpc.aio._server")
    server_class = server_module.Server
    original = server_class.add_insecure_port

    def add_insecure_port(self: Any, address: str) -> int:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", ""):
            address = f"{LOOPBACK}:{port}"
        result: int = original(self, address)
        return result

    server_class.add_insecure_port = add_insecure_port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--working-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args(argv)
    os.makedirs(args.working_dir, exist_ok=True)
    os.chdir(args.working_dir)
    os.environ.update(settings(args.working_dir, args.port, args.grpc_port))
    bind_grpc_to_loopback()
    phoenix_main: Any = importlib.import_module("phoenix.server.main")
    sys.argv = ["phoenix", "serve"]
    phoenix_main.main()


if __name__ == "__main__":
    main()
