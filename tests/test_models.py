"""Model registry, parameter counts against the source reports, summaries, and the VGG38 pathology.

The parameter counts are the ones the reports print (000, 001, 003); the gradient tests pin down the
behaviour tuitrain exists to show: with PyTorch's default init, VGG38's first-layer gradient vanishes
while VGG08's does not, and BatchNorm + residual connections bring it back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tuitrain.config import ModelConfig
from tuitrain.train.models import MODELS, apply_init, build_model
from tuitrain.train.summary import layer_infos, model_summary

IMG = (3, 32, 32)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def vgg(blocks: int = 5, **kw: object) -> ModelConfig:
    return ModelConfig(name="vgg", blocks_per_stage=blocks, **kw)  # type: ignore[arg-type]


def mixer(**kw: object) -> ModelConfig:
    return ModelConfig(name="mlp_mixer", activation="gelu", **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Registry and parameter counts


def test_registry_names() -> None:
    assert set(MODELS) == {"mlp", "vgg", "resnet18", "mlp_mixer"}
    with pytest.raises(ValueError, match="unknown model"):
        build_model(ModelConfig(name="nope"), IMG, 10)


@pytest.mark.parametrize(
    ("cfg", "classes", "expected"),
    [
        (ModelConfig(name="mlp", activation="relu"), 10, 3_709_194),
        (vgg(0), 100, 59_460),  # VGG08
        (vgg(5), 100, 335_940),  # VGG38
        (vgg(5, batch_norm=True), 100, 338_308),  # VGG38+BN
        (vgg(5, residual=True), 100, 335_940),  # VGG38+RC: identity shortcuts are free
        (vgg(5, batch_norm=True, residual=True), 100, 338_308),  # VGG38+BN+RC
        (vgg(5, batch_norm=True, residual=True, downsample_shortcut="avgpool"), 100, 338_308),
        # three reduction blocks, each a 32x32 1x1 conv + BN (64): 3 * 1088 extra
        (vgg(5, batch_norm=True, residual=True, downsample_shortcut="conv1x1"), 100, 338_308 + 3 * 1088),
        (vgg(5, residual=True, downsample_shortcut="conv1x1"), 100, 335_940 + 3 * 1024),
        (ModelConfig(name="resnet18"), 10, 11_173_962),
        (mixer(mlp_ratio=[0.5, 4.0]), 10, 2_188_298),
    ],
)
def test_exact_param_counts(cfg: ModelConfig, classes: int, expected: int) -> None:
    assert n_params(build_model(cfg, IMG, classes)) == expected


@pytest.mark.parametrize(
    ("ratio", "approx"), [([1.0, 4.0], 2.25e6), ([0.5, 8.0], 4.29e6), ([1.0, 1.0], 678e3)]
)
def test_mixer_ratio_param_counts(ratio: list[float], approx: float) -> None:
    n = n_params(build_model(mixer(mlp_ratio=ratio), IMG, 10))
    assert abs(n - approx) / approx < 0.01


def test_downsample_shortcut_needs_residual() -> None:
    """The option only applies with residual=True (as the config documents); the report's VGG has none."""
    plain = build_model(vgg(1, downsample_shortcut="conv1x1"), IMG, 10)
    assert not any("shortcut" in name for name, _ in plain.named_parameters())
    res = build_model(vgg(1, residual=True, downsample_shortcut="conv1x1"), IMG, 10)
    assert "stages.0.reduce.shortcut.conv.weight" in dict(res.named_parameters())


# ---------------------------------------------------------------------------------------------
# Forward shapes


