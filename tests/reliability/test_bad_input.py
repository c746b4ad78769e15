"""Bad input: every case is one clear line (file, line or key, what is wrong, the fix), no traceback, and the
output -- and everything else in the directory -- stays untouched. Nothing is sent to a server either: the
agent in these params points at a closed port, so a case that got as far as sending would fail differently.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reliability_support import fast_agent, one_line_error, result_of, run_collect, run_concurrently
from support import PY, SCRIPTS, agent, free_port, read_jsonl, write_params

PREVIOUS = b"previous output\n"
GOOD_ROW = {
    "responses_create_params": {"input": "What is 2 + 2? Give the final answer in \\boxed{}."},
    "expected_answer": "4",
    "task_id": "t",
}


@dataclass
class Case:
    """setup(d) writes the case's files into d and returns (argv after the script, the expected fragments)."""

    setup: Callable[[Path], tuple[list[str], list[str]]]
    prog: str = "collect.py"


def _prompts(d: Path, *lines: str | bytes, name: str = "prompts.jsonl") -> Path:
    """A prompt file: a good row first, then the given lines (so the bad one is on line 2 or later)."""
    path = d / name
    with open(path, "wb") as handle:
        for line in (json.dumps(GOOD_ROW), *lines):
            handle.write(line if isinstance(line, bytes) else line.encode())
            handle.write(b"\n")
    return path


