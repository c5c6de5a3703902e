"""Joins concurrent requests for one model and the same options into one Triton call.

Without it every HTTP request is its own gRPC call, its own ensemble run and its own
preprocessor call, and Triton's dynamic batcher joins requests only at the encoder. Here, as in
TEI's router, requests are batched in front of the model instead:

- Rows queue per *lane*: the model's ensemble, the input tensor, the per-request options
  (TRUNCATE, INPUT_TYPE, INSTRUCTION, which are one value for a whole call), the names of
  the per-row columns, the outputs asked for and the Triton priority level. Only rows of one lane
  can share a call, and each lane has its own bound: a higher priority never waits behind a lower.
- While the lane has fewer than `calls_in_flight` calls out, what is queued goes out at once:
  a lone request never waits. Rows that arrive while the bound is reached join the next call,
  up to the model's max batch; a request is never split across calls beyond that batch.
- A request of half a max batch or more goes out at once as its own call(s), outside the
  bound: joining it would save little, and holding it back would hide its rows from Triton's
  own batcher, which regroups the rows of all pending calls by length (measured: 32 texts per
  request at concurrency 16 ran at 0.73× in-process ORT when held to 2 calls, 0.96× without).
- Each request keeps its own outcome. A Triton INVALID_ARGUMENT that names a row (`input[i]`)
  fails only the request that owns the row, with the message in its own positions, and the
  others are sent again without it. Any other refusal of a joined call sends each request again
  on its own, so no request fails for another's input; an unavailable server fails them all.

It is the adapter's one path for inference calls, whatever the task: a call's outputs come back by name
(`client/triton.py`), and each piece gets its rows of every output. With `coalesce=false`
(`join=False`) nothing is joined, and each request's pieces go out at once, chunked, translated and
settled the same way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tritonclient.utils import InferenceServerException

from client.triton import Outputs, TritonClient, join_rows, refused_row, translate
from contract import TEXT

# ensemble, tensor, options, columns, outputs, priority level
Lane = tuple[str, str, tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...], int]


@dataclass(eq=False)
class Piece:
    """Up to one max batch of one request's rows, and the future its rows of each output go to."""

    rows: dict[str, list]
    positions: list[int]  # the request's item indices of these rows, for error messages
    future: asyncio.Future
    param: str = "input"  # how error messages name the request's items: `input[3]`, `documents[3]`
    request: list[Piece] = field(default_factory=list, repr=False)  # all pieces of its request, itself included

    @property
    def size(self) -> int:
        return len(self.positions)


@dataclass
class Queue:
    """One lane's waiting pieces and calls in flight."""

    max_batch: int
    waiting: deque[Piece] = field(default_factory=deque)
    in_flight: int = 0


