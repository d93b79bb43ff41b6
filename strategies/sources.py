"""Model sources beside a factory of one's own: torchvision's and timm's constructors, called
with their own class-count keyword and no pretrained download (weights come from
``model.weights``), and the head such networks name without configuration."""

from __future__ import annotations

from typing import Any

from torch import nn

# What classification networks call their last layer, most specific first: retain's own
# models and timm's ViTs ``head``, torchvision's ResNets ``fc``, its VGGs, MobileNets and
# EfficientNets ``classifier`` (a Sequential ending in one), Hugging Face's decoders ``score``.
HEAD_NAMES = ("head", "fc", "classifier", "score")


class MissingLibrary(ValueError):
    """A model source whose library is not installed: says which extra brings it."""


def torchvision_model(name: str, num_classes: int, input_shape: tuple[int, ...] | None = None,
                      **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)``. Its classification
    networks take 3-channel images, whatever ``input_shape`` says."""
    import torchvision

    if name not in torchvision.models.list_models():
        raise ValueError(f"torchvision has no model {name!r} (torchvision.models.list_models() names them)")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def timm_model(name: str, num_classes: int, input_shape: tuple[int, ...] | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=...)``, with ``in_chans`` from an
    image ``input_shape`` (C, H, W) unless ``kwargs`` sets it."""
    try:
        import timm
    except ImportError:
        raise MissingLibrary("model.timm needs the timm library: pip install 'retain[vision]'") from None
    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r} (timm.list_models() names them)")
    if input_shape is not None and len(input_shape) == 3:
        kwargs.setdefault("in_chans", input_shape[0])
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def find_head(model: nn.Module) -> str:
    """The dotted name of the model's last ``Linear`` under the first of ``HEAD_NAMES`` it has
    (the module itself where it is one), or a ValueError naming what the model has."""
    modules = dict(model.named_modules())
    for name in HEAD_NAMES:
        module = modules.get(name)
        if module is None:
            continue
        if isinstance(module, nn.Linear):
            return name
        inner = [f"{name}.{child}" for child, sub in module.named_modules() if child and isinstance(sub, nn.Linear)]
        if inner:
            return inner[-1]
    top = ", ".join(n for n in modules if n and "." not in n)
    raise ValueError(f"cannot find the model's head (a Linear named one of {', '.join(HEAD_NAMES)}); "
                     f"set model.head to one of its modules: {top}")


__all__ = ["HEAD_NAMES", "MissingLibrary", "find_head", "timm_model", "torchvision_model"]