def _seed(inp: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["+agent_name=math_agent", f"+input_jsonl_fpath={inp}", f"+output_jsonl_fpath={out}", *extra]


def _bad_line(line: str | bytes, *expected: str):
    def setup(d: Path):
        inp = _prompts(d, line)
        return _seed(inp, d / "out.jsonl"), [f"{inp}:2: ", *expected]

    return setup


def _bad_arg(arg: str, *expected: str):
    def setup(d: Path):
        return _seed(_prompts(d), d / "out.jsonl", arg), list(expected)

    return setup


def _bad_params(text: str | bytes, *expected: str):
    def setup(d: Path):
        path = d / "bad_params.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return [*_seed(_prompts(d), d / "out.jsonl"), "--params", str(path)], [str(path), *expected]

    return setup


def _bad_agent(*expected: str, **overrides):
    def setup(d: Path):
        params = yaml.safe_load((d / "params.yaml").read_text())
        params["agents"]["math_agent"].update(overrides)
        (d / "params.yaml").write_text(yaml.safe_dump(params))
        return _seed(_prompts(d), d / "out.jsonl"), list(expected)

    return setup


def _empty_file(d: Path):
    (d / "empty.jsonl").write_bytes(b"\n  \n")  # blank lines only: as empty as an empty file
    return _seed(d / "empty.jsonl", d / "out.jsonl"), [f"{d / 'empty.jsonl'}: no prompts in the file"]


def _huge_line(d: Path):
    inp = d / "huge.jsonl"
    with open(inp, "wb") as handle:
        handle.write(json.dumps(GOOD_ROW).encode() + b"\n")
        handle.write(b'{"prompt": "' + b"7" * (65 * 1024 * 1024) + b'"}\n')
    return _seed(inp, d / "out.jsonl"), [f"{inp}:2: the row is ", "over the 8,388,608-byte limit for one prompt"]


def _missing_prompt_file(d: Path):
    return _seed(d / "nope.jsonl", d / "out.jsonl"), [f"{d / 'nope.jsonl'}: input file not found"]


def _prompt_path_is_a_directory(d: Path):
    (d / "adir").mkdir()
    return _seed(d / "adir", d / "out.jsonl"), [f"{d / 'adir'}: is a directory"]


def _output_under_a_regular_file(d: Path):
    (d / "afile").write_text("I am a file\n")
    return _seed(_prompts(d), d / "afile" / "sub" / "out.jsonl"), [
        f"{d / 'afile' / 'sub'}: cannot create the output directory (Not a directory)"
    ]


def _output_is_a_directory(d: Path):
    (d / "outdir").mkdir()
    return _seed(_prompts(d), d / "outdir"), [f"{d / 'outdir'}: is a directory; give the output a file name"]


def _output_is_the_input(d: Path):
    inp = _prompts(d)
    return _seed(inp, inp), [f"{inp}: the output path is the input file"]


def _empty_output_argument(d: Path):
    return _seed(_prompts(d), ""), ["+output_jsonl_fpath= has no value", "path/to/file.jsonl"]


def _missing_params_file(d: Path):
    return [*_seed(_prompts(d), d / "out.jsonl"), "--params", str(d / "nope.yaml")], [
        f"{d / 'nope.yaml'}: file not found"
    ]


def _params_is_a_directory(d: Path):
    (d / "pdir").mkdir()
    return [*_seed(_prompts(d), d / "out.jsonl"), "--params", str(d / "pdir")], [f"{d / 'pdir'}: is a directory"]


def _unknown_objective(d: Path):
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["objectives"] = {"rl": {"agent_name": "math_agent", "prompts": str(_prompts(d))}}
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    return ["--objective", "rlx", "--out", str(d / "out.jsonl")], ["unknown objective 'rlx' (did you mean 'rl'?)"]


def _api_key_not_set(d: Path):
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["agents"]["math_agent"]["api_key_env"] = "ROLLOUT_SURELY_UNSET_KEY"
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    return _seed(_prompts(d), d / "out.jsonl"), [
        "environment variable ROLLOUT_SURELY_UNSET_KEY is not set",
        "export ROLLOUT_SURELY_UNSET_KEY=",
    ]


def _stage(script: str, *extra: str, expected_reward_error: bool = True):
    """A rollout file without rewards (a prompt file, or records missing the field) fed to a stage."""

    def setup(d: Path):
        rollouts = d / "rollouts.jsonl"
        record = {
            "prompt_id": "p0",
            "task_index": 0,
            "rollout_index": 0,
            "output": "4",
            "input": [{"role": "user", "content": "What is 2 + 2?"}],
        }
        rollouts.write_text(json.dumps(record) + "\n")
        if script == "metrics":
            params = yaml.safe_load((d / "params.yaml").read_text())
            params["objectives"] = {"rl": {"agent_name": "math_agent", "prompts": "p.jsonl"}}
            (d / "params.yaml").write_text(yaml.safe_dump(params))
            argv = [
                "--objective",
                "rl",
                "--in",
                str(rollouts),
                "--out",
                str(d / "out.jsonl"),
                "--curve",
                str(d / "curve.json"),
                "--params",
                str(d / "params.yaml"),
            ]
        else:
            argv = ["--in", str(rollouts), "--out", str(d / "out.jsonl"), "--params", str(d / "params.yaml")]
        return [*argv, *extra], [f"{rollouts}:1: record has no 'reward'", "run collect"]

    return setup


def _prompt_file_fed_to_filter(d: Path):
    inp = _prompts(d)
    return ["--in", str(inp), "--out", str(d / "out.jsonl"), "--params", str(d / "params.yaml")], [
        f"{inp}:1: record has no 'prompt_id'"
    ]


def _bad_jq(d: Path):
    rollouts = d / "rollouts.jsonl"
    rollouts.write_text(
        json.dumps(
            {
                "prompt_id": "p",
                "task_index": 0,
                "rollout_index": 0,
                "output": "4",
                "reward": 1.0,
                "input": [{"role": "user", "content": "x"}],
            }
        )
        + "\n"
    )
    return [
        "--in",
        str(rollouts),
        "--out",
        str(d / "out.jsonl"),
        "--params",
        str(d / "params.yaml"),
        "--where",
        ".reward >",
    ], ["--where: invalid jq expression"]


CASES: dict[str, Case] = {
    # the prompt file
    "empty prompt file": Case(_empty_file),
    "non-JSON line": Case(
        _bad_line('{"prompt": "What is 1 + 1?", ', "not valid JSON", "each line must be one JSON object")
    ),
    "JSON array instead of an object": Case(
        _bad_line('["What is 1 + 1?"]', "expected a JSON object", "got a JSON array")
    ),
    "row without input": Case(
        _bad_line(
            '{"expected_answer": "2"}',
            "row has no input",
            "give 'responses_create_params.input', 'prompt' or 'messages'",
        )
    ),
    "row with an empty input": Case(_bad_line('{"prompt": "  ", "expected_answer": "2"}', "input is empty")),
    "message that is not an object": Case(
        _bad_line(
            '{"messages": ["hi"], "expected_answer": "2"}',
            "each input message must be an object with 'role' and 'content'",
        )
    ),
    "responses_create_params not an object": Case(
        _bad_line('{"responses_create_params": 3}', "'responses_create_params' must be an object")
    ),
    "row without expected_answer (math verifier)": Case(
        _bad_line('{"prompt": "What is 1 + 1?"}', "row has no 'expected_answer'", "verifier: math")
    ),
    "expected_answer an empty object": Case(
        _bad_line(
            '{"prompt": "What is 1 + 1?", "expected_answer": {}}',
            "'expected_answer' holds dict {}",
            "give a string or number, or a list of them",
        )
    ),
    "expected_answer an empty list": Case(
        _bad_line('{"prompt": "What is 1 + 1?", "expected_answer": []}', "'expected_answer' is an empty list")
    ),
    "expected_answer a nested list": Case(
        _bad_line('{"prompt": "What is 1 + 1?", "expected_answer": [["2"]]}', "'expected_answer' holds a nested list")
    ),
    "expected_answer empty": Case(
        _bad_line(
            '{"prompt": "What is 1 + 1?", "expected_answer": " "}',
            "'expected_answer' is empty, so every output would score 0",
        )
    ),
    "huge line": Case(_huge_line),
    "invalid UTF-8": Case(
        _bad_line(
            b'{"prompt": "What is 1 + 1? \xff\xfe", "expected_answer": "2"}',
            "invalid UTF-8 at byte",
            "save the file as UTF-8",
        )
    ),
    "UTF-8 byte order mark": Case(_bad_line(b"\xef\xbb\xbf" + json.dumps(GOOD_ROW).encode(), "not valid JSON", "BOM")),
    "missing prompt file": Case(_missing_prompt_file),
    "prompt path is a directory": Case(_prompt_path_is_a_directory),
    # seed-syntax arguments
    "negative num_repeats": Case(_bad_arg("+num_repeats=-1", "+num_repeats: -1 is out of range; it must be >= 1")),
    "num_repeats not an integer": Case(_bad_arg("+num_repeats=four", "+num_repeats: expected an integer, got 'four'")),
    "max_failure_rate over 1": Case(_bad_arg("+max_failure_rate=1.5", "+max_failure_rate: 1.5 is out of range")),
    "temperature out of range": Case(
        _bad_arg(
            "+responses_create_params.temperature=3",
            "+responses_create_params.temperature: 3.0 is out of range; it must be <= 2",
        )
    ),
    "top_p zero": Case(_bad_arg("+responses_create_params.top_p=0", "top_p: 0.0 is out of range; it must be > 0")),
    "unknown argument": Case(_bad_arg("+num_repeat=4", "+num_repeat: unknown key (did you mean 'num_repeats'?)")),
    "argument without a value": Case(_bad_arg("num_repeats", "unrecognized arguments: num_repeats")),
    "unknown agent": Case(
        lambda d: (
            ["+agent_name=math_agnet", f"+input_jsonl_fpath={_prompts(d)}", f"+output_jsonl_fpath={d / 'out.jsonl'}"],
            ["unknown agent_name 'math_agnet' (did you mean 'math_agent'?)"],
        )
    ),
    "empty output argument": Case(_empty_output_argument),
    # params.yaml
    "unknown params key": Case(
        _bad_agent("agents.math_agent.protocl: unknown key (did you mean 'protocol'?)", protocl="chat")
    ),
    "params value of the wrong type": Case(_bad_agent("agents.math_agent.model: expected a string, got 5", model=5)),
    "a fetch key left in an agent": Case(
        _bad_agent(
            "agents.math_agent.max_retries: moved to fetch.max_retries (or fetch.agents.math_agent.max_retries)",
            max_retries=5,
        )
    ),
    "unknown protocol": Case(
        _bad_agent(
            "agents.math_agent.protocol: 'chta' is not one of chat, responses, agent",
            "did you mean 'chat'?",
            protocol="chta",
        )
    ),
    "api key in params instead of its env name": Case(
        _bad_agent("api_key_env: must be the NAME of an environment variable", api_key_env="sk-abc123-not-a-name")
    ),
    "repeat_mode n with the responses protocol": Case(
        _bad_agent("repeat_mode: n needs protocol: chat", repeat_mode="n", protocol="responses")
    ),
    "verifier that cannot be imported": Case(
        _bad_agent("verifier 'no_such_module:score': cannot import", verifier="no_such_module:score")
    ),
    "invalid YAML": Case(_bad_params("agents:\n  math_agent: {protocol: chat\nobjectives: {}\n", "invalid YAML")),
    "params.yaml not UTF-8": Case(_bad_params(b"agents:\n  math_agent: {model: caf\xe9}\n", "not valid UTF-8")),
    "params.yaml is a list": Case(_bad_params("- a\n- b\n", "expected a mapping at the top level")),
    "missing params file": Case(_missing_params_file),
    "params path is a directory": Case(_params_is_a_directory),
    "unknown objective": Case(_unknown_objective),
    "API key env variable not set": Case(_api_key_not_set),
    # the output path
    "output under a regular file (un-creatable)": Case(_output_under_a_regular_file),
    "output path is a directory": Case(_output_is_a_directory),
    "output path is the input file": Case(_output_is_the_input),
    # the stages, fed a rollout file without rewards
    "filter: rollouts without rewards": Case(_stage("filter"), prog="filter"),
    "pair: rollouts without rewards": Case(_stage("pair"), prog="pair"),
    "metrics: rollouts without rewards": Case(_stage("metrics"), prog="metrics"),
    "filter: a prompt file instead of rollouts": Case(_prompt_file_fed_to_filter, prog="filter"),
    "filter: invalid jq in --where": Case(_bad_jq, prog="filter"),
}

SCRIPT = {"collect.py": "collect.py", "filter": "filter.py", "pair": "pair.py", "metrics": "metrics.py"}


@dataclass
class Outcome:
    result: subprocess.CompletedProcess
    expected: list[str]
    before: dict[str, bytes]
    after: dict[str, bytes]


def _snapshot(d: Path) -> dict[str, bytes]:
    """Every file under d with its bytes (huge inputs by size only)."""
    files = {}
    for path in sorted(d.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(d))] = (
                path.read_bytes() if path.stat().st_size < 1 << 20 else str(path.stat().st_size).encode()
            )
    return files


