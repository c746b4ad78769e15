"""The work a fetcher does: one request's WorkItem, the stream of those still to make, and the source its slots take them from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from rollout_pipeline.collect.events import Sink
from rollout_pipeline.collect.run_input import iter_raw_rows, parse_row
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.rows import Prompt, prompt_id


@dataclass(eq=False)
class Pending:
    """How many of one prompt's requests are still to finish: the endpoint pool forgets the prompt after the
    last. Shared by the work items of that prompt."""

    requests: int


@dataclass(frozen=True, eq=False)
class WorkItem:
    """One request's worth of rollouts of one prompt: the row as read, its input messages and prompt id."""

    task_index: int
    rollout_indexes: list[int]
    prompt: Prompt
    prompt_id: str
    pending: Pending


class WorkSource(Protocol):
    """Where a Fetcher's slots take their requests, one at a time, and where each one's events go."""

    async def get(self) -> WorkItem | None:
        """The next request to make; None when there is no more work."""
        ...

    def sink_for(self, item: WorkItem) -> Sink | None:
        """Where this request's rollouts, failures and notes go; None for the fetcher's own sink."""
        ...

    def done(self, item: WorkItem) -> None:
        """This request is over (finished, failed or cancelled): every event of it has gone to its sink."""
        ...

    def close(self) -> None:
        """The fetcher takes no more work."""
        ...


class Stream:
    """A WorkSource over one stream of work items (next() never waits, so the slots can share it); every request's
    events go to the fetcher's own sink."""

    def __init__(self, items: Iterator[WorkItem]) -> None:
        self.items = items

    async def get(self) -> WorkItem | None:
        return next(self.items, None)

    def sink_for(self, item: WorkItem) -> Sink | None:
        return None

    def done(self, item: WorkItem) -> None:
        pass

    def close(self) -> None:
        self.items.close()  # type: ignore[attr-defined]


def work_items(
    settings: CollectSettings, is_done: Callable[[int, int], bool], claim: Callable[[], range] | None = None
) -> Iterator[WorkItem]:
    """The requests still to make, in input order, rows read as a stream.

    `claim`, when given, hands out this process's next range of task indexes (other processes take the
    ranges in between); it is called only when the current range is used up, so work is shared as it is
    needed rather than split up front."""
    by_n = settings.agent.repeat_mode == "n"
    owned = range(0)
    rows = settings.limit if settings.scanned_rows is None else settings.scanned_rows  # rows appended later wait
    for task_index, lineno, raw in iter_raw_rows(settings.input_path, rows):
        if claim is not None:
            while task_index >= owned.stop:
                owned = claim()
            if task_index < owned.start:
                continue
        pending = [r for r in range(settings.num_repeats) if not is_done(task_index, r)]
        if not pending:
            continue
        prompt = parse_row(raw, settings.input_path, lineno)
        identifier = prompt_id(prompt)
        requests = Pending(len(pending) if not by_n else 1)
        if by_n:
            yield WorkItem(task_index, pending, prompt, identifier, requests)
        else:
            for rollout_index in pending:
                yield WorkItem(task_index, [rollout_index], prompt, identifier, requests)
