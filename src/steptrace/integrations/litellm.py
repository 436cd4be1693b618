"""Budgets and a record for LiteLLM: ``litellm.completion``, ``acompletion``,
streaming and ``Router`` (extra ``steptrace[litellm]``).

``instrument()`` wraps ``litellm.completion`` and ``litellm.acompletion`` (the
module's functions, which ``Router`` calls for every deployment it tries), so
each request LiteLLM is asked to make is pre-flighted against every steptrace
budget in force and not sent when its worst case cannot fit
(``BudgetExhausted`` with ``preflight=True`` is raised from the call), then
recorded from the usage LiteLLM reports (cached prompt tokens and
``completion_tokens_details.reasoning_tokens`` included, the latter on the
span as ``steptrace.reasoning_tokens``): a ``chat <model>`` span, an
``LlmCall`` event and ``record_llm_usage`` in the step that made the call.

Prices come from steptrace's price source (genai-prices through
``steptrace.llm.prices``), not from LiteLLM's cost map, unless
``instrument(prices="litellm")`` asks for LiteLLM's ``cost_per_token``. A
model is recorded and priced under the provider LiteLLM resolves it to:
``openai/gpt-4o-mini`` (and plain ``gpt-4o-mini``) is ``openai:gpt-4o-mini``,
``anthropic/claude-haiku-4-5`` is ``anthropic:claude-haiku-4-5``; a provider
the price table does not know (``ollama/llama3``) is not priced as a cloud
model, so under a USD budget it raises ``PricingUnknown`` unless you add a
price (``PriceTable(overrides={"ollama:llama3": ...})``).

Streams: ``stream=True`` asks the provider for the usage chunk
(``stream_options.include_usage``); when the caller did not ask for it, that
chunk is kept from them, so they see the same chunks as without steptrace.
The stream is recorded when it ends or is closed; one broken by an error
records what it received (the usage chunk if it came, else the pre-flight
input estimate and the streamed characters) and ends its span as failed. A
stream dropped without being read to the end or closed records nothing and
keeps its hold on the scopes that made it while they last: close streams you
abandon.

Call ``instrument()`` before ``from litellm import completion`` binds the
unwrapped function elsewhere (``litellm.completion(...)`` is always covered).
LiteLLM's own callbacks, retries and cost tracking go on as before; a request
LiteLLM retries internally is one request to steptrace, recorded with the
usage of the answer that came back. Import this module with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` in the environment if LiteLLM must not
fetch its cost map at import (steptrace sets it when unset, before importing
LiteLLM).
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Literal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

try:
    import litellm
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "steptrace.integrations.litellm needs LiteLLM: pip install 'steptrace[litellm]'"
    ) from exc

from pydantic import BaseModel

from ..llm.counts import part_count
from ..llm.openai.instrument import DEFAULT_MAX_OUTPUT_TOKENS, estimate_openai_input_tokens
from ..llm.prices import install_default_prices
from ._chains_request import ModelRequest, TokenCounts, new_counts

__all__ = ["LiteLLMPrices", "instrument", "is_instrumented", "steptrace_model", "uninstrument"]

_ORIGINAL = "_steptrace_original"
_PRICE = "_steptrace_prices"
_FUNCTIONS = ("completion", "acompletion")
_MAX_CACHED_MODELS = 1024
_models: dict[tuple[str, str | None], str] = {}
_MISSING = object()
_MODEL_TYPES: dict[type, bool] = {}


class LiteLLMPrices:
    """A steptrace ``PriceSource`` over LiteLLM's own cost map
    (``litellm.cost_per_token``), for ``instrument(prices="litellm")``.

    Model ids are steptrace's (``openai:gpt-4o-mini``); an unknown model is
    ``None``, never a silent zero."""

    def cost_usd(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None:
        try:
            prompt, completion = litellm.cost_per_token(
                model=model.replace(":", "/", 1),
                prompt_tokens=input_tokens,
                completion_tokens=output_tokens,
                cache_read_input_tokens=cache_read_tokens,
                cache_creation_input_tokens=cache_write_tokens,
            )
        except Exception:
            return None
        return float(prompt) + float(completion)


def steptrace_model(model: str, custom_llm_provider: str | None = None) -> str:
    """The id steptrace records and prices a LiteLLM model under:
    ``provider:model`` for the provider LiteLLM resolves (``openai/gpt-4o-mini``
    and ``gpt-4o-mini`` are ``openai:gpt-4o-mini``), else the name as given."""
    key = (model, custom_llm_provider)
    found = _models.get(key)
    if found is None:
        try:
            name, provider, _, _ = litellm.get_llm_provider(
                model=model, custom_llm_provider=custom_llm_provider
            )
        except Exception:
            found = model
        else:
            found = f"{provider}:{name}" if provider and name else model
        if len(_models) >= _MAX_CACHED_MODELS:
            _models.clear()
        _models[key] = found
    return found


def instrument(*, prices: Literal["steptrace", "litellm"] = "steptrace") -> None:
    """Pre-flight and record every ``litellm.completion``/``acompletion`` (and so
    every ``Router`` request). Idempotent; ``prices="litellm"`` prices with
    LiteLLM's cost map instead of steptrace's price source."""
    if prices not in ("steptrace", "litellm"):
        raise ValueError(f"instrument: prices must be 'steptrace' or 'litellm', got {prices!r}")
    price = LiteLLMPrices() if prices == "litellm" else None
    if price is None:
        install_default_prices()  # keeps a price source you configured
    for name in _FUNCTIONS:
        current = getattr(litellm, name)
        original = getattr(current, _ORIGINAL, None)
        if original is not None:
            if (getattr(current, _PRICE) is None) == (price is None):
                continue  # already instrumented alike
            current = original
        wrapper = (
            _async_wrapper(current, price)
            if name == "acompletion"
            else _sync_wrapper(current, price)
        )
        setattr(wrapper, _ORIGINAL, current)
        setattr(wrapper, _PRICE, price)
        setattr(litellm, name, wrapper)


def uninstrument() -> None:
    """Undo ``instrument()`` (a no-op when not instrumented)."""
    for name in _FUNCTIONS:
        original = getattr(getattr(litellm, name), _ORIGINAL, None)
        if original is not None:
            setattr(litellm, name, original)


def is_instrumented() -> bool:
    return getattr(litellm.completion, _ORIGINAL, None) is not None


def _start(kwargs: dict[str, Any], price: Any) -> tuple[ModelRequest | None, bool]:
    """Pre-flight the request in ``kwargs`` (adjusted in place for streams).
    Returns the request (None when there is no model: LiteLLM reports that)
    and whether a usage chunk must be kept from the caller."""
    model = kwargs.get("model")
    if type(model) is not str or not model:
        return None, False
    provider = kwargs.get("custom_llm_provider")
    messages = kwargs.get("messages")
    if messages is not None and type(messages) is not list:
        messages = kwargs["messages"] = list(messages)
    max_output = kwargs.get("max_completion_tokens")
    if type(max_output) is not int:
        max_output = kwargs.get("max_tokens")
    if type(max_output) is not int or max_output <= 0:
        max_output = DEFAULT_MAX_OUTPUT_TOKENS
    request = ModelRequest.start(
        steptrace_model(model, provider if isinstance(provider, str) else None),
        system="litellm",
        estimated_input_tokens=estimate_openai_input_tokens(
            messages, kwargs.get("tools"), kwargs.get("response_format")
        ),
        max_output_tokens=max_output,
        request_model=model,
        price=price,
    )
    hide_usage = False
    if kwargs.get("stream") is True:
        options = kwargs.get("stream_options")
        options = dict(options) if isinstance(options, Mapping) else {}
        hide_usage = options.get("include_usage") is not True
        kwargs["stream_options"] = {**options, "include_usage": True}
    return request, hide_usage


def _usage(usage: Any) -> TokenCounts | None:
    if usage is None:
        return None
    input_tokens = _field(usage, "prompt_tokens")
    output_tokens = _field(usage, "completion_tokens")
    if type(input_tokens) is not int or type(output_tokens) is not int:
        return None
    cache_read = cache_write = reasoning = 0
    # Parts never negative nor more than their whole (part_count); a part that
    # is absent or 0, the usual case, is 0 without asking.
    details = _field(usage, "prompt_tokens_details")
    if details is not None:
        part = _field(details, "cached_tokens")
        cache_read = part_count(part, input_tokens) if part else 0
        part = _field(details, "cache_write_tokens")
        cache_write = part_count(part, input_tokens - cache_read) if part else 0
    details = _field(usage, "completion_tokens_details")
    if details is not None:
        part = _field(details, "reasoning_tokens")
        reasoning = part_count(part, output_tokens) if part else 0
    return new_counts(
        TokenCounts, (input_tokens, output_tokens, cache_read, cache_write, reasoning)
    )


def _field(obj: Any, name: str) -> Any:
    """``obj.name``, or None when it has none. LiteLLM's responses and chunks
    are pydantic models that delete the optional fields a response leaves
    unset and keep others as extras; asking one for such a field goes through
    its ``__getattr__`` (3 to 7 µs each, an exception when missing), so a
    model's fields and extras are read where pydantic keeps them."""
    if obj is None:
        return None
    cls = type(obj)
    is_model = _MODEL_TYPES.get(cls)
    if is_model is None:  # isinstance through pydantic's ABC metaclass is slow: once a type
        if len(_MODEL_TYPES) >= _MAX_CACHED_MODELS:
            _MODEL_TYPES.clear()
        is_model = _MODEL_TYPES[cls] = issubclass(cls, BaseModel)
    if not is_model:
        return getattr(obj, name, None)
    found = obj.__dict__.get(name, _MISSING)
    if found is not _MISSING:
        return found
    extra = obj.__pydantic_extra__
    return extra.get(name) if extra else None


