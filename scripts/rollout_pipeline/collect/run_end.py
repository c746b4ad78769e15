"""The end of a run: the output written when it succeeded, the stats file, the summary lines and the exit code."""

from __future__ import annotations

import time
from typing import TextIO

import orjson

from rollout_pipeline.collect.executor import Outcome
from rollout_pipeline.collect.progress import ProgressStore
from rollout_pipeline.collect.protocols.agent import MASKED
from rollout_pipeline.collect.run_sink import RunSink, unscored
from rollout_pipeline.collect.run_stats import RunStats, peak_rss_mb
from rollout_pipeline.collect.settings import CollectSettings
from rollout_pipeline.coverage import coverage, scored_line
from rollout_pipeline.jsonl import side_path, write_json


def print_reward(settings: CollectSettings, mean: float | None, out: TextIO) -> None:
    """The run's mean reward, as JSON on stdout."""
    if unscored(settings):
        return  # no verdict yet: the score stage prints the mean reward
    print(
        orjson.dumps({"reward": round(mean, 6) if isinstance(mean, float) else None}, option=orjson.OPT_INDENT_2)
        .decode()
        .replace("  ", "    "),
        file=out,
    )


def finish(settings: CollectSettings, sink: RunSink, outcome: Outcome, out: TextIO, err: TextIO) -> int:
    """Write the output if the run succeeded (within max_failure_rate), then the stats file; say how it went."""
    s, stats, store = settings, sink.stats, sink.store
    wall = time.perf_counter() - stats.started
    allowed = int(s.max_failure_rate * store.total)
    ok = stats.failures <= allowed and store.settled + stats.failures == store.total
    sink.close_failures(keep=True)
    if ok:
        # The mean (resumed rollouts included) comes from the store's exact running sum: no record is
        # decoded again.
        written = store.write_output()
        reward_mean = store.reward_sum.mean(written) if written and not unscored(s) else None
        if not s.keep_progress:  # dynamic sampling's next round takes the progress over (a raised limit)
            store.discard()
    else:
        written, reward_mean = 0, None
    stats_doc = _stats_doc(s, store, stats, outcome, wall, written)
    if ok:  # what makes the same command, run again, a no-op
        state = s.output_path.stat()
        stats_doc.update(
            run_identity=store.identity,
            reward_mean=reward_mean,
            output={"bytes": state.st_size, "mtime_ns": state.st_mtime_ns},
        )
    write_json(side_path(s.output_path, ".stats.json"), stats_doc)
    print(
        f"{scored_line(stats_doc['coverage'])}: {stats.new_rollouts} new rollouts in {stats.collect_s:.1f} s ({stats.throughput():.1f}/s; "
        f"{wall:.1f} s in all), "
        f"{store.done - stats.new_rollouts} resumed, {len(store.skips)} skipped, {stats.failures} failed, "
        f"{stats.requests} requests, retries {stats.retries or 0}",
        file=err,
    )
    causes = store.skip_causes()
    masked = causes.pop(MASKED, 0)
    if causes:
        print(
            f"note: {sum(causes.values())} rollouts skipped ({', '.join(f'{c} {n}' for c, n in causes.items())}): "
            f"their prompts can never be scored as they are; see {side_path(s.output_path, '.failures.ndjson')}",
            file=err,
        )
    if masked:
        print(
            f"note: {masked} rollouts not scored: masked by NeMo Gym (no valid reward; never in training data); "
            f"see {side_path(s.output_path, '.failures.ndjson')}; --retry-masked sends them again",
            file=err,
        )
    if not ok:
        print(
            f"error: {stats.failures} of {store.total} rollouts failed (max_failure_rate {s.max_failure_rate} "
            f"allows {allowed}); last error: {stats.last_error}; see {side_path(s.output_path, '.failures.ndjson')}. "
            f"The {store.done} finished rollouts are kept; run again to retry only the rest.",
            file=err,
        )
        return 1
    print_reward(s, reward_mean, out)
    return 0


def _stats_doc(
    settings: CollectSettings, store: ProgressStore, st: RunStats, outcome: Outcome, wall: float, written: int
) -> dict:
    endpoints = outcome.endpoints
    return {
        "coverage": coverage(
            store.total,
            store.done,
            {**st.failure_causes, **store.skip_causes()},
            "generated" if unscored(settings) else "scored",
        ),
        "rollouts": written,
        "new_rollouts": st.new_rollouts,
        "resumed_rollouts": store.done - st.new_rollouts,
        "failures": st.failures,
        "failure_causes": st.failure_causes,
        "skipped": len(store.skips),
        "skip_causes": store.skip_causes(),
        "requests": st.requests,
        "retries": st.retries,
        "wall_s": round(wall, 3),
        "collect_s": round(st.collect_s, 3),
        "throughput_rollouts_per_s": round(st.throughput(), 3),
        "latency_s": st.percentiles(),
        "tokens": {"input": st.input_tokens, "output": st.output_tokens},
        "parallel": settings.parallel,
        "processes": outcome.workers,
        **outcome.stats,
        **({"process_rollouts": outcome.delivered} if outcome.delivered else {}),
        # Forked processes share their start-up pages, so the sum overstates the memory actually used.
        "peak_rss_mb": {
            "collector": peak_rss_mb(),
            **(
                {"processes": [st.process_peak_rss_mb.get(i) for i in range(outcome.workers)]}
                if st.process_peak_rss_mb
                else {}
            ),
        },
        # Per endpoint (no URLs: they may carry credentials): requests, failures, overloads (429s and 503s),
        # the adaptive limit's trace, and the time Retry-After paused it.
        "endpoints": list(endpoints.values()),
        "wait_s": {
            "backoff": round(st.backoff_wait_s, 3),
            "retry_after": round(sum(e.get("paused_s", 0) for e in endpoints.values()), 3),
        },
    }
