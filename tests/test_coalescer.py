"""The coalescer against a fake Triton whose calls wait on a gate: joining, bounds, and each request's own outcome."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from client.coalescer import Coalescer
from client.errors import APIError
from client.triton import TritonClient
from contract import EMBEDDING, TOKEN_COUNT


class GatedTriton(TritonClient):
    """Embeds text t as [len(t), 0]; each call waits for `gate` and is recorded.

    A text starting "bad" is refused with INVALID_ARGUMENT naming its row; a text starting "opaque"
    is refused without naming one; `down` makes every call UNAVAILABLE.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.down = False

    async def call(self, name, rows, options, outputs=None, priority=0):
        texts = list(rows["TEXT"])
        self.calls.append((name, texts, dict(options)))
        await self.gate.wait()
        if self.down:
            raise InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE")
        for i, t in enumerate(texts):
            if t.startswith("bad"):
                raise InferenceServerException(
                    f"in ensemble 'm', input[{i}] has 999 tokens; the maximum is 256", "StatusCode.INVALID_ARGUMENT"
                )
            if t.startswith("opaque"):
                raise InferenceServerException("the batch holds something odd", "StatusCode.INVALID_ARGUMENT")
        vectors = np.array([[len(t), 0] for t in texts], dtype=np.float32)
        return {EMBEDDING: vectors, TOKEN_COUNT: np.array([[len(t)] for t in texts], dtype=np.int32)}


async def embed(coalescer: Coalescer, ensemble: str, texts: list[str], max_batch: int, options=None, **kw):
    """`infer` for an embedding lane: (vectors, token counts)."""
    out = await coalescer.infer(ensemble, texts, max_batch, (EMBEDDING, TOKEN_COUNT), options, **kw)
    return out[EMBEDDING], out[TOKEN_COUNT].reshape(-1)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run(test):
    return asyncio.run(test())


async def held(coalescer: Coalescer, triton: GatedTriton, max_batch: int = 8, **kw) -> asyncio.Task:
    """Close the gate and start one call ("first") that holds the lane's slot until the gate opens."""
    triton.gate.clear()
    blocker = asyncio.create_task(embed(coalescer, "m", ["first"], max_batch, **kw))
    await settle()
    return blocker


def test_a_lone_request_goes_out_at_once_alone() -> None:
    async def test():
        triton = GatedTriton()
        triton.gate.clear()
        job = asyncio.create_task(embed(Coalescer(triton, 1), "m", ["abc"], 8))
        await settle()
        assert [texts for _, texts, _ in triton.calls] == [["abc"]]  # sent before any other arrives
        triton.gate.set()
        vectors, counts = await job
        assert vectors.tolist() == [[3, 0]] and counts.tolist() == [3]

    run(test)


def test_requests_arriving_while_the_calls_are_out_join_the_next_call() -> None:
    async def test():
        triton = GatedTriton()
        coalescer = Coalescer(triton, 2)
        triton.gate.clear()
        first = [asyncio.create_task(embed(coalescer, "m", ["x" * n], 8)) for n in (1, 2)]
        await settle()
        later = [asyncio.create_task(embed(coalescer, "m", ["y" * n, "z"], 8)) for n in range(3, 8)]
        await settle()
        assert [len(texts) for _, texts, _ in triton.calls] == [1, 1]  # two calls out, the rest waits
        triton.gate.set()
        results = await asyncio.gather(*first, *later)
        # 10 rows wait; the first freed call takes whole requests up to the max batch of 8, the next the rest.
        assert [len(texts) for _, texts, _ in triton.calls] == [1, 1, 8, 2]
        for n, (vectors, counts) in zip(range(3, 8), results[2:], strict=True):
            assert vectors[:, 0].tolist() == [n, 1] and counts.tolist() == [n, 1]  # each gets its own rows
        assert not coalescer.queues  # an idle lane is dropped

    run(test)


def test_a_request_over_the_max_batch_goes_in_chunks_in_order() -> None:
    async def test():
        triton = GatedTriton()
        texts = ["a" * n for n in range(1, 8)]
        vectors, counts = await embed(Coalescer(triton, 2), "m", texts, 3)
        assert [len(t) for _, t, _ in triton.calls] == [3, 3, 1]
        assert vectors[:, 0].tolist() == list(range(1, 8)) and counts.sum() == sum(range(1, 8))

    run(test)


def test_only_requests_with_the_same_model_and_options_share_a_call() -> None:
    async def test():
        triton = GatedTriton()
        coalescer = Coalescer(triton, 1)
        blocker = await held(coalescer, triton)
        jobs = [
            asyncio.create_task(embed(coalescer, "m", ["q1"], 8, {"INPUT_TYPE": "query"})),
            asyncio.create_task(embed(coalescer, "m", ["d1"], 8)),
            asyncio.create_task(embed(coalescer, "m", ["q2"], 8, {"INPUT_TYPE": "query"})),
            asyncio.create_task(embed(coalescer, "other", ["o1"], 8)),
            asyncio.create_task(embed(coalescer, "m", ["d2"], 8)),
        ]
        await settle()
        triton.gate.set()
        await asyncio.gather(blocker, *jobs)
        calls = sorted((name, texts, sorted(options.items())) for name, texts, options in triton.calls)
        # Queries have their own lane: q1 went at once, q2 waited for it rather than join d1 and d2.
        assert calls == [
            ("m", ["d1", "d2"], []),
            ("m", ["first"], []),
            ("m", ["q1"], [("INPUT_TYPE", "query")]),
            ("m", ["q2"], [("INPUT_TYPE", "query")]),
            ("other", ["o1"], []),
        ]

    run(test)


