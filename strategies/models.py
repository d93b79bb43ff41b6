"""Built-in model factories and helpers that work on any classifier.

A built-in model is a ``Classifier``: a ``backbone`` that maps inputs to features and a
``head`` (a ``Linear``) that maps features to class logits. A user's own model only needs a
named head module; features are then read from the head's input with a forward hook.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


class Classifier(nn.Module):
    """A backbone followed by a linear head."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden: Sequence[int] = (128, 64),
    dropout: float = 0.0,
) -> Classifier:
    """A multilayer perceptron for flat (or flattened) features."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    return Classifier(nn.Sequential(*layers), nn.Linear(width, num_classes))


def small_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (16, 32),
    features: int = 64,
) -> Classifier:
    """A small CNN for single-channel images shaped ``(1, H, W)`` or ``(H, W)``."""
    if len(input_shape) == 2:
        input_shape = (1, *input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn needs an image shape (C, H, W), got {tuple(input_shape)}")
    in_channels = input_shape[0]
    layers: list[nn.Module] = [_ImageView(tuple(input_shape))]
    for out_channels in channels:
        layers += [
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ]
        in_channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(in_channels * 4, features), nn.ReLU()]
    return Classifier(nn.Sequential(*layers), nn.Linear(features, num_classes))


class _ImageView(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


log = logging.getLogger("retain.strategies")

# Top-level names of retain's packages before they moved under `retain.`; factories named
# through them (configs, and the model specs stored in registries) keep working for a release.
_OLD_PACKAGES = ("daemon", "registry", "strategies")


def _import_file(module_file: str):
    """A factory given as ``path/to/file.py:function``: the file, relative to the working
    directory or to a folder on ``sys.path`` (a config's is)."""
    path = Path(module_file)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, *(Path(p) / path for p in sys.path if p)]
    found = next((c.resolve() for c in candidates if c.is_file()), None)
    if found is None:
        raise ImportError(f"no file {module_file} here or beside the config")
    name = f"retain_factory_{found.stem}_{abs(hash(str(found))):x}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, found)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def resolve_factory(spec: str) -> Callable[..., nn.Module]:
    """Import a ``module:function`` (or ``file.py:function``) factory."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model factory {spec!r} must look like 'module:function' or 'file.py:function'")
    if module_name.split(".")[0] in _OLD_PACKAGES:
        module_name = f"retain.{module_name}"
        log.warning("deprecated model factory name", extra={"fields": {
            "factory": spec, "use": f"{module_name}:{attr}", "removed_in": "0.3"}})
    try:
        module = _import_file(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model factory {spec!r}: cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model factory {spec!r}: {module_name!r} has no callable {attr!r}")
    return factory


def logits_of(output: Any) -> torch.Tensor:
    """The logits in what a model returned: a tensor, a tuple or list whose first item is the
    logits, or an object with ``.logits`` (a Hugging Face ``SequenceClassifierOutput``)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"the model returned {type(output).__name__}, not logits: return a tensor, a tuple whose "
                    f"first item is the logits, or an object with .logits")


def _logits_only(_module: nn.Module, _inputs: Any, output: Any) -> torch.Tensor | None:
    return None if isinstance(output, torch.Tensor) else logits_of(output)


def returning_logits(model: nn.Module) -> nn.Module:
    """``model``, its calls made to return the logits tensor whatever its forward returns
    (``logits_of``), so that training, the gate, predict and export all see one tensor. A
    forward hook, not a wrapper: the weights keep their names, and copies keep the hook."""
    if _logits_only not in model._forward_hooks.values():
        model.register_forward_hook(_logits_only)
    return model


