"""Adapted linears (megaspec.peft.layers and .adapters): the base layer's own forward plus
each active adapter, fresh adapters changing nothing, effects of two types adding up,
nesting, a user's linear, and the SVD initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from megaspec.parallel import (
    ColumnParallelLinear,
    ParallelGroups,
    RowParallelLinear,
    normal_init,
    seeded_initialization,
)
from megaspec.peft import (
    AdaptedColumnLinear,
    AdaptedRowLinear,
    IA3Config,
    LoraConfig,
    adapted,
)

SINGLE = ParallelGroups.single()


def column(bias: bool = True) -> ColumnParallelLinear:
    with seeded_initialization(0):
        return ColumnParallelLinear(input_size=16, output_size=24, groups=SINGLE, init_method=normal_init(0.2), bias=bias)


def row() -> RowParallelLinear:
    with seeded_initialization(1):
        return RowParallelLinear(input_size=24, output_size=16, groups=SINGLE, init_method=normal_init(0.2), bias=True)


def randomised(wrapper: nn.Module, seed: int) -> nn.Module:
    """Move every adapter parameter off its initial value (scales stay near 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in wrapper.named_parameters():
            if ".adapters." in f".{name}":
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.copy_(1 + 0.3 * noise if name.endswith("ia3_scale") else 0.3 * noise)
    return wrapper


@pytest.mark.parametrize("init", ["zeros", "gaussian", "svd"])
@pytest.mark.parametrize("make", [column, row], ids=["column", "row"])
def test_a_fresh_lora_changes_nothing(init: str, make: object) -> None:
    base = make()  # type: ignore[operator]
    x = torch.randn(5, 2, base.input_size, generator=torch.Generator().manual_seed(2))
    expected = base(x)
    wrapper = adapted(base, "lora", SINGLE)
    with seeded_initialization(3):
        wrapper.add("default", LoraConfig(rank=4, init=init))  # type: ignore[arg-type]
    wrapper.active = ("default",)
    assert torch.equal(wrapper(x), expected)


def test_svd_initialisation_spans_the_weights_principal_input_directions() -> None:
    base = column(bias=False)
    wrapper = adapted(base, "lora", SINGLE)
    wrapper.add("default", LoraConfig(rank=3, init="svd"))
    _, singular, right = torch.linalg.svd(base.weight.detach(), full_matrices=False)
    expected = right[:3] * singular[:3].sqrt().unsqueeze(1)
    torch.testing.assert_close(wrapper.adapter("default").lora_A.detach(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [column, row], ids=["column", "row"])
def test_lora_and_ia3_on_one_linear_give_the_sum_of_their_effects(make: object) -> None:
    base = make()  # type: ignore[operator]
    x = torch.randn(5, 2, base.input_size, generator=torch.Generator().manual_seed(2))
    plain = base(x)
    ia3 = adapted(base, "ia3", SINGLE)
    ia3.add("scales", IA3Config())
    lora = adapted(ia3, "lora", SINGLE)  # LoRA outside, as add_adapter places it
    lora.add("low_rank", LoraConfig(rank=4))
    randomised(lora, 4)

    def output(*active: str) -> Tensor:
        ia3.active = tuple(name for name in active if name == "scales")
        lora.active = tuple(name for name in active if name == "low_rank")
        result: Tensor = lora(x)
        return result

    both, low_rank, scales = output("low_rank", "scales"), output("low_rank"), output("scales")
    torch.testing.assert_close(both, plain + (low_rank - plain) + (scales - plain), rtol=0, atol=1e-6)
    assert not torch.allclose(low_rank, plain) and not torch.allclose(scales, plain)


def test_nested_wrappers_each_call_their_base() -> None:
    base = column()
    x = torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(5))
    inner = adapted(base, "lora", SINGLE)
    inner.add("first", LoraConfig(rank=2))
    inner.active = ("first",)
    outer = adapted(inner, "lora", SINGLE)
    outer.add("second", LoraConfig(rank=3))
    outer.active = ("second",)
    randomised(outer, 6)
    first, second = inner.adapter("first"), outer.adapter("second")
    expected = base(x) + first.scale * x @ first.lora_A.T @ first.lora_B.T + second.scale * x @ second.lora_A.T @ second.lora_B.T
    torch.testing.assert_close(outer(x), expected, rtol=1e-6, atol=1e-6)
    assert outer.get_base_layer() is base
    assert isinstance(outer, AdaptedColumnLinear) and outer.gather_output is False
    assert repr(outer).startswith("lora.lora.ColumnParallelLinear(input_size=16, output_size=24")
    assert repr(outer).endswith("[lora: second (active); lora: first (active)]")


class UserColumnLinear(nn.Module):
    """A user's linear for a column slot: plain ``x W^T``, with the slot's marker."""

    gather_output = False

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * 0.1)

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden @ self.weight.T


def test_a_users_linear_is_adapted_through_its_own_forward() -> None:
    base = UserColumnLinear(8, 6)
    wrapper = adapted(base, "lora", SINGLE)
    wrapper.add("default", LoraConfig(rank=2, alpha=4.0))
    wrapper.active = ("default",)
    randomised(wrapper, 7)
    x = torch.randn(4, 8)
    lora = wrapper.adapter("default")
    torch.testing.assert_close(wrapper(x), base(x) + 2.0 * x @ lora.lora_A.T @ lora.lora_B.T)


def test_row_wrapper_keeps_the_base_marker_and_one_reduction() -> None:
    wrapper = adapted(row(), "lora", SINGLE)
    assert isinstance(wrapper, AdaptedRowLinear)
    assert wrapper.input_is_parallel is True and wrapper.splits_reduction()


def test_a_rank_larger_than_the_linear_allows() -> None:
    wrapper = adapted(column(), "lora", SINGLE)
    with pytest.raises(ValueError) as error:
        wrapper.add("default", LoraConfig(rank=20))
    assert str(error.value) == (
        "LoRA rank 20 is larger than this linear allows: min(input_size 16, output_size 24) = 16"
    )


def test_a_module_that_is_not_a_slot_linear_is_refused() -> None:
    with pytest.raises(ValueError) as error:
        adapted(nn.Linear(4, 4), "lora", SINGLE)
    assert str(error.value) == (
        "cannot adapt Linear: a linear needs gather_output (column) or input_is_parallel (row), "
        "input_size/output_size and a weight"
    )
