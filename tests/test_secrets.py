"""Credentials never surface: a unique secret planted in every configuration
path is searched for in every output.

The paths: ``OpenAIProvider(api_key=...)``, ``AnthropicProvider(api_key=...)``,
the keys of an OpenAI and an Anthropic client given to ``instrument()``, the
password of a PostgreSQL store URL and of a Redis pool URL. The fake servers
echo the key they were sent in their error (as real APIs do with a wrong key),
so it reaches exceptions, span and run errors. The outputs searched: exception
messages (printed by the script), logs at DEBUG, the store's bytes, both export
formats, the CLI's output (``run``, ``runs``, ``show``, ``export``,
``replay``, ``portal``'s start line, error lines) and the portal's API
responses. The secrets have no key-like shape, so only the registry of known
secrets can catch them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steptrace._redact import LOGGERS, REDACTED, redact, register_credentials
from steptrace.cli import main
from steptrace.export import export_run
from steptrace.portal import create_app
from steptrace.store import SQLiteStore, open_store
from steptrace.testing import (
    AnthropicErrorReply,
    FakeAnthropic,
    FakeOpenAI,
    OpenAIErrorReply,
)
from steptrace.testing._server import RecordedRequest
from tests.portal.conftest import call

SCRIPT = """
import os

import anthropic
import openai

import steptrace
from steptrace import llm
from steptrace.errors import ProviderError
from steptrace.llm.anthropic.provider import AnthropicProvider
from steptrace.llm.openai.provider import OpenAIProvider

env = os.environ
openai_url, anthropic_url = env["FAKE_OPENAI_URL"], env["FAKE_ANTHROPIC_URL"]
providers = [
    OpenAIProvider(api_key=env["PLANTED_OPENAI_PROVIDER"], base_url=openai_url),
    AnthropicProvider(api_key=env["PLANTED_ANTHROPIC_PROVIDER"], base_url=anthropic_url),
]
models = ["gpt-4o-mini", "claude-haiku-4-5"]
oa = llm.instrument(openai.OpenAI(
    api_key=env["PLANTED_OPENAI_CLIENT"], base_url=openai_url, max_retries=0))
an = llm.instrument(anthropic.Anthropic(
    api_key=env["PLANTED_ANTHROPIC_CLIENT"], base_url=anthropic_url, max_retries=0))


@steptrace.step
def ask(provider, model):
    return llm.llm_call("hi", model=model, provider=provider, max_tokens=16)


@steptrace.step
def ask_client(client):
    if client is oa:
        return client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=16)
    return client.messages.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}], max_tokens=16)


for provider, model in zip(providers, models):
    try:
        ask(provider, model)
    except ProviderError as error:
        print("provider error:", error)
try:
    ask_client(an)
except anthropic.APIError as error:
    print("client error recorded")
ask_client(oa)  # uncaught: the run fails with the SDK's error, the CLI prints it
"""


def _echo_openai(request: RecordedRequest) -> OpenAIErrorReply:
    key = request.headers.get("authorization", "").removeprefix("Bearer ")
    return OpenAIErrorReply(
        status=401, message=f"Incorrect API key provided: {key}", code="invalid_api_key"
    )


def _echo_anthropic(request: RecordedRequest) -> AnthropicErrorReply:
    key = request.headers.get("x-api-key", "")
    return AnthropicErrorReply(
        status=401, type="authentication_error", message=f"invalid x-api-key {key}"
    )


def _planted(name: str) -> str:
    # No key-like shape (no ``sk-``, no ``api_key=``): only the registry can know it.
    return f"planted{name}{uuid.uuid4().hex}"


SECRETS = {
    name: _planted(name.replace("_", "").lower())
    for name in (
        "PLANTED_OPENAI_PROVIDER",
        "PLANTED_ANTHROPIC_PROVIDER",
        "PLANTED_OPENAI_CLIENT",
        "PLANTED_ANTHROPIC_CLIENT",
    )
}


class Outputs:
    """Every text a secret could surface in, by where it came from."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.texts[where] = self.texts.get(where, "") + text

    def assert_clean(self, secrets: list[str]) -> None:
        leaks = [
            (where, secret[:20] + "...")
            for where, text in self.texts.items()
            for secret in secrets
            if secret in text
        ]
        assert not leaks, f"secrets surfaced in: {leaks}"