def _job(d: Path, case: Case):
    def job() -> Outcome:
        # The agent points at a closed port: any case that got as far as sending a request would fail differently.
        write_params(d, {"math_agent": agent(f"http://127.0.0.1:{free_port()}", max_retries=0, timeout_s=2)})
        (d / "out.jsonl").write_bytes(PREVIOUS)
        argv, expected = case.setup(d)
        before = _snapshot(d)
        command = [PY, str(SCRIPTS / SCRIPT[case.prog]), *argv]
        if case.prog == "collect.py":
            command += ["--no-progress"] + ([] if "--params" in argv else ["--params", str(d / "params.yaml")])
        env = {k: v for k, v in os.environ.items() if k != "ROLLOUT_SURELY_UNSET_KEY"}
        result = subprocess.run(command, cwd=d, capture_output=True, text=True, timeout=60, env=env)
        return Outcome(result, expected, before, _snapshot(d))

    return job


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    jobs = {name: _job(tmp_path_factory.mktemp("bad"), case) for name, case in CASES.items()}
    return run_concurrently(jobs, workers=4)


def test_the_catalog_has_at_least_15_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_line_and_touches_nothing(outcomes, name):
    outcome = result_of(outcomes, name)
    line = one_line_error(outcome.result, CASES[name].prog)
    assert outcome.result.returncode == 2, outcome.result.stderr
    for fragment in outcome.expected:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert outcome.after == outcome.before, "the output and every other file stay untouched; nothing is created"
    assert outcome.before["out.jsonl"] == PREVIOUS


