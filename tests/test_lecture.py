import math

import pytest
import torch
import torch.nn.functional as F

from charmlp.errors import CharmlpError
from charmlp.model.lecture import LectureMLP
from charmlp.model.torch_ops import dropout_mask


def dropout(h: torch.Tensor, p: float) -> torch.Tensor:
    return h * dropout_mask(h, p)  # the dropout layer's forward


def test_lecture_parameter_count_and_names():
    mlp = LectureMLP(vocab_size=27, block_size=3, emb_dim=10, hidden_dim=200)
    shapes = {name: tuple(p.shape) for name, p in mlp.named_parameters()}
    assert shapes == {"C": (27, 10), "W1": (30, 200), "b1": (200,), "W2": (200, 27), "b2": (27,)}
    assert sum(p.numel() for p in mlp.parameters()) == 11_897


def test_init_is_the_seeds_randn_sequence():
    torch.manual_seed(2147483647)
    mlp = LectureMLP(27)
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    assert torch.equal(mlp.C, C) and torch.equal(mlp.W1, W1)


def test_forward_is_the_seeds_formula():
    mlp = LectureMLP(27)
    idx = torch.randint(0, 27, (5, 3))
    h = torch.tanh(mlp.C[idx].view(-1, 30) @ mlp.W1 + mlp.b1)
    torch.testing.assert_close(mlp(idx), h @ mlp.W2 + mlp.b2)


def test_manual_softmax_nll_equals_cross_entropy():
    logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    y = torch.tensor([0, 2])
    counts = logits.exp()
    probs = counts / counts.sum(1, keepdim=True)
    manual = -probs[torch.arange(2), y].log().mean()
    # by hand: -(log(e^2/(e^2+e+e^0.1)) + log(e^-1/(e^0.5+e^2.5+e^-1))) / 2
    by_hand = (
        -(2 - math.log(math.e**2 + math.e + math.e**0.1) + (-1) - math.log(math.e**0.5 + math.e**2.5 + math.e**-1)) / 2
    )
    assert manual.item() == pytest.approx(by_hand, abs=1e-6)
    assert F.cross_entropy(logits, y).item() == pytest.approx(manual.item(), abs=1e-6)


def test_scaled_init_starts_near_uniform():
    torch.manual_seed(0)
    idx = torch.randint(0, 27, (512, 3))
    normal = F.cross_entropy(LectureMLP(27)(idx), torch.randint(0, 27, (512,)))
    scaled = F.cross_entropy(LectureMLP(27, init="scaled")(idx), torch.randint(0, 27, (512,)))
    assert abs(scaled.item() - math.log(27)) < 0.05  # ln 27 = 3.30: the uniform guess
    assert normal.item() > 8  # the lecture's first loss is ~17-27


@pytest.mark.parametrize(
    "kwargs", [{"emb_dim": 0}, {"hidden_dim": 0}, {"block_size": 0}, {"dropout": 1.0}, {"init": "xavier"}]
)
def test_impossible_shapes(kwargs):
    with pytest.raises(CharmlpError):
        LectureMLP(27, **kwargs)


def test_cpu_dropout_keeps_each_position_with_probability_one_minus_p():
    torch.manual_seed(0)
    out = dropout(torch.ones(1000, 1000), 0.3)
    # p = 0.3 rounds to 9830 / 2^15, so survivors are scaled by 2^15 / (2^15 - 9830) = 32768 / 22938
    assert set(out.unique().tolist()) == pytest.approx([0.0, 32768 / 22938])
    kept = (out > 0).view(-1, 4).float().mean(0)  # each 16-bit quarter of the 64-bit draws on its own
    torch.testing.assert_close(kept, torch.full((4,), 22938 / 32768), atol=0.005, rtol=0)  # 5 sigma at 250k
    assert out.mean().item() == pytest.approx(1.0, abs=0.005)  # the expectation is the input


def test_cpu_dropout_follows_the_seed_and_passes_gradients_through_the_mask():
    x = torch.randn(3, 7, requires_grad=True)
    torch.manual_seed(1)
    out = dropout(x, 0.5)
    out.sum().backward()
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.5), out)
    # p = 0.5 keeps 2^14 of 2^15 values: survivors are doubled and so are their gradients
    torch.testing.assert_close(out, x * x.grad)
    assert set(x.grad.unique().tolist()) <= {0.0, 2.0}


def test_cpu_dropout_near_one_keeps_one_value_in_2_to_the_15():
    torch.manual_seed(0)
    out = dropout(torch.ones(2**20), 0.99999)  # rounds to 2^15: the threshold stops one short
    assert set(out.unique().tolist()) <= {0.0, 2.0**15}
    assert 0 < (out > 0).sum().item() < 100  # about 32 of 2^20