def cli(outputs: Outputs, where: str, *argv: str) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    outputs.add(where, out.getvalue() + err.getvalue())
    return code


@contextlib.contextmanager
def debug_logs(outputs: Outputs) -> Iterator[None]:
    """Everything logged at DEBUG, by any logger, formatted with tracebacks."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        outputs.add("logs at DEBUG", stream.getvalue())


def store_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def portal_responses(outputs: Outputs, store_target: str) -> None:
    store = open_store(store_target)
    app = create_app(store)
    try:
        runs = call(app, "GET", "/api/runs").json()["runs"]
        assert runs
        for listed in runs:
            run_id = listed["id"]
            for target in (
                f"/api/runs/{run_id}",
                f"/api/runs/{run_id}/summary",
                f"/api/runs/{run_id}/live",
                f"/api/runs/{run_id}/events",
                f"/api/runs/{run_id}/llm-calls",
            ):
                response = call(app, "GET", target)
                outputs.add(f"portal GET {target}", response.body)
            stored = store.get_run(run_id)
            assert stored is not None
            for span in (s.span_id for s in stored.spans):
                for target in (
                    f"/api/runs/{run_id}/spans/{span}/children",
                    f"/api/runs/{run_id}/llm-calls/{span}",
                ):
                    outputs.add(f"portal GET {target}", call(app, "GET", target).body)
        outputs.add("portal GET /api/runs", call(app, "GET", "/api/runs").body)
    finally:
        app.reads.close()
        store.close()


def exports(outputs: Outputs, store_target: str, scratch: Path) -> None:
    with contextlib.closing(open_store(store_target)) as store:
        for row in store.list_runs(limit=100):
            stored = store.get_run(row.id)
            assert stored is not None
            for fmt in ("jsonl", "otlp-json"):
                path = export_run(stored, scratch / f"{row.id}-{fmt}", fmt)
                outputs.add(f"export {fmt}", path.read_text())


def read_commands(outputs: Outputs, store_target: str) -> None:
    cli(outputs, "runs", "--store", store_target, "runs")
    cli(outputs, "runs --json", "--store", store_target, "runs", "--json")
    for color in ("never", "always"):
        cli(
            outputs,
            f"show --color {color}",
            *("--store", store_target, "--color", color, "show", "last", "--events", "--spans"),
        )
    cli(outputs, "show --json", "--store", store_target, "show", "last", "--json", "--events")
    for fmt in ("jsonl", "otlp-json"):
        cli(outputs, f"export {fmt}", "--store", store_target, "export", "last", "-o", "-")


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    with (
        FakeOpenAI(_echo_openai) as fake_openai,
        FakeAnthropic(_echo_anthropic) as fake_anthropic,
    ):
        monkeypatch.setenv("FAKE_OPENAI_URL", fake_openai.base_url)
        monkeypatch.setenv("FAKE_ANTHROPIC_URL", fake_anthropic.url)
        for name, value in SECRETS.items():
            monkeypatch.setenv(name, value)
        yield fake_openai.url, fake_anthropic.url


def test_configured_keys_never_surface(
    planted: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "agent.py"
    script.write_text(SCRIPT)
    db = tmp_path / "runs.db"
    outputs = Outputs()
    with debug_logs(outputs):
        code = cli(outputs, "run", "--store", str(db), "--color", "never", "run", str(script))
        assert code == 1  # the script's uncaught SDK error
        # The servers did echo the keys: the test would prove nothing otherwise.
        assert "client error recorded" in outputs.texts["run"]
        assert outputs.texts["run"].count("provider error:") == 2
        assert outputs.texts["run"].count(REDACTED) >= 3
        cli(outputs, "replay", "--store", str(db), "replay", "last", str(script))
        read_commands(outputs, str(db))
        cli(outputs, "error line", "--store", str(db), "show", SECRETS["PLANTED_OPENAI_CLIENT"])
    exports(outputs, str(db), tmp_path)
    portal_responses(outputs, str(db))
    outputs.add("store bytes", store_bytes(db))
    with SQLiteStore(db) as store:
        errors = [s.error for r in store.list_runs() for s in store.get_run(r.id).spans if s.error]  # type: ignore[union-attr]
    assert sum(REDACTED in e for e in errors) >= 4  # the recorded errors held the keys
    outputs.assert_clean(list(SECRETS.values()))


def test_store_and_pool_url_passwords_never_surface(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests._services import fresh_database

    monkeypatch.chdir(tmp_path)
    password = _planted("pgpassword")
    redis_password = _planted("redispassword")
    script = tmp_path / "job.py"
    script.write_text(
        "import steptrace\n"
        "@steptrace.step\n"
        "def work():\n"
        "    return 1\n"
        "work()\n"
        "raise RuntimeError('the job failed')\n"
    )
    outputs = Outputs()
    with fresh_database(postgres_url) as url:
        # The test server trusts loopback: any password is accepted (and sent).
        target = url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
        assert target != url
        with debug_logs(outputs):
            cli(outputs, "run", "--store", target, "run", str(script))
            cli(outputs, "replay", "--store", target, "replay", "last", str(script))
            read_commands(outputs, target)
            cli(outputs, "error line", "--store", target, "show", "no-such-run")
            closed = target.replace("127.0.0.1:", "127.0.0.1:1")  # nothing listens there
            cli(outputs, "refused store", "--store", closed, "runs")
            cli(outputs, "refused run", "--store", closed, "run", str(script))
            cli(outputs, "refused portal", "--store", closed, "portal", "--port", "0")
            outputs.add("portal start line", _portal_start_line(target))
            from steptrace.shared import RedisPool

            pool = RedisPool(f"redis://:{redis_password}@127.0.0.1:1/0", timeout=0.2)
            outputs.add("redis pool repr", repr(pool))
        exports(outputs, target, tmp_path)
        portal_responses(outputs, target)
    assert "***" in outputs.texts["refused store"]
    assert outputs.texts["refused portal"].startswith("steptrace: error: cannot open the store")
    # Registered where they entered: redacted wherever they show up alone too.
    assert redact(f"x {password} y {redis_password}") == f"x {REDACTED} y {REDACTED}"
    outputs.assert_clean([password, redis_password])


def _portal_start_line(target: str) -> str:
    """What ``steptrace portal`` prints before serving (it is stopped at once)."""
    import uvicorn

    out = io.StringIO()
    servers: list[Any] = []
    original = uvicorn.Server.run

    def run(self: Any, sockets: Any = None) -> None:
        servers.append(self)
        self.should_exit = True
        original(self, sockets=sockets)

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        uvicorn.Server.run = run  # type: ignore[method-assign]
        try:
            main(["--store", target, "portal", "--port", "0"])
        finally:
            uvicorn.Server.run = original  # type: ignore[method-assign]
    assert servers, out.getvalue()
    return out.getvalue()


def test_a_client_registers_its_key_and_base_url_password() -> None:
    password = _planted("urlpassword")

    class Client:
        api_key = _planted("clientkey")
        auth_token = _planted("clienttoken")
        base_url = f"https://user:{password}@proxy.example/v1"

    register_credentials(Client(), None, "short")
    text = f"{Client.api_key} {Client.auth_token} {password}"
    assert redact(text) == f"{REDACTED} {REDACTED} {REDACTED}"
    assert redact("short") == "short"  # too short to register: would blank ordinary words


def test_steptrace_log_records_are_redacted_with_their_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = _planted("logged")
    register_credentials(secret)
    caplog.set_level(logging.DEBUG)
    try:
        raise ValueError(f"server said {secret}")
    except ValueError as error:
        for name in ("steptrace", "steptrace.store", "steptrace.export", "steptrace.portal"):
            logging.getLogger(name).warning("failed: %s", error, exc_info=error)
    assert caplog.records
    assert secret not in caplog.text
    assert json.dumps([r.getMessage() for r in caplog.records]).count(REDACTED) == 4


def test_every_steptrace_logger_carries_the_redacting_filter() -> None:
    # A logger's filters see only the records logged to it, not its children's:
    # every name steptrace logs under must be in LOGGERS.
    source = Path(__file__).resolve().parent.parent / "src" / "steptrace"
    names = {
        match
        for path in source.rglob("*.py")
        for match in re.findall(r"getLogger\(\s*[\"']([^\"']+)[\"']", path.read_text())
    }
    assert names
    assert names <= set(LOGGERS), sorted(names - set(LOGGERS))
    assert not [p for p in source.rglob("*.py") if "getLogger(__name__)" in p.read_text()]
