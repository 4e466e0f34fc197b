"""Bayesian search with ASHA pruning against random search, at the same trial budget, through the real tune flow.

    python benchmarks/tuning_search.py                 # the shipped sample, built-in MiniLM-L6, 10 trials each
    python benchmarks/tuning_search.py --trials 16 --steps 60
    python benchmarks/tuning_search.py --smoke         # 2 trials, 4 steps: checks the script, no figures

Both studies run in this one process, one after the other, through `flows.tune.tune` on the same data and
split, search space and trial budget: TPE (4 random start-up trials) with ASHA pruning (4 validation
evaluations per trial), and random sampling with no pruning. Printed side by side: the best validation
accuracy each found, total wall time of the flow, trials pruned, and the optimizer steps all trials took.
The search space is deliberately wide (learning rate 1e-6 to 1e-3) so that some trials are poor: the case
pruning exists for. One seed per study: the best-accuracy column of two studies of 10 trials is itself noisy,
the step and wall-time columns much less.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STARTING_LOAD = os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of a trial that is not pruned")
    parser.add_argument("--rows", type=int, default=1500, help="rows of the shipped sample used (train 80%%)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.steps, args.rows = 2, 4, 200

    home = Path(tempfile.mkdtemp(prefix="tuneline-bench-tune-"))
    os.environ["TUNELINE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from benchmarks.finetune_speed import cpu_description
    from tuneline.data.loading import BUILTIN_SAMPLE, load_dataset
    from tuneline.tuning.search import TuneConfig

    data = home / "sample.csv"
    load_dataset(BUILTIN_SAMPLE, "text", "label").frame.sample(args.rows, random_state=0)[["text", "label"]].to_csv(
        data, index=False)
    base = {"retrain": {"data": {"path": str(data)},
                        "train": {"max_steps": args.steps, "batch_size": 16, "max_length": 64, "logging_steps": 10}},
            "search_space": {"train.learning_rate": {"type": "log_uniform", "low": 1e-6, "high": 1e-3},
                             "train.warmup_ratio": {"type": "uniform", "low": 0.0, "high": 0.3},
                             "train.weight_decay": {"type": "uniform", "low": 0.0, "high": 0.1}},
            "trials": args.trials, "evaluations_per_trial": 4, "startup_trials": min(4, args.trials), "seed": args.seed}
    studies = {
        "TPE + ASHA": TuneConfig.model_validate(base | {"algorithm": "tpe", "pruner": "asha", "study_name": "tpe-asha"}),
        "random, no pruning": TuneConfig.model_validate(base | {"algorithm": "random", "pruner": "none",
                                                                "study_name": "random"}),
    }
    from tuneline.flows.tune import tune

    # Warm-up, not reported: starts the embedded Prefect server and loads MiniLM once, so the first study timed
    # does not pay for it.
    tune(config=TuneConfig.model_validate(base | {"trials": 1, "study_name": "warm-up", "retrain": {
        **base["retrain"], "train": {**base["retrain"]["train"], "max_steps": 1}}}))
    results = {}
    for name, config in studies.items():
        started = time.perf_counter()
        summary = tune(config=config)
        wall = time.perf_counter() - started
        steps = sum(o.steps for o in summary.outcomes)
        results[name] = (summary, wall, steps)

    print(f"\n{date.today()}, {cpu_description()}, load average {STARTING_LOAD:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end")
    print(f"builtin:sample-reviews, {args.rows} rows (train {int(args.rows * 0.8)}), MiniLM-L6, {args.trials} trials, "
          f"at most {args.steps} steps of batch 16 x 64 tokens each\n")
    reference_wall, reference_steps = results["random, no pruning"][1], results["random, no pruning"][2]
    print("| search | best validation accuracy | best trial | trials pruned | steps, all trials | wall s | "
          "wall vs random |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (summary, wall, steps) in results.items():
        print(f"| {name} | {summary.best_value:.4f} | {summary.best_trial} | {summary.this_run['pruned']} | {steps} | "
              f"{wall:.0f} | {wall / reference_wall:.2f}x |")
    if args.smoke:
        print("\n(smoke run: no figures)")


if __name__ == "__main__":
    main()