class Coalescer:
    """`infer()`: TritonClient's call for a request's rows, chunked, with concurrent calls of one lane
    joined (see the module docstring)."""

    def __init__(
        self,
        triton: TritonClient,
        calls_in_flight: int,
        on_call: Callable[[str, int], None] | None = None,
        join: bool = True,
    ) -> None:
        self.triton = triton
        self.calls_in_flight = calls_in_flight
        self.join = join  # False: every piece is its own call, sent at once (`coalesce=false`)
        self.on_call = on_call  # (ensemble, rows) of every Triton call, for the metrics
        self.queues: dict[Lane, Queue] = {}
        self.tasks: set[asyncio.Task] = set()

    async def infer(
        self,
        ensemble: str,
        values: list[str] | list[bytes],
        max_batch: int,
        outputs: tuple[str, ...],
        options: dict[str, str] | None = None,
        positions: list[int] | None = None,
        tensor: str = TEXT,
        columns: dict[str, list[str]] | None = None,
        field: str = "input",
        priority: int = 0,
    ) -> Outputs:
        """The `outputs` of `values` by name, each with one row per value in order (the task table's:
        embeddings `[n, dim]` and token counts, a reranker's scores `[n, 1]`…), chunked by `max_batch`.

        `values` feed `tensor` (TEXT strings or IMAGE bytes); `columns` feed other inputs row by row
        (the text fused with each image item); `options` fills the ensemble's optional per-request
        inputs (TRUNCATE, INPUT_TYPE, INSTRUCTION); `positions` are the request's item indices of
        `values`, which error messages name as `field[i]`.
        """
        options, columns = options or {}, columns or {}
        positions = positions if positions is not None else list(range(len(values)))
        lane: Lane = (ensemble, tensor, tuple(sorted(options.items())), tuple(sorted(columns)), outputs, priority)
        loop = asyncio.get_running_loop()
        pieces = [
            Piece(
                {tensor: values[a : a + max_batch], **{k: v[a : a + max_batch] for k, v in columns.items()}},
                positions[a : a + max_batch],
                loop.create_future(),
                field,
            )
            for a in range(0, len(values), max_batch)
        ]
        for p in pieces:
            p.request = pieces
        if not self.join:
            return await self._apart(lane, pieces)
        queue = self.queues.setdefault(lane, Queue(max_batch))
        large = max(max_batch // 2, 2)
        room = not queue.waiting and queue.in_flight < self.calls_in_flight
        if len(pieces) == 1 and (pieces[0].size >= large or room):
            return await self._alone(lane, queue, pieces[0], counted=pieces[0].size < large)
        for p in pieces:
            if p.size >= large:
                self._spawn(self._settle(lane, [p]))  # large: its own call now, outside the bound
            else:
                queue.waiting.append(p)
        self._dispatch(lane, queue)
        return await self._outcome(pieces)

    async def _apart(self, lane: Lane, pieces: list[Piece]) -> Outputs:
        """Without joining: each piece its own call, all at once."""
        if len(pieces) == 1:
            await self._settle(lane, pieces)
            return pieces[0].future.result()
        for p in pieces:
            self._spawn(self._settle(lane, [p]))
        return await self._outcome(pieces)

    async def _outcome(self, pieces: list[Piece]) -> Outputs:
        """The request's rows of each output in order, or its first failure."""
        try:
            parts = await asyncio.gather(*(p.future for p in pieces))
        finally:
            for p in pieces:  # a failed or cancelled request withdraws its pieces still waiting
                if not p.future.done():
                    p.future.cancel()
                elif not p.future.cancelled():
                    p.future.exception()  # retrieved: the first failure was raised; no warning for the rest
        return join_rows(parts)

    async def _alone(self, lane: Lane, queue: Queue, piece: Piece, counted: bool) -> Outputs:
        """A request that goes out at once by itself, called from its own task: no task or future hop
        (measured: they added 0.5 ms to a lone query's p50). Others arriving meanwhile still wait for
        this call when it is `counted` against the lane's bound."""
        if counted:
            queue.in_flight += 1
        try:
            await self._settle(lane, [piece])
        finally:
            if counted:
                queue.in_flight -= 1
            self._dispatch(lane, queue)
        return piece.future.result()

    def _dispatch(self, lane: Lane, queue: Queue) -> None:
        """Send what waits, as joined calls of up to max batch rows, while the lane has calls to spare."""
        while queue.in_flight < self.calls_in_flight:
            batch: list[Piece] = []
            rows = 0
            while queue.waiting and (not batch or rows + queue.waiting[0].size <= queue.max_batch):
                piece = queue.waiting.popleft()
                if not piece.future.done():  # cancelled while it waited
                    batch.append(piece)
                    rows += piece.size
            if not batch:
                break
            queue.in_flight += 1
            self._spawn(self._send(lane, queue, batch))
        if not queue.in_flight and not queue.waiting:
            self.queues.pop(lane, None)  # lanes keyed by user text (INSTRUCTION) must not pile up

    def _spawn(self, call) -> None:
        task = asyncio.create_task(call)
        self.tasks.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self.tasks.discard)

    async def _send(self, lane: Lane, queue: Queue, batch: list[Piece]) -> None:
        try:
            await self._settle(lane, batch)
        finally:
            queue.in_flight -= 1
            self._dispatch(lane, queue)

    async def _settle(self, lane: Lane, batch: list[Piece]) -> None:
        """One call for `batch`; whatever Triton answers, each piece gets its own outcome."""
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return
        ensemble, _, options, _, outputs, priority = lane
        rows = {name: [v for p in batch for v in p.rows[name]] for name in batch[0].rows}
        if self.on_call is not None:
            self.on_call(ensemble, sum(p.size for p in batch))
        try:
            result = await self.triton.call(ensemble, rows, dict(options), outputs, priority)
        except InferenceServerException as exc:
            await self._refused(lane, batch, exc)
            return
        except Exception as exc:  # noqa: BLE001 -- not Triton's answer: every piece fails with it
            for p in batch:
                _settle_future(p, exception=exc)
            return
        start = 0
        for p in batch:
            _settle_future(p, result={name: rows[start : start + p.size] for name, rows in result.items()})
            start += p.size

    async def _refused(self, lane: Lane, batch: list[Piece], exc: InferenceServerException) -> None:
        whole = translate(exc)
        if len(batch) == 1 or whole.status == 503:  # one owner, or the server's state rather than an input
            for p in batch:
                _settle_future(p, exception=translate(exc, p.positions, p.param))
            return
        row = refused_row(exc)
        owner = _owner(batch, row) if row is not None else None
        if owner is not None:
            _settle_future(owner, exception=translate(exc, [i for p in batch for i in p.positions], owner.param))
            await self._settle(lane, [p for p in batch if p is not owner])
            return
        await asyncio.gather(*(self._settle(lane, [p]) for p in batch))


def _owner(batch: list[Piece], row: int) -> Piece | None:
    """The piece holding row `row` of the joined call."""
    start = 0
    for p in batch:
        if start <= row < start + p.size:
            return p
        start += p.size
    return None


def _settle_future(piece: Piece, *, result=None, exception: BaseException | None = None) -> None:
    if piece.future.done():  # its request was cancelled meanwhile
        return
    if exception is None:
        piece.future.set_result(result)
        return
    piece.future.set_exception(exception)
    for other in piece.request:  # the request has failed: its pieces still waiting are not sent
        if not other.future.done():
            other.future.cancel()