@pytest.mark.parametrize("shortcut", ["none", "conv1x1", "avgpool"])
@pytest.mark.parametrize(
    ("residual", "batch_norm"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_vgg_forward(shortcut: str, residual: bool, batch_norm: bool) -> None:
    cfg = vgg(1, residual=residual, batch_norm=batch_norm, downsample_shortcut=shortcut)
    assert build_model(cfg, IMG, 100)(torch.randn(2, *IMG)).shape == (2, 100)


def test_vgg_relu_and_reduction_shortcut_changes_output() -> None:
    assert build_model(vgg(0, activation="relu"), IMG, 7)(torch.randn(2, *IMG)).shape == (2, 7)
    x = torch.randn(2, *IMG)
    outs = []
    for shortcut in ("none", "avgpool"):
        torch.manual_seed(0)
        outs.append(build_model(vgg(1, residual=True, downsample_shortcut=shortcut), IMG, 10)(x))
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("shape", [IMG, (2,)])
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "gelu", "sigmoid", "tanh"])
def test_mlp_forward(shape: tuple[int, ...], act: str) -> None:
    cfg = ModelConfig(name="mlp", activation=act, hidden=[16, 8], batch_norm=True, dropout=0.1)
    model = build_model(cfg, shape, 3)
    assert model(torch.randn(2, *shape)).shape == (2, 3)
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == [
        "layers.0.linear.weight",
        "layers.0.linear.bias",
        "layers.0.bn.weight",
        "layers.0.bn.bias",
    ]
    assert names[-2:] == ["head.weight", "head.bias"]


def test_resnet18_forward() -> None:
    assert build_model(ModelConfig(name="resnet18", width=8), IMG, 10)(torch.randn(2, *IMG)).shape == (2, 10)