async def joined(coalescer: Coalescer, triton: GatedTriton, requests: list[list[str]], **kw) -> list:
    """Hold one call out, queue `requests` behind it so they join, then release; each outcome or error."""
    blocker = await held(coalescer, triton, 64, **kw)
    jobs = [asyncio.create_task(embed(coalescer, "m", texts, 64, **kw)) for texts in requests]
    await settle()
    triton.gate.set()
    return (await asyncio.gather(blocker, *jobs, return_exceptions=True))[1:]


def test_a_refused_row_fails_only_its_request_in_its_own_positions() -> None:
    async def test():
        triton = GatedTriton()
        outcomes = await joined(Coalescer(triton, 1), triton, [["ok", "fine"], ["also", "bad one", "x"], ["last"]])
        first, refused, last = outcomes
        assert first[0][:, 0].tolist() == [2, 4] and last[0][:, 0].tolist() == [4]
        assert isinstance(refused, APIError) and refused.status == 400
        assert refused.message == "input[1] has 999 tokens; the maximum is 256"  # its own index, not the call's 3
        joined_call, resent = triton.calls[1:]
        assert joined_call[1] == ["ok", "fine", "also", "bad one", "x", "last"]
        assert resent[1] == ["ok", "fine", "last"]  # the others again, without the refused request

    run(test)


def test_a_refusal_naming_no_row_sends_each_request_again_alone() -> None:
    async def test():
        triton = GatedTriton()
        outcomes = await joined(Coalescer(triton, 1), triton, [["ok"], ["opaque thing"], ["last one"]])
        assert outcomes[0][0][:, 0].tolist() == [2] and outcomes[2][0][:, 0].tolist() == [8]
        assert isinstance(outcomes[1], APIError) and outcomes[1].status == 400
        assert sorted(texts for _, texts, _ in triton.calls[2:]) == [["last one"], ["ok"], ["opaque thing"]]

    run(test)


def test_an_unavailable_server_fails_every_joined_request_with_503() -> None:
    async def test():
        triton = GatedTriton()
        triton.down = True
        outcomes = await joined(Coalescer(triton, 1), triton, [["a"], ["b"]])
        assert all(isinstance(o, APIError) and o.status == 503 for o in outcomes)
        assert len(triton.calls) == 2  # the held call and one joined call, not re-sent one by one

    run(test)


def test_a_cancelled_request_leaves_the_queue_and_the_others_still_join() -> None:
    async def test():
        triton = GatedTriton()
        coalescer = Coalescer(triton, 1)
        blocker = await held(coalescer, triton)
        gone = asyncio.create_task(embed(coalescer, "m", ["gone"], 8))
        kept = asyncio.create_task(embed(coalescer, "m", ["kept"], 8))
        await settle()
        gone.cancel()
        await settle()
        triton.gate.set()
        await blocker
        assert (await kept)[0][:, 0].tolist() == [4]
        assert [texts for _, texts, _ in triton.calls] == [["first"], ["kept"]]
        with pytest.raises(asyncio.CancelledError):
            await gone

    run(test)


def test_a_failed_chunk_withdraws_the_rest_of_its_request() -> None:
    async def test():
        triton = GatedTriton()
        coalescer = Coalescer(triton, 1)
        with pytest.raises(APIError, match=r"input\[0\] has 999 tokens"):
            await embed(coalescer, "m", ["bad", "c"], 1)  # two chunks of one row; the bound holds the second
        await settle()
        assert [texts for _, texts, _ in triton.calls] == [["bad"]]  # the second chunk never went
        assert not coalescer.queues

    run(test)


def test_a_request_of_half_a_max_batch_or_more_goes_at_once_outside_the_bound() -> None:
    async def test():
        triton = GatedTriton()
        coalescer = Coalescer(triton, 1)
        small = await held(coalescer, triton)
        large = asyncio.create_task(embed(coalescer, "m", ["l"] * 4, 8))
        waits = asyncio.create_task(embed(coalescer, "m", ["w"] * 3, 8))
        await settle()
        assert [len(texts) for _, texts, _ in triton.calls] == [1, 4]  # 4 of 8 rows: not held back
        triton.gate.set()
        await asyncio.gather(small, large, waits)
        assert [len(texts) for _, texts, _ in triton.calls] == [1, 4, 3]

    run(test)


def test_without_joining_every_request_is_its_own_call_and_keeps_its_outcome() -> None:
    """`coalesce=false`: the same path (chunking, translation, one outcome per request), never joined."""

    async def test():
        triton = GatedTriton()
        coalescer = Coalescer(triton, 1, join=False)
        triton.gate.clear()
        jobs = [asyncio.create_task(embed(coalescer, "m", [t], 8)) for t in ("one", "two", "bad", "four")]
        chunked = asyncio.create_task(embed(coalescer, "m", ["a" * n for n in range(1, 6)], 2))
        await settle()
        triton.gate.set()
        results = await asyncio.gather(*jobs, chunked, return_exceptions=True)
        assert sorted(len(texts) for _, texts, _ in triton.calls) == [1, 1, 1, 1, 1, 2, 2]  # nothing joined
        assert [r[0][:, 0].tolist() for i, r in enumerate(results) if i != 2] == [[3], [3], [4], [1, 2, 3, 4, 5]]
        assert isinstance(results[2], APIError) and results[2].status == 400 and "input[0]" in results[2].message
        assert not coalescer.queues  # no lane is kept

    run(test)
