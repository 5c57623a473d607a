"""What every generation keeps, whatever its surface: this server's limits (``n``, stop
strings) and its sampling parameters once the prompt's length is known."""

from __future__ import annotations

from chat.command import Sampling
from chat.config import ChatSettings
from core.errors import ContextLengthError, InvalidRequestError
from engines.generation import SamplingParams

__all__ = ["check_limits", "sampling_params"]


def check_limits(n: int, stop: tuple[str, ...], s: ChatSettings) -> None:
    """The settings-bound limits every chat or completion request keeps, remote or not."""
    if n > s.max_n:
        raise InvalidRequestError(f"'n' must be between 1 and {s.max_n}", param="n")
    if len(stop) > s.max_stop_sequences or any(not x for x in stop):
        raise InvalidRequestError(
            f"'stop' takes up to {s.max_stop_sequences} non-empty strings", param="stop"
        )


def sampling_params(
    asked: Sampling,
    s: ChatSettings,
    *,
    max_tokens: int | None,
    extra_stop: tuple[str, ...],
    prompt_len: int,
    context_length: int,
    param: str,
) -> SamplingParams:
    """Sampling parameters once the prompt's length is known (ranges were checked by the
    wire type; the room left in the context caps ``max_tokens``)."""
    if prompt_len > context_length:
        raise ContextLengthError(
            f"the prompt has {prompt_len} tokens; this model's context limit is {context_length}",
            param=param,
        )
    room = context_length - prompt_len
    limit = min(max_tokens or s.default_max_tokens, s.max_tokens_limit, max(room, 1))
    return SamplingParams(
        max_tokens=limit,
        temperature=s.default_temperature if asked.temperature is None else asked.temperature,
        top_p=s.default_top_p if asked.top_p is None else asked.top_p,
        top_k=asked.top_k or 0,
        presence_penalty=asked.presence_penalty or 0.0,
        frequency_penalty=asked.frequency_penalty or 0.0,
        penalty_decay=s.penalty_decay,
        stop=tuple(dict.fromkeys([*asked.stop, *extra_stop])),
        seed=asked.seed,
        logprobs=asked.logprobs,
        top_logprobs=asked.top_logprobs,
    )
