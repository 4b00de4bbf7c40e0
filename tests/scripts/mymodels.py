"""A user's own model module, as a project would have one beside its presets: tests name its
functions in ``model.name = "mymodels:..."`` (tests/test_own_model.py, tests/test_resume.py)."""

from __future__ import annotations

from torch import nn


class TinyNet(nn.Module):
    """Two linear layers with named submodules, so a run file's layer names are recognisably ours."""

    def __init__(self, in_features: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(in_features, width)
        self.act = nn.Tanh()
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(self.act(self.encoder(x.flatten(1))))


def build(cfg: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    """The documented call: the [model] table as a dict, the per-sample input shape, the classes."""
    n = 1
    for d in input_shape:
        n *= d
    return TinyNet(n, int(cfg.get("width_tiny", 16)), num_classes)


def build_cfg_only(cfg: dict) -> nn.Module:
    """A builder that takes only the table: the shape and classes come from its own keys."""
    return TinyNet(int(cfg["inputs"]), int(cfg["width_tiny"]), int(cfg["outputs"]))


def broken(cfg: dict, input_shape: tuple, num_classes: int) -> nn.Module:
    raise ValueError("width_tiny must be even")


def not_a_module(cfg: dict) -> object:
    return "a string"


NOT_CALLABLE = 3
