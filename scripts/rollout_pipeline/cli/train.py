"""`python scripts/train.py`: the default RL trainer (REINFORCE, group baseline) for the embedded reference policy.

    python scripts/train.py --rollouts data/rl/rl_iter_005.jsonl --init data/rl/checkpoints/iter_004 \
        --out data/rl/checkpoints/iter_005 --lr 0.5 --steps 10

What `rl.train.cmd` runs by default; rl/trainer.py says what one training step does.
"""

from __future__ import annotations

import argparse

from rollout_pipeline.errors import run_cli
from rollout_pipeline.rl.trainer import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", required=True, help="rollout JSONL of this iteration (collector output)")
    parser.add_argument("--init", required=True, help="checkpoint to start from (the previous iteration's)")
    parser.add_argument("--out", required=True, help="checkpoint to write (atomically)")
    parser.add_argument("--lr", type=float, default=0.5, help="step size (default 0.5)")
    parser.add_argument(
        "--steps", type=int, default=10, help="gradient steps on this iteration's rollouts (default 10)"
    )
    args = parser.parse_args(argv)
    for line in run(args.rollouts, args.init, args.out, args.lr, args.steps):
        print(line)
    return 0


def script_main() -> None:
    """Entry point of `python scripts/train.py`."""
    run_cli(main, "train.py")
