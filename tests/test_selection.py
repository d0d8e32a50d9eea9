"""Layer selection and freezing (RAM_SPEC §4): counts, parameter budgets, DDP-style name prefixes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ramir.layers import attributable_layers
from ramir.ranking import canonical_name, freeze_except, select_layers, trainable_fraction


class _Attention(nn.Module):
    """Owns a parameter and has children with parameters (like SwinIR's WindowAttention)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(5, 2))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(3))  # top-level: never a layer
        self.embed = nn.Linear(4, 8)  # 40 parameters
        self.blocks = nn.ModuleList([_Attention(8) for _ in range(2)])  # 10 + 216 + 72 each
        self.norm = nn.LayerNorm(8)  # 16
        self.head = nn.Linear(8, 2)  # 18


class _FakeDDP(nn.Module):
    """What DistributedDataParallel looks like to name-based code: the network under ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def _owned(model: nn.Module) -> dict[str, int]:
    return {name: sum(p.numel() for p in model.get_submodule(name).parameters(recurse=False))
            for name in attributable_layers(model)}


def test_select_by_count_is_the_reference_rule():
    ranking = [f"layer{i}" for i in range(263)]
    assert select_layers(ranking, 0.1) == ranking[:26]  # RAM-SwinIR: 26 of 263
    assert len(select_layers([f"l{i}" for i in range(445)], 0.3)) == 133  # RAM-PromptIR: 133 of 445
    assert select_layers(ranking, 0.0) == []
    assert select_layers(ranking, 1.0) == ranking
    with pytest.raises(ValueError):
        select_layers(ranking, 1.5)
    with pytest.raises(ValueError, match="more than once"):
        select_layers(["a", "b", "a"], 0.5)
    with pytest.raises(ValueError, match="mode"):
        select_layers(ranking, 0.5, by="flops")


def test_select_by_parameter_budget():
    model = _Net()
    owned = _owned(model)
    total = sum(p.numel() for p in model.parameters())
    ranking = sorted(owned, key=lambda name: -owned[name])  # biggest first
    for ratio in (0.05, 0.3, 0.5, 0.9):
        chosen = select_layers(ranking, ratio, by="params", model=model)
        used = sum(owned[name] for name in chosen)
        assert chosen == ranking[: len(chosen)]
        assert used <= ratio * total
        if len(chosen) < len(ranking):  # the next ranked layer would exceed the budget
            assert used + owned[ranking[len(chosen)]] > ratio * total
    assert select_layers(ranking, 1.0, by="params", model=model) == ranking
    with pytest.raises(ValueError, match="needs the model"):
        select_layers(ranking, 0.5, by="params")
    with pytest.raises(ValueError, match="not in the model"):
        select_layers(["embed", "nope"], 0.5, by="params", model=model)
    # a DDP-style wrapper gives the same selection
    assert select_layers(ranking, 0.5, by="params", model=_FakeDDP(model)) == select_layers(
        ranking, 0.5, by="params", model=model)


def test_freeze_except_trains_exactly_the_selected_layers():
    model = _Net()
    trainable = freeze_except(model, ["blocks.0", "head"])
    # blocks.0 is the attention module itself: only its own table, not its qkv / proj children
    assert trainable == ["blocks.0.table", "head.weight", "head.bias"]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trainable)
    expected = (10 + 18) / sum(p.numel() for p in model.parameters())
    assert trainable_fraction(model) == pytest.approx(expected)
    # selecting again replaces the previous selection
    assert freeze_except(model, ["blocks.1.qkv"]) == ["blocks.1.qkv.weight", "blocks.1.qkv.bias"]
    assert not model.head.weight.requires_grad
    assert freeze_except(model, []) == [] and trainable_fraction(model) == 0.0


def test_freeze_except_names_unknown_layers():
    model = _Net()
    with pytest.raises(ValueError, match=r"blocks\.7\.proj"):
        freeze_except(model, ["embed", "blocks.7.proj"])
    with pytest.raises(ValueError, match="blocks"):  # owns no parameter directly
        freeze_except(model, ["blocks"])


def test_ddp_prefix_is_handled():
    """The reference matched 'module.'-prefixed names, so without DDP it froze everything."""
    plain, inner = _Net(), _Net()
    wrapped = _FakeDDP(inner)
    assert all(n.startswith("module.") for n, _ in wrapped.named_parameters())
    layers = ["embed", "blocks.1.proj", "norm"]
    got_plain = freeze_except(plain, layers)
    got_wrapped = freeze_except(wrapped, layers)
    assert got_plain == got_wrapped == ["embed.weight", "embed.bias", "blocks.1.proj.weight",
                                        "blocks.1.proj.bias", "norm.weight", "norm.bias"]
    assert [p.requires_grad for p in plain.parameters()] == [p.requires_grad for p in inner.parameters()]
    assert trainable_fraction(plain) == trainable_fraction(wrapped) > 0
    # names given with the prefix are accepted as well
    assert freeze_except(wrapped, ["module.embed"]) == ["embed.weight", "embed.bias"]
    assert canonical_name("module._orig_mod.head.weight") == "head.weight"


def test_selection_on_ram_swinir_small():
    from ramir import create_model

    model = create_model("ram-swinir-small")
    ranking = list(reversed(attributable_layers(model)))
    chosen = select_layers(ranking, 0.2)
    assert len(chosen) == int(35 * 0.2)
    trainable = freeze_except(model, chosen)
    assert {name.rsplit(".", 1)[0] for name in trainable} == set(chosen)
    assert "mask_token" not in trainable
    owned = sum(p.numel() for name in chosen for p in model.get_submodule(name).parameters(recurse=False))
    assert trainable_fraction(model) == pytest.approx(owned / sum(p.numel() for p in model.parameters()))
