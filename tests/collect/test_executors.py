"""The executors' shared parts, without the processes or the cluster around them: the one event codec that carries a
fetcher's events back to this process, and a Ray worker's work source, which returns each chunk's own events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollout_pipeline.collect.events import EventReader, EventWriter, RolloutFailure
from rollout_pipeline.collect.ray_worker import RolloutWorker, WorkerSecrets
from rollout_pipeline.collect.run_stats import RunStats
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.collect.work import work_items
from rollout_pipeline.errors import UserError
from rollout_pipeline.reference.embedded import EmbeddedServer, start_embedded_server
from support import make_prompts, objective_run_settings


class RecordingSink:
    """A sink that keeps every call it gets, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def rollout(self, task_index, rollout_index, line, reward, input_tokens, output_tokens) -> None:
        self.calls.append(("rollout", task_index, rollout_index, bytes(line), reward, input_tokens, output_tokens))

    def failure(self, failure: RolloutFailure) -> None:
        self.calls.append(("failure", failure))

    def note(self, message: str) -> None:
        self.calls.append(("note", message))

    def retry(self, cause: str, retry_after: float | None) -> None:
        self.calls.append(("retry", cause, retry_after))

    def fatal(self, error: UserError) -> None:
        self.calls.append(("fatal", str(error)))


def test_the_event_codec_hands_the_sink_here_what_the_fetcher_elsewhere_reported_and_a_repeated_note_once():
    here = RecordingSink()
    endpoints: dict = {}
    stats = RunStats()
    reader = EventReader(here, stats, endpoints, workers=2, worker_name="collector process")
    stopped = []
    elsewhere = [
        EventWriter(lambda kind, payload, worker=worker: reader.take(worker, kind, payload)) for worker in (0, 1)
    ]
    elsewhere[1].on_fatal = lambda: stopped.append(True)
    failure = RolloutFailure(3, 1, "p-3", "timeout", "no reply", False, {"error": "x"}, None, {"output": []})

    elsewhere[0].rollout(3, 0, b'{"reward": 1.0}\n', 1.0, 12, 34)
    elsewhere[0].failure(failure)
    elsewhere[0].retry("http_503", 2.5)
    elsewhere[0].note("the server ignores n")
    elsewhere[1].note("the server ignores n")
    elsewhere[1].fatal(UserError("prompts.jsonl changed under the run"))
    worker_stats = RunStats()
    worker_stats.requests, worker_stats.backoff_wait_s = 5, 0.25
    worker_stats.latencies.append(0.1)
    elsewhere[1].summary(worker_stats, {"http://a": {"requests": 5, "failures": 1}})

    assert here.calls == [
        ("rollout", 3, 0, b'{"reward": 1.0}\n', 1.0, 12, 34),
        ("failure", failure),
        ("retry", "http_503", 2.5),
        ("note", "the server ignores n"),
        ("fatal", "prompts.jsonl changed under the run"),
    ]
    assert stopped == [True]
    assert reader.delivered == [1, 0]
    assert (stats.requests, stats.backoff_wait_s, len(stats.latencies)) == (5, 0.25, 1)
    assert endpoints == {"http://a": {"requests": 5, "failures": 1}}
    assert 1 in stats.process_peak_rss_mb
    with pytest.raises(ValueError, match="collector process 1 sent an unknown frame kind b'Q'"):
        reader.take(1, b"Q", b"")


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedServer]:
    with start_embedded_server() as started:
        yield started


def _settings(tmp_path: Path, url: str) -> CollectSettings:
    make_prompts(tmp_path / "prompts.jsonl", 12)
    return objective_run_settings(
        {
            "agents": {"math_agent": {"url": url, "verifier": "math"}},
            "objectives": {
                "sft": {"agent_name": "math_agent", "prompts": str(tmp_path / "prompts.jsonl"), "num_repeats": 2}
            },
        },
        tmp_path / "out.jsonl",
    )


def test_a_ray_worker_returns_each_chunk_its_own_rollouts_while_two_chunks_share_its_slots(tmp_path, server):
    """The worker's fetcher takes requests from a queue of chunks (its WorkSource); a request's events go to its own
    chunk's answer, so a chunk the driver never hears back from holds no rollout that was counted."""
    settings = _settings(tmp_path, server.url)
    items = list(work_items(settings, lambda task_index, rollout_index: False))
    chunks = [items[: len(items) // 2], items[len(items) // 2 :]]

    async def collect_both() -> tuple[list, list]:
        worker = RolloutWorker(settings, 4, WorkerSecrets([server.url], settings.agent, {}))
        answers = await asyncio.gather(*(worker.collect(chunk) for chunk in chunks))
        return answers, await worker.finish()

    answers, summary = asyncio.run(collect_both())

    stats, endpoints = RunStats(), {}
    for chunk, events in zip(chunks, answers):
        here = RecordingSink()
        reader = EventReader(here, stats, endpoints, workers=1, worker_name="Ray worker")
        for kind, payload in events:
            reader.take(0, kind, payload)
        delivered = {(call[1], call[2]) for call in here.calls if call[0] == "rollout"}
        assert delivered == {(item.task_index, item.rollout_indexes[0]) for item in chunk}
        assert [call for call in here.calls if call[0] != "rollout"] == []
    for kind, payload in summary:
        reader.take(0, kind, payload)
    assert stats.requests == len(items) == 24
    assert [endpoint["requests"] for endpoint in endpoints.values()] == [24]