@pytest.mark.parametrize("patch", [2, 4, 8])
def test_mixer_forward(patch: int) -> None:
    cfg = mixer(patch_size=patch, embed_dim=32, num_blocks=2, dropout=0.1)
    assert build_model(cfg, IMG, 10)(torch.randn(2, *IMG)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------
# Initialisation


def test_default_init_is_untouched() -> None:
    torch.manual_seed(0)
    ref = MODELS["vgg"](vgg(1), IMG, 10)
    torch.manual_seed(0)
    built = build_model(vgg(1, init="default"), IMG, 10)
    for (name, a), (_, b) in zip(ref.state_dict().items(), built.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("init", ["kaiming", "xavier"])
def test_custom_init_zeroes_biases(init: str) -> None:
    torch.manual_seed(0)
    ref = build_model(ModelConfig(name="mlp", hidden=[64]), IMG, 10)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp", hidden=[64], init=init), IMG, 10)
    assert not torch.equal(ref.layers[0].linear.weight, model.layers[0].linear.weight)
    assert torch.count_nonzero(model.head.bias) == 0
    if init == "kaiming":  # fan_in, gain sqrt(2): std = sqrt(2 / 3072)
        assert model.layers[0].linear.weight.std().item() == pytest.approx((2 / 3072) ** 0.5, rel=0.05)
    with pytest.raises(ValueError):
        apply_init(model, "orthogonal")


# ---------------------------------------------------------------------------------------------
# layer_infos and model_summary


@pytest.mark.parametrize(
    ("cfg", "shape", "first"),
    [
        (vgg(1, batch_norm=True, residual=True, downsample_shortcut="conv1x1"), IMG, "input_conv"),
        (ModelConfig(name="mlp", hidden=[8], batch_norm=True), (2,), "layers.0.linear"),
        (ModelConfig(name="resnet18", width=8), IMG, "stem_conv"),
        (mixer(embed_dim=16, num_blocks=1), IMG, "stem"),
    ],
)
def test_layer_infos_order_and_kinds(cfg: ModelConfig, shape: tuple[int, ...], first: str) -> None:
    model = build_model(cfg, shape, 10)
    infos = layer_infos(model)
    assert [i.name for i in infos] == [n for n, _ in model.named_parameters()]
    assert infos[0].module == first and infos[0].kind == "weight"
    assert infos[-1].module == "head" and infos[-1].kind == "bias" and infos[-1].module_type == "Linear"
    for info in infos:
        assert info.numel == torch.Size(info.shape).numel()
        is_norm = info.module_type in ("BatchNorm1d", "BatchNorm2d", "LayerNorm")
        assert (info.kind == "norm") == is_norm, info
        if not is_norm:
            assert info.kind == info.name.rsplit(".", 1)[1]
    assert any(i.kind == "norm" for i in infos)


def test_layer_infos_skips_frozen() -> None:
    model = build_model(vgg(0), IMG, 10)
    model.input_conv.weight.requires_grad_(False)
    assert layer_infos(model)[0].name == "stages.0.reduce.conv0.weight"


def test_vgg_module_names_follow_forward_order() -> None:
    names = [i.name for i in layer_infos(build_model(vgg(1, batch_norm=True), IMG, 10))]
    assert names[:6] == [
        "input_conv.weight",
        "input_bn.weight",
        "input_bn.bias",
        "stages.0.blocks.0.conv0.weight",
        "stages.0.blocks.0.bn0.weight",
        "stages.0.blocks.0.bn0.bias",
    ]
    assert names.index("stages.0.blocks.0.conv1.weight") < names.index("stages.0.reduce.conv0.weight")
    assert names.index("stages.0.reduce.conv1.weight") < names.index("stages.1.blocks.0.conv0.weight")


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [
        (vgg(5), IMG),
        (ModelConfig(name="mlp", batch_norm=True), IMG),
        (ModelConfig(name="mlp", hidden=[8]), (2,)),
        (ModelConfig(name="resnet18"), IMG),
        (mixer(), IMG),
    ],
)
def test_model_summary(cfg: ModelConfig, shape: tuple[int, ...]) -> None:
    model = build_model(cfg, shape, 10)
    model.train()
    flops, rows = model_summary(model, shape)
    assert model.training
    assert flops > 0
    assert rows and all(set(r) == {"name", "type", "params", "flops"} for r in rows)
    assert sum(r["params"] for r in rows) == n_params(model)
    assert sum(r["flops"] for r in rows) == flops  # all FLOPs happen in leaf modules here
    assert rows[-1]["name"] == "head"


def test_model_summary_known_flops_and_eval_mode_kept() -> None:
    model = build_model(vgg(0), IMG, 100).eval()
    flops, rows = model_summary(model, IMG)
    assert not model.training
    first = rows[0]
    assert first == {"name": "input_conv", "type": "Conv2d", "params": 864, "flops": 2 * 864 * 32 * 32}
    # 7 convs (input at 32x32; per stage one 3x3 before and one after the pool) + the head
    conv = 2 * 9 * 32 * 32
    expected = 2 * 864 * 1024 + sum(conv * (s * s) + conv * (s * s // 4) for s in (32, 16, 8)) + 2 * 32 * 100
    assert flops == expected


def test_model_summary_never_raises() -> None:
    model = build_model(vgg(0), IMG, 10)
    flops, rows = model_summary(model, (5, 7))  # wrong input shape: the forward pass fails
    assert flops == 0
    assert sum(r["params"] for r in rows) == n_params(model)
    assert model.training


# ---------------------------------------------------------------------------------------------
# The pathology: VGG38 with PyTorch's default init


def first_layer_grad(cfg: ModelConfig) -> float:
    """Mean |grad| of input_conv.weight after one backward pass: seed 0, 100 classes, 8 N(0,1) images."""
    torch.manual_seed(0)
    model = build_model(cfg, IMG, 100)
    x = torch.randn(8, *IMG)
    y = torch.randint(0, 100, (8,))
    F.cross_entropy(model(x), y).backward()
    return model.input_conv.weight.grad.abs().mean().item()


@pytest.fixture(scope="module")
def grads() -> dict[str, float]:
    return {
        "vgg08": first_layer_grad(vgg(0)),
        "vgg38": first_layer_grad(vgg(5)),
        "vgg38_bn_rc": first_layer_grad(vgg(5, batch_norm=True, residual=True)),
    }


def test_vgg38_first_layer_gradient_vanishes(grads: dict[str, float]) -> None:
    # Measured: VGG08 ~3.7e-6, VGG38 ~3.3e-18 (a factor ~1e12; over seeds 0-5 never under 4e11).
    assert grads["vgg08"] > 1e-7
    assert grads["vgg38"] < 1e-14
    assert grads["vgg38"] * 1e9 < grads["vgg08"]


def test_vgg38_bn_rc_does_not_collapse(grads: dict[str, float]) -> None:
    # Measured: ~0.18, far above VGG08's and nowhere near VGG38's.
    assert grads["vgg38_bn_rc"] > 1e-3
    assert grads["vgg38_bn_rc"] > grads["vgg08"]
    assert grads["vgg38_bn_rc"] > 1e9 * grads["vgg38"]


# ---------------------------------------------------------------------------------------------
# Hygiene


def test_train_package_never_imports_textual() -> None:
    """The training side runs headless and in worker processes: textual must stay out of it."""
    root = Path(__file__).resolve().parents[1] / "tuitrain" / "train"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            assert not any(m == "textual" or m.startswith("textual.") for m in mods), path