# -- the output directory: created when missing (documented), a clear error when it cannot be written -------
def test_a_missing_output_directory_is_created_as_the_seed_documents_expect(tmp_path, prompts, upstream):
    """The seed's RL loop writes +output_jsonl_fpath=outputs/rl_iter_001.jsonl without creating outputs/ first."""
    result = run_collect(tmp_path, prompts, Path("outputs/rl_iter_001.jsonl"), fast_agent(upstream.url), limit=2)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "outputs" / "rl_iter_001.jsonl")) == 2


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory holding an old output, bind-mounted read-only (root ignores file modes, not a ro mount)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    (directory / "out.jsonl").write_bytes(PREVIOUS)
    mount = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True, timeout=30)
    if mount.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mount.stderr.decode().strip()}")
    try:
        remount = subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], capture_output=True, timeout=30)
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remount.stderr.decode().strip()}")
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], capture_output=True, timeout=30)


def test_a_read_only_output_directory_is_a_clear_error(tmp_path, prompts, readonly_dir):
    params = write_params(tmp_path, {"math_agent": agent(f"http://127.0.0.1:{free_port()}")})
    result = subprocess.run(
        [
            PY,
            str(SCRIPTS / "collect.py"),
            *_seed(prompts, readonly_dir / "out.jsonl"),
            "--no-progress",
            "--params",
            str(params),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_line_error(result)
    assert f"{readonly_dir}: output directory is not writable" in line
    assert (readonly_dir / "out.jsonl").read_bytes() == PREVIOUS
    assert {p.name for p in readonly_dir.iterdir()} == {"out.jsonl"}


def test_a_read_only_output_directory_is_a_clear_error_for_the_stages_too(tmp_path, readonly_dir):
    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text(
        json.dumps(
            {
                "prompt_id": "p",
                "task_index": 0,
                "rollout_index": 0,
                "output": "4",
                "reward": 1.0,
                "input": [{"role": "user", "content": "x"}],
            }
        )
        + "\n"
    )
    params = write_params(tmp_path, {"math_agent": agent()})
    result = subprocess.run(
        [
            PY,
            str(SCRIPTS / "filter.py"),
            "--in",
            str(rollouts),
            "--out",
            str(readonly_dir / "out.jsonl"),
            "--params",
            str(params),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "not writable" in one_line_error(result, "filter")
    assert (readonly_dir / "out.jsonl").read_bytes() == PREVIOUS
