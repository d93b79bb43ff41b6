"""Shared training machinery: settings, Avalanche datasets from tensors, plugins for
progress and interruption, and the default recipe for an initial model.

Avalanche is imported inside functions: it costs seconds at import time and the CLI's
read-only commands never train.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from retain.strategies.minibatches import (
    NEW_DATA_TASK,
    REHEARSAL_TASK,
    Rehearsal,
    TensorMinibatches,
    class_balanced_indices,
)
from retain.strategies.settings import TrainingSettings


def limit_threads(threads: int) -> None:
    """Hold every compute thread pool of the process to ``threads``: torch's, and the OpenBLAS
    and OpenMP pools that numpy, scipy and torch load. ``torch.set_num_threads`` bounds only
    the first; the others start a thread per core, and two workers on two cores each took twice
    as long per batch as one alone. The libraries are loaded first: a pool loaded after this
    call would not be held."""
    import numpy  # noqa: F401 - loads numpy's OpenBLAS
    import scipy.linalg  # noqa: F401 - loads scipy's, which the shift test and scikit-learn use
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def import_training_libraries() -> None:
    """Import what adapting a batch would import on first use: Avalanche (seconds), and scipy's
    optimiser and scikit-learn's splitter for the probe (a tenth of a second). A daemon pays
    this before it says ready, not in its first batch."""
    import scipy.optimize  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    import retain.strategies.avalanche_api  # noqa: F401


def resolve_device(device: str) -> str:
    """The device training runs on: ``auto`` is ``cuda`` where torch sees a GPU. ``ValueError``
    for ``cuda`` where there is none (a config error, rather than torch's from inside training)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(f'training.device is "{device}" but torch {torch.__version__} ({built}) sees no CUDA device')
    return device


class TrainingInterrupted(Exception):
    """Training was asked to stop (shutdown); the candidate is discarded."""


@dataclass(frozen=True)
class TrainingProgress:
    epoch: int  # 1-based
    epochs: int
    iteration: int  # 1-based within the epoch
    iterations: int  # per epoch


@dataclass(frozen=True)
class TrainingHooks:
    """Callbacks from inside the training loop: progress reports and a stop check."""

    on_progress: Callable[[TrainingProgress], None] | None = None
    should_stop: Callable[[], bool] = field(default=lambda: False)
    on_step: Callable[[int], None] | None = None  # an optimizer step over this many samples


@dataclass
class ComputeCounter:
    """Counts the optimizer steps of one training run and the samples they saw (an ``on_step``)."""

    steps: int = 0
    samples: int = 0

    def __call__(self, samples: int) -> None:
        self.steps += 1
        self.samples += samples


def tensor_dataset(x: torch.Tensor, y: torch.Tensor, task_label: int = NEW_DATA_TASK):
    """An Avalanche classification dataset with a task label (replay buffers need one)."""
    from retain.strategies.avalanche_api import _make_taskaware_tensor_classification_dataset

    return _make_taskaware_tensor_classification_dataset(
        x.float(), y.long(), targets=y.long().tolist(), task_labels=task_label
    )


def single_experience(x: torch.Tensor, y: torch.Tensor):
    """One training experience holding ``(x, y)``."""
    from retain.strategies.avalanche_api import benchmark_from_datasets

    return benchmark_from_datasets(train=[tensor_dataset(x, y)]).train_stream[0]


def silent_evaluator():
    """An evaluator with no metrics and no loggers. Avalanche's forwards every callback to its
    metrics through a Python ``__getattribute__`` (40 attribute lookups a step) and switches
    the experience to its logging view and back each time: a tenth of a small batch's training
    for metrics there are none of."""
    from retain.strategies.avalanche_api import EvaluationPlugin

    class SilentEvaluator(EvaluationPlugin):
        __getattribute__ = object.__getattribute__  # callbacks it does not define are skipped

        def _update_metrics_and_loggers(self, strategy, callback):
            return []

    return SilentEvaluator(loggers=[])


def hook_plugin(hooks: TrainingHooks, epochs: int):
    """An Avalanche plugin that reports progress and aborts when asked to stop."""
    from retain.strategies.avalanche_api import SupervisedPlugin

    class HookPlugin(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.iteration = 0

        def before_training_epoch(self, strategy, **kwargs):
            self.iteration = 0

        def after_training_iteration(self, strategy, **kwargs):
            self.iteration += 1
            if hooks.on_step is not None:
                hooks.on_step(len(strategy.mb_y))
            if hooks.should_stop():
                raise TrainingInterrupted("stop requested")
            if hooks.on_progress is not None:
                try:
                    iterations = len(strategy.dataloader)
                except TypeError:
                    iterations = self.iteration
                hooks.on_progress(
                    TrainingProgress(
                        epoch=strategy.clock.train_exp_epochs + 1,
                        epochs=epochs,
                        iteration=self.iteration,
                        iterations=iterations,
                    )
                )

    return HookPlugin()


@contextlib.contextmanager
def quiet_avalanche() -> Iterator[None]:
    """Silence Avalanche's per-step deprecation and version warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="avalanche")
        yield


def memory_batch_size(batch_size: int, rehearsal_y: torch.Tensor, train_y: torch.Tensor, cap: int = 4) -> int:
    """Replayed samples per minibatch so that every class is drawn at about the same rate:
    a batch that brings 2 classes next to a memory of 8 gets 4x as many replayed samples
    as new ones, or the new classes would dominate each step and pull old samples over."""
    memory_classes = len(rehearsal_y.unique()) if len(rehearsal_y) else 0
    new_classes = max(len(train_y.unique()), 1)
    return max(1, min(cap * batch_size, round(batch_size * memory_classes / new_classes)))


def rehearsal_plugins(
    production: nn.Module,
    rehearsal: tuple[torch.Tensor, torch.Tensor],
    train_y: torch.Tensor,
    settings: TrainingSettings,
) -> list:
    """What every strategy rehearses with: class-balanced replay and the production anchor."""
    return [
        replay_plugin(*rehearsal, batch_size_mem=memory_batch_size(settings.batch_size, rehearsal[1], train_y)),
        anchor_plugin(copy.deepcopy(production), settings.distillation),
    ]


def replay_plugin(rehearsal_x: torch.Tensor, rehearsal_y: torch.Tensor, batch_size_mem: int | None = None):
    """A ``ReplayPlugin`` whose class-balanced buffer already holds the rehearsal samples.

    The buffer is not updated after training: what the memory keeps from a batch is decided
    once, by ``strategies.replay.remember``, and saved with the version. Under ``run_template``
    the minibatches are cut from the buffer's samples as tensors (``TensorMinibatches``); under
    another template the plugin loads them as Avalanche's does.
    """
    with quiet_avalanche():
        from retain.strategies.avalanche_api import ClassBalancedBuffer, ReplayPlugin

    size = max(len(rehearsal_y), 1)
    # What the buffer keeps of the whole set, chosen here so that the tensors replayed are its
    # contents; it is filled only where a template reads it (filling it costs 25 ms a batch).
    kept = class_balanced_indices(rehearsal_y, size)
    kept_x, kept_y = rehearsal_x[kept], rehearsal_y[kept]
    buffer = ClassBalancedBuffer(max_size=size, adaptive_size=True)

    class FixedReplayPlugin(ReplayPlugin):
        def before_training_exp(self, strategy, **kwargs):
            if not len(kept_y):
                return None
            if isinstance(strategy.dataloader, TensorMinibatches):
                per_step = self.batch_size_mem if self.batch_size_mem is not None else strategy.train_mb_size
                strategy.dataloader = strategy.dataloader.with_rehearsal(Rehearsal(kept_x, kept_y, per_step))
                return None
            if not len(buffer.buffer):
                buffer.update_from_dataset(tensor_dataset(kept_x, kept_y, task_label=REHEARSAL_TASK))
            return super().before_training_exp(strategy, **kwargs)

        def after_training_exp(self, strategy, **kwargs):
            pass

    return FixedReplayPlugin(mem_size=size, storage_policy=buffer, batch_size_mem=batch_size_mem)


def anchor_plugin(teacher: nn.Module, weight: float, temperature: float = 2.0):
    """Distil the production model's outputs on replayed samples into the candidate.

    Rehearsal with labels keeps old classes right; matching production's soft outputs on the
    same samples also keeps how it ranks the wrong ones, which is what drifts first.
    """
    from retain.strategies.avalanche_api import SupervisedPlugin

    teacher = teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)

    class Anchor(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            teacher.to(strategy.device)
            loader = strategy.dataloader
            # Production's outputs on the replayed samples do not change during training:
            # computed once here, not on every draw (a forward pass each step).
            if weight > 0 and isinstance(loader, TensorMinibatches) and loader.rehearsal is not None:
                memory = loader.rehearsal
                with torch.no_grad():
                    outputs = torch.cat([teacher(chunk) for chunk in memory.x.split(1024)])
                strategy.dataloader = loader.with_rehearsal(replace(memory, outputs=outputs))

        def before_backward(self, strategy, **kwargs):
            if weight <= 0:
                return
            if len(strategy.mbatch) == 4:  # [x, y, production's outputs on the last rows, task]
                target = strategy.mbatch[2]
                student = strategy.mb_output[len(strategy.mb_output) - len(target) :]
            else:
                replayed = torch.as_tensor(strategy.mb_task_id) == REHEARSAL_TASK
                if not bool(replayed.any()):
                    return
                with torch.no_grad():
                    target = teacher(strategy.mb_x[replayed])
                student = strategy.mb_output[replayed]
            if not len(target):
                return
            student = student[:, : target.shape[1]]
            distillation = nn.functional.kl_div(
                nn.functional.log_softmax(student / temperature, dim=1),
                nn.functional.softmax(target / temperature, dim=1),
                reduction="batchmean",
            )
            strategy.loss += weight * temperature**2 * distillation

    return Anchor()


def make_optimizer(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def run_template(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainingSettings,
    lr: float,
    plugins: Sequence[object] = (),
    hooks: TrainingHooks = TrainingHooks(),
) -> nn.Module:
    """Train ``model`` in place on one experience with a ``SupervisedTemplate`` whose
    minibatches are cut from ``x`` and ``y`` by index (``TensorMinibatches``)."""
    normalises_batches = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with quiet_avalanche():
        from retain.strategies.avalanche_api import SupervisedTemplate

        class TensorTemplate(SupervisedTemplate):
            def make_train_dataloader(self, **kwargs):
                self.dataloader = TensorMinibatches(x.float(), y.long(), self.train_mb_size, device=self.device,
                                                    fewest=2 if normalises_batches else 1)

        torch.manual_seed(settings.seed)
        strategy = TensorTemplate(
            model=model,
            optimizer=make_optimizer(model.parameters(), lr, settings.weight_decay),
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=settings.batch_size,
            train_epochs=settings.epochs,
            eval_mb_size=max(settings.batch_size, 256),
            device=resolve_device(settings.device),
            plugins=[*plugins, hook_plugin(hooks, settings.epochs)],
            evaluator=silent_evaluator(),
        )
        strategy.train(single_experience(x, y), num_workers=0)
    return model.cpu().eval()


def train_initial(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainingSettings,
    hooks: TrainingHooks = TrainingHooks(),
) -> nn.Module:
    """The default recipe for version 1: plain training at the base learning rate."""
    model = copy.deepcopy(model)
    return run_template(model, x, y, settings, settings.lr, hooks=hooks)
