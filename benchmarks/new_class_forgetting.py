"""What does learning new classes cost even a model that forgets nothing?

On the digits class-incremental stream, a reference model is retrained from scratch on all
the data seen so far (joint training: the upper bound of any continual learner) after each
batch. The gate's measurement is then applied to consecutive reference models: forgetting =
audit accuracy of the previous one − audit accuracy of the next, on the held-out slices of
the earlier batches (the audit set the daemon would hold). Positive numbers are what new
classes cost without any forgetting in the usual sense; they size
``gate.max_forgetting_new_classes``.

    .venv/bin/python benchmarks/new_class_forgetting.py [--seeds 0 1 2 3] [--epochs 5]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from retain.strategies.models import mlp, predict
from retain.strategies.replay import split_holdout
from retain.strategies.training import TrainingSettings, limit_threads, quiet_avalanche, train_initial
from streams import class_incremental


def joint_forgetting(seed: int, epochs: int, holdout_fraction: float = 0.25) -> list[float]:
    """Per batch: the gate's forgetting between joint models before and after it."""
    stream = class_incremental(seed)
    training = TrainingSettings(epochs=epochs, batch_size=32, lr=0.003, device="cpu", seed=seed)
    train_x, train_y, audit_x, audit_y = [], [], [], []
    previous, steps = None, []
    for t, experience in enumerate(stream.experiences):
        x, y = experience.train
        (tx, ty), (hx, hy) = split_holdout(x, y, holdout_fraction, seed + t)
        train_x.append(tx)
        train_y.append(ty)
        xs, ys = torch.cat(train_x), torch.cat(train_y)
        torch.manual_seed(seed)  # the same initial weights as policy_regret.py's models
        model = train_initial(mlp((stream.dim,), int(ys.max()) + 1, hidden=(128, 64)), xs, ys, training)
        if previous is not None:
            ax, ay = torch.cat(audit_x), torch.cat(audit_y)
            before = float((predict(previous, ax) == ay).double().mean())
            after = float((predict(model, ax) == ay).double().mean())
            steps.append(before - after)
        audit_x.append(hx)
        audit_y.append(hy)
        previous = model
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    limit_threads(args.threads)
    warnings.showwarning = lambda *args, **kwargs: None
    names = [e.name for e in class_incremental(0).experiences[1:]]
    print("audit forgetting of a model retrained on all data so far, in points, per batch of new classes")
    print(f"{'seed':>4}  " + "  ".join(f"{name:>14}" for name in names) + "  max")
    worst = []
    for seed in args.seeds:
        with quiet_avalanche():
            steps = joint_forgetting(seed, args.epochs)
        worst.append(max(steps))
        print(f"{seed:>4}  " + "  ".join(f"{100 * s:14.1f}" for s in steps) + f"  {100 * max(steps):.1f}")
    print(f"largest over seeds: {100 * max(worst):.1f} points; mean of per-seed maxima {100 * np.mean(worst):.1f}")


if __name__ == "__main__":
    main()
