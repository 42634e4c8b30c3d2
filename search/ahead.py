"""Model calls requested ahead of JOSH's step barrier.

A leaf that has ended its agent turn waits until every sibling has ended theirs: the collapse needs all of
this step's calls, and the next step's node ids (hence seeds) depend on how many branches live on. While it
waits, `search.josh.Rollout` asks for the first model call of that leaf's children of the next step as they
will be when nothing of this step ends or is rewarded: the same history, the user's reply (a rule user is a
pure function of the conversation) and the seeds those children will get. That call then rides in the batch
of the rollout's next call (a sibling's, after its tool results) instead of a later, emptier one. A row's
answer depends only on its (prompt, seed, params), so an answer taken from here is the one the backend would
have given when asked later; a guess that does not come true (a branch was rewarded or ended) is cancelled, and what it computed
before that is the price. Only for backends that batch (`batched = True`: transformers, vLLM, an
OpenAI-compatible server) and a user that answers at once (the rule user; an LLM user is never guessed).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import astuple, dataclass

from search.backends.base import Backend, Completion, Request


def request_key(request: Request) -> str:
    """What a backend's answer depends on (tools are one fixed set per rollout's protocol)."""
    return json.dumps([request.messages, request.tools is not None, astuple(request.params)], sort_keys=True,
                      default=str)


class AheadBackend:
    """A backend for one rollout: `complete` takes the answer requested ahead for the same request, if any.

    A guess waits here until this rollout's next model call, then goes to the backend with it: it joins the
    batch that call joins and never starts a batch of its own (a batch of guesses alone would split the
    siblings' calls, which are still to come, into another)."""

    def __init__(self, backend: Backend):
        self.backend, self.name = backend, backend.name
        self._ahead: dict[str, _Guess] = {}
        self.requested = 0  # calls requested ahead
        self.used = 0  # of those, answers a real turn took
        self.dropped: list[Request] = []  # and those no turn took (benchmarks count the rows they cost)

    def request(self, request: Request, step: int) -> None:
        """Keep `request`, which the turns of `step` are expected to make, for the next call to the backend."""
        key = request_key(request)
        if key not in self._ahead:
            self._ahead[key] = _Guess(step, request)
            self.requested += 1

    async def complete(self, request: Request) -> Completion:
        for guess in self._ahead.values():  # the waiting guesses go with this call
            if guess.answer is None:
                guess.answer = asyncio.ensure_future(self.backend.complete(guess.request))
        guess = self._ahead.pop(request_key(request), None) if self._ahead else None
        if guess is None:
            return await self.backend.complete(request)
        self.used += 1
        return await guess.answer

    async def aclose(self) -> None:
        self.drop()  # the wrapped backend is the caller's to close

    def drop(self, keep_sent_for: int | None = None) -> None:
        """Forget the guesses no turn took, except those already sent with a call for step `keep_sent_for`
        (a guess not sent during its siblings' turns would only join the next step's first batch anyway)."""
        for key, guess in list(self._ahead.items()):
            if guess.answer is None or guess.step != keep_sent_for:
                del self._ahead[key]
                self.dropped.append(guess.request)
                if guess.answer is None:
                    continue
                if not guess.answer.done():
                    guess.answer.cancel()  # the batcher skips it unless a running batch already holds it
                elif not guess.answer.cancelled():
                    guess.answer.exception()  # retrieved: a failed guess is nobody's error


@dataclass
class _Guess:
    step: int
    request: Request
    answer: asyncio.Future[Completion] | None = None  # None until it goes to the backend