def _output_chars(message: Any) -> int:
    if message is None:
        return 0
    content = _field(message, "content")
    chars = len(content) if isinstance(content, str) else 0
    for call in _field(message, "tool_calls") or ():
        function = _field(call, "function")
        chars += len(str(_field(function, "name") or ""))
        chars += len(str(_field(function, "arguments") or ""))
    return chars


def _finish_response(request: ModelRequest, response: Any) -> dict[str, Any]:
    choices = _field(response, "choices") or ()
    usage = _usage(_field(response, "usage"))
    return {
        "usage": usage,
        "response_id": _field(response, "id"),
        "response_model": _field(response, "model"),
        "finish_reasons": [str(_field(c, "finish_reason") or "unknown") for c in choices],
        "output_chars": 0
        if usage is not None
        else sum(_output_chars(_field(c, "message")) for c in choices),
    }


def _sync_wrapper(original: Callable[..., Any], price: Any) -> Callable[..., Any]:
    @functools.wraps(original)
    def completion(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("acompletion") is True:
            return original(*args, **kwargs)  # a coroutine: the async path records it
        request, hide_usage = _start(kwargs, price)
        if request is None:
            return original(*args, **kwargs)
        try:
            response = original(*args, **kwargs)
        except BaseException as error:
            request.fail(error)
            raise
        if kwargs.get("stream") is True:
            return InstrumentedStream(response, request, hide_usage)
        request.finish(**_finish_response(request, response))
        return response

    return completion


def _async_wrapper(original: Callable[..., Awaitable[Any]], price: Any) -> Callable[..., Any]:
    @functools.wraps(original)
    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        request, hide_usage = _start(kwargs, price)
        if request is None:
            return await original(*args, **kwargs)
        try:
            response = await original(*args, **kwargs)
        except BaseException as error:
            request.fail(error)
            raise
        if kwargs.get("stream") is True:
            return InstrumentedStream(response, request, hide_usage)
        await request.afinish(**_finish_response(request, response))
        return response

    return acompletion


class InstrumentedStream:
    """LiteLLM's stream, passed through chunk by chunk (sync or async), recorded
    when it ends or is closed. Other attributes are the wrapped stream's."""

    def __init__(self, stream: Any, request: ModelRequest, hide_usage: bool) -> None:
        self._stream = stream
        self._request = request
        self._hide_usage = hide_usage
        self._usage: TokenCounts | None = None
        self._id: str | None = None
        self._model: str | None = None
        self._finish: list[str] = []
        self._chars = 0

    def __getattr__(self, name: str) -> Any:
        # LiteLLM's Router reads the stream's own attributes (``_hidden_params``
        # included); a half-built wrapper must not recurse looking for _stream.
        stream = self.__dict__.get("_stream")
        if stream is None:
            raise AttributeError(name)
        return getattr(stream, name)

    def _observe(self, chunk: Any) -> bool:
        """Note what ``chunk`` says; whether the caller should see it."""
        if self._id is None:
            self._id = _field(chunk, "id")
            self._model = _field(chunk, "model")
        choices = _field(chunk, "choices") or ()
        for choice in choices:
            reason = _field(choice, "finish_reason")
            if reason:
                self._finish.append(str(reason))
            self._chars += _output_chars(_field(choice, "delta"))
        usage = _usage(_field(chunk, "usage"))
        if usage is None:
            return True
        self._usage = usage
        return not (self._hide_usage and not choices)

    def _result(self) -> dict[str, Any]:
        return {
            "usage": self._usage,
            "response_id": self._id,
            "response_model": self._model,
            "finish_reasons": self._finish,
            "output_chars": self._chars,
        }

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                chunk = next(self._stream)
            except StopIteration:
                self._request.finish(**self._result())
                raise
            except BaseException as error:
                self._request.finish(**self._result(), error=error)
                raise
            if self._observe(chunk):
                return chunk

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                chunk = await self._stream.__anext__()
            except StopAsyncIteration:
                await self._request.afinish(**self._result())
                raise
            except BaseException as error:
                self._request.finish(**self._result(), error=error)
                raise
            if self._observe(chunk):
                return chunk

    def close(self) -> None:
        """Stop reading: what was seen is recorded (estimated without usage)."""
        close = getattr(self._stream, "close", None)
        if callable(close):
            close()
        self._request.finish(**self._result())

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if callable(close):
            await close()
        await self._request.afinish(**self._result())
