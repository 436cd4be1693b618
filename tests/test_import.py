"""``import steptrace`` is cheap: standard library only, no thread, no asyncio."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import json, sys, threading

    before_modules = set(sys.modules)
    before_threads = threading.active_count()
    thread_names = sorted(t.name for t in threading.enumerate())

    import steptrace

    new = sorted(set(sys.modules) - before_modules)
    print(json.dumps({
        "new": new,
        "third_party": sorted(
            name for name in new
            if name.partition(".")[0] not in sys.stdlib_module_names
            and name.partition(".")[0] != "steptrace"
            and not name.startswith("_sysconfigdata_")  # stdlib, platform-named
        ),
        "threads_before": before_threads,
        "threads_after": threading.active_count(),
        "thread_names_before": thread_names,
        "thread_names_after": sorted(t.name for t in threading.enumerate()),
        "asyncio": "asyncio" in sys.modules,
        "file": steptrace.__file__,
    }))
    """
)


def _probe() -> dict[str, object]:
    # -I: isolated mode, so no sitecustomize, user site or PYTHON* variable can
    # pre-import anything; the package is found through the venv's site-packages.
    completed = subprocess.run(
        [sys.executable, "-I", "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout)
    return result


def test_import_loads_no_third_party_module_starts_no_thread_and_skips_asyncio() -> None:
    result = _probe()
    new = result["new"]
    assert isinstance(new, list)
    assert "steptrace" in new  # the probe really imported it
    assert str(result["file"]).endswith("__init__.py")
    assert result["third_party"] == []
    assert result["threads_after"] == result["threads_before"]
    assert result["thread_names_after"] == result["thread_names_before"]
    assert result["asyncio"] is False
    assert not any(name == "asyncio" or name.startswith("asyncio.") for name in new)