def without_logits_hook(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without ``returning_logits``'s hook, for TorchScript, which cannot
    compile a hook that takes any output."""
    copied = copy.deepcopy(model)
    for key, hook in list(copied._forward_hooks.items()):
        if hook is _logits_only:
            del copied._forward_hooks[key]
    return copied


def factory_arguments(build: Callable[..., nn.Module], input_shape: Sequence[int], num_classes: int,
                      kwargs: dict[str, Any]) -> dict[str, Any]:
    """What to call ``build`` with: ``input_shape`` and ``num_classes`` where its signature
    names them (or takes ``**kwargs``), then ``kwargs``."""
    try:
        parameters = inspect.signature(build).parameters
    except (TypeError, ValueError):  # a builtin or C extension without a signature: pass everything
        parameters = None
    open_ended = parameters is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    given = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    return {**{k: v for k, v in given.items() if open_ended or k in parameters}, **kwargs}


def build_model(
    factory: str, input_shape: Sequence[int], num_classes: int, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """Build an untrained model from a factory spec, returning logits (``returning_logits``).
    The factory gets ``input_shape`` and ``num_classes`` where it names them. Whatever it
    raises (a user's code, or a library given a bad keyword: ``weights=""`` to torchvision is a
    ``KeyError``) becomes a ``ValueError`` naming the factory, its keywords and the error."""
    from retain.strategies.sources import MissingLibrary

    build = resolve_factory(factory)
    try:
        model = build(**factory_arguments(build, input_shape, num_classes, kwargs or {}))
    except MissingLibrary:
        raise  # its message names the extra to install, which is all there is to say
    except Exception as exc:  # noqa: BLE001 - a factory is user code: any error is a configuration problem
        shown = ", ".join(f"{key}={value!r}" for key, value in (kwargs or {}).items()) or "none"
        raise ValueError(f"the factory failed (model.kwargs: {shown}): {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"the factory returned {type(model).__name__}, not a torch.nn.Module")
    return returning_logits(model)


def head_module(model: nn.Module, head: str) -> nn.Module:
    """The module named ``head`` (dotted path), or a ValueError naming what exists."""
    modules = dict(model.named_modules())
    if head not in modules or not head:
        names = ", ".join(name for name in modules if name and "." not in name)
        raise ValueError(f"model has no module named {head!r} (top-level modules: {names})")
    return modules[head]


def _in_chunks(model: nn.Module, x: torch.Tensor, batch_size: int,
               each: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """``each`` of the model's logits for ``x``, chunk by chunk, in eval mode, on the CPU; the
    model's mode is restored after."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        # No graph: with one, every chunk's activations would stay alive through its logits,
        # and a 100,000-sample batch through a CNN would hold gigabytes of them.
        with torch.no_grad():
            return [each(model(x[start : start + batch_size].to(device))).cpu()
                    for start in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)


def features_and_logits(
    model: nn.Module, head: str, x: torch.Tensor, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (the head's input) and logits, in eval mode, on the CPU."""
    captured: list[torch.Tensor] = []
    hook = head_module(model, head).register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0].detach().flatten(1).cpu())
    )
    try:
        logits = _in_chunks(model, x, batch_size, lambda out: out)
    finally:
        hook.remove()
    if not logits:
        return torch.empty(0, 0), torch.empty(0, 0)
    return torch.cat(captured), torch.cat(logits)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted class indices."""
    out = _in_chunks(model, x, batch_size, lambda logits: logits.argmax(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def probabilities(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class probabilities (softmax of the logits), one row per sample, on the CPU."""
    out = _in_chunks(model, x, batch_size, lambda logits: logits.softmax(1))
    return torch.cat(out) if out else torch.empty(0, 0)


def top_classes(probabilities: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """Per sample, its ``k`` most probable classes with their probabilities, most probable first."""
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [[(int(c), round(float(p), 6)) for c, p in zip(row_c, row_p, strict=True)]
            for row_c, row_p in zip(indices.tolist(), values.tolist(), strict=True)]


def head_width(model: nn.Module, head: str) -> int:
    module = head_module(model, head)
    if not isinstance(module, nn.Linear):
        raise ValueError(f"model.head {head!r} must be an nn.Linear, not {type(module).__name__}")
    return module.out_features


def widen_head(model: nn.Module, head: str, num_classes: int) -> nn.Module:
    """Give the head ``num_classes`` outputs, keeping every old class's weights and bias, so
    old-class logits are unchanged; new rows start at small random weights and zero bias."""
    old = head_module(model, head)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"cannot widen model.head {head!r}: it is a {type(old).__name__}, not an nn.Linear")
    if num_classes <= old.out_features:
        return model
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        new.weight.normal_(0.0, 0.01)
        new.weight[: old.out_features] = old.weight
        if old.bias is not None:
            new.bias.zero_()
            new.bias[: old.out_features] = old.bias
    parent_name, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    return model


def prepare_candidate(production: nn.Module, head: str, labels: torch.Tensor) -> nn.Module:
    """A copy of ``production`` whose head is wide enough for every label it will see."""
    candidate = copy.deepcopy(production)
    return widen_head(candidate, head, int(labels.max()) + 1) if len(labels) else candidate

