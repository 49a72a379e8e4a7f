"""Every layer's hand-written backward (makemore part 4) against autograd and against finite differences, every
family's whole backward against autograd, and the hand-written update (charmlp.training.hand_step) against
autograd + torch.optim, update after update."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from charmlp.model import layers as L
from charmlp.model import numpy_train_ops, torch_ops
from charmlp.model.lecture import LectureMLP
from charmlp.model.network import build_network
from charmlp.training import hand_step
from charmlp.training.loss import cross_entropy, cross_entropy_grad
from tests.conftest import compose_cfg

# each layer kind on a tiny input: (layer, input shape, ids as input)
CASES = {
    "embedding": (L.Embedding(5, 3), (2, 4), True),
    "embedding window": (L.Embedding(5, 3, window=2), (2, 4), True),
    "flatten pairs": (L.FlattenConsecutive(2), (2, 4, 3), False),
    "flatten all": (L.FlattenConsecutive(4), (2, 4, 3), False),
    "linear": (L.Linear(3, 4), (5, 3), False),
    "linear on steps, no bias": (L.Linear(3, 4, bias=False), (2, 4, 3), False),
    "batchnorm var": (L.BatchNorm1d(3), (6, 3), False),
    "batchnorm var on steps": (L.BatchNorm1d(3), (2, 4, 3), False),
    "batchnorm std, no eps": (L.BatchNorm1d(3, eps=0.0, momentum=0.001, spread="std"), (6, 3), False),
    "tanh": (L.Tanh(), (2, 4, 3), False),
    "sigmoid": (L.Sigmoid(), (2, 4, 3), False),
    "relu": (L.Relu(), (2, 4, 3), False),
    "gelu": (L.Gelu(), (2, 4, 3), False),
    "dropout": (L.Dropout(0.5), (3, 8), False),
    "position": (L.Position(6, 3), (2, 4, 3), False),
    "layernorm": (L.LayerNorm(3), (2, 4, 3), False),
    "causal_average": (L.CausalAverage(), (2, 4, 3), False),
    "attention": (L.Attention(4, heads=2), (2, 3, 12), False),
    "recurrent rnn": (L.Recurrent(3, 4), (2, 4, 3), False),
    "recurrent gru": (L.Recurrent(3, 4, cell="gru"), (2, 4, 3), False),
    "residual": (L.Residual([L.Linear(3, 3), L.Tanh()]), (2, 4, 3), False),
    "ensemble": (
        L.Ensemble([[L.Embedding(5, 3), L.Linear(3, 5)], [L.Embedding(5, 2), L.Tanh(), L.Linear(2, 5)]]),
        (2, 4),
        True,
    ),
}


def test_every_layer_kind_has_a_case_and_a_backward():
    assert {type(layer).kind for layer, _, _ in CASES.values()} == set(L.KINDS)
    assert all(L.by_hand([layer]) for layer, _, _ in CASES.values())


def _setup(name: str):
    """The case's layer (named), float64 state (every value random, so gamma != 1 and biases != 0), input, dy."""
    layer, shape, ids = copy.deepcopy(CASES[name][0]), *CASES[name][1:]
    L._rename(layer, "l")
    torch.manual_seed(0)
    state = {
        layer_.keys[role]: (torch.rand(s) + 0.5 if role.startswith("running_") else torch.randn(s)).double()
        for layer_ in L.walk([layer])
        for role, s in layer_.shapes().items()
    }
    x = torch.randint(0, 5, shape) if ids else torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        y = L.forward(L.bind([layer], {k: v.clone() for k, v in state.items()}), torch_ops, x, True)
    dy = torch.randn(y.shape, dtype=torch.float64)
    return layer, state, x, dy


def _numpy_backward(layer, state, x, dy, seed=1):
    """(y, d loss / d x, grads by state name) of the hand-written backward, loss = sum(y * dy)."""
    arrays = {k: v.numpy().copy() for k, v in state.items()}
    torch.manual_seed(seed)  # dropout's mask
    tape: list = []
    y = L.forward(L.bind([layer], arrays), numpy_train_ops, x.numpy(), True, tape=tape)
    grads: dict = {}
    dx = L.backward(tape, numpy_train_ops, dy.numpy(), grads)
    return y, dx, grads


def _objective(layer, state, x, dy, seed=1) -> float:
    arrays = {k: v.numpy().copy() for k, v in state.items()}
    torch.manual_seed(seed)
    return float((L.forward(L.bind([layer], arrays), numpy_train_ops, x.numpy(), True) * dy.numpy()).sum())


@pytest.mark.parametrize("name", list(CASES))
def test_each_layer_backward_equals_autograd(name):
    layer, state, x, dy = _setup(name)
    params = {
        k: v.clone().requires_grad_(k.split(".")[-1] not in ("running_mean", "running_var", "running_std"))
        for k, v in state.items()
    }
    xt = x if x.dtype == torch.int64 else x.clone().requires_grad_(True)
    torch.manual_seed(1)
    y = L.forward(L.bind([layer], params), torch_ops, xt, True)
    (y * dy).sum().backward()
    y_np, dx, grads = _numpy_backward(layer, state, x, dy)
    np.testing.assert_allclose(y_np, y.detach().numpy(), atol=1e-12)  # the same forward, the same dropout mask
    if xt.requires_grad:
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    else:
        assert dx is None  # ids
    trained = {k for k, v in params.items() if v.requires_grad}
    assert set(grads) == trained
    for key in trained:
        np.testing.assert_allclose(grads[key], params[key].grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("name", list(CASES))
def test_each_layer_backward_equals_finite_differences(name):
    """Central differences of sum(y * dy) in float64, entry by entry of the input and of every parameter."""
    layer, state, x, dy = _setup(name)
    _, dx, grads = _numpy_backward(layer, state, x, dy)
    eps = 1e-6
    checks = [(key, state[key], grads[key]) for key in grads]
    if dx is not None:
        checks.append(("x", x, dx))
    for key, tensor, analytic in checks:
        numeric = np.zeros(tensor.shape)
        for i in np.ndindex(*tensor.shape):
            saved = tensor[i].item()
            tensor[i] = saved + eps
            up = _objective(layer, state, x, dy)
            tensor[i] = saved - eps
            down = _objective(layer, state, x, dy)
            tensor[i] = saved
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6, err_msg=key)


def test_batchnorm_backward_by_hand_on_two_values():
    """Two values a < b per channel normalise to -1/sqrt(2), +1/sqrt(2) whatever they are (unbiased var (b-a)^2/2):
    with gamma 1 the output does not move with x, so every input gradient is 0; d loss / d gamma = sum(dy xhat)."""
    layer = L.BatchNorm1d(1, eps=0.0)
    L._rename(layer, "l")
    state = {"l.gamma": np.ones(1), "l.beta": np.zeros(1), "l.running_mean": np.zeros(1), "l.running_var": np.ones(1)}
    tape: list = []
    y = L.forward(L.bind([layer], state), numpy_train_ops, np.array([[1.0], [4.0]]), True, tape=tape)
    np.testing.assert_allclose(y[:, 0], [-(0.5**0.5), 0.5**0.5])
    grads: dict = {}
    dx = L.backward(tape, numpy_train_ops, np.array([[2.0], [3.0]]), grads)
    np.testing.assert_allclose(dx, 0, atol=1e-12)
    np.testing.assert_allclose(grads["l.gamma"], [(3 - 2) * 0.5**0.5])
    np.testing.assert_allclose(grads["l.beta"], [5.0])
    np.testing.assert_allclose(state["l.running_mean"], [0.1 * 2.5])  # momentum 0.1 towards the batch mean


def test_cross_entropy_grad_by_hand_and_at_padding():
    """logits (0, ln 3) against target 1: p = (1/4, 3/4), loss ln(4/3), d/dlogits = (1/4, -1/4); a padded position
    counts nowhere."""
    logits = np.array([[[0.0, np.log(3.0)], [5.0, -5.0]]], dtype=np.float32)
    loss, grad = cross_entropy_grad(logits, np.array([[1, -1]]))
    assert loss == pytest.approx(np.log(4 / 3), abs=1e-6)
    np.testing.assert_allclose(grad, [[[0.25, -0.25], [0.0, 0.0]]], atol=1e-6)
    expected = cross_entropy(torch.from_numpy(logits), torch.tensor([[1, -1]]))
    assert loss == pytest.approx(expected.item(), abs=1e-6)


def _family_net(tmp_path, model: str, block_size: int):
    cfg = compose_cfg(tmp_path, f"model={model}")
    spec = OmegaConf.to_container(cfg.model, resolve=True) | {"vocab_size": 27, "block_size": block_size}
    return build_network(spec).double()


@pytest.mark.parametrize(
    "model,block_size,words",
    [
        ("mlp", 3, False),
        ("bn_mlp", 3, False),
        ("wavenet", 8, False),
        ("bigram", 6, True),
        ("bow", 6, True),
        ("rnn", 6, True),
        ("gru", 6, True),
        ("transformer", 6, True),
        ("mlp_and_transformer", 12, True),
    ],
)
def test_every_familys_backward_equals_autograd(tmp_path, model, block_size, words):
    net = _family_net(tmp_path, model, block_size).train()
    torch.manual_seed(0)
    x = torch.randint(0, 27, (5, block_size))
    y = torch.randint(0, 27, x.shape if words else (5,))
    if words:
        y[0, 3:] = -1  # a short word: padding after its end
    arrays = {k: t.detach().numpy().copy() for k, t in net.state_dict(keep_vars=True).items()}
    torch.manual_seed(1)
    loss = cross_entropy(net(x), y)
    loss.backward()
    torch.manual_seed(1)
    tape: list = []
    logits = L.forward(L.bind(net.stack, arrays), numpy_train_ops, x.numpy(), True, tape=tape)
    hand_loss, dlogits = cross_entropy_grad(logits, y.numpy())
    grads: dict = {}
    L.backward(tape, numpy_train_ops, dlogits, grads)
    assert hand_loss == pytest.approx(loss.item(), abs=1e-9)
    assert set(grads) == {name for name, _ in net.named_parameters()}
    for name, p in net.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)


OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
    "sgd with weight decay": lambda params: torch.optim.SGD(params, lr=0.1, weight_decay=0.01),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, betas=(0.9, 0.99), weight_decay=0.01),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_hand_step_is_autograd_and_the_torch_optimizer(optimizer, dropout):
    """Five updates of the lecture's MLP (dropout drawing the same masks): the same losses, weights and AdamW state."""
    torch.manual_seed(0)
    net = LectureMLP(27, block_size=3, emb_dim=4, hidden_dim=16, num_hidden=2, dropout=dropout, init="scaled")
    reference = copy.deepcopy(net)
    torch_optimizer, hand_optimizer = (
        OPTIMIZERS[optimizer](reference.parameters()),
        OPTIMIZERS[optimizer](net.parameters()),
    )
    assert hand_step.unsupported(net, hand_optimizer) is None
    step = hand_step.HandStep(net, hand_optimizer)
    for i in range(5):
        x, y = torch.randint(0, 27, (8, 3)), torch.randint(0, 27, (8,))
        x[0] = x[1]  # a repeated context: C gets two contributions to the same rows
        torch.manual_seed(100 + i)
        loss = cross_entropy(reference(x), y)
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()
        torch.manual_seed(100 + i)
        assert step(x.numpy(), y.numpy()) == pytest.approx(loss.item(), abs=1e-5)
    for (name, a), b in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)
    for a, b in zip(hand_optimizer.state.values(), torch_optimizer.state.values()):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_the_hand_step_follows_a_loaded_optimizer_state():
    """load_state_dict replaces the optimizer's state (a resume): the next update reads the loaded moments."""
    torch.manual_seed(0)
    net = LectureMLP(27, block_size=3, emb_dim=4, hidden_dim=8)
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.01)
    step = hand_step.HandStep(net, optimizer)
    x, y = torch.randint(0, 27, (8, 3)), torch.randint(0, 27, (8,))
    step(x.numpy(), y.numpy())
    saved, weights = copy.deepcopy(optimizer.state_dict()), copy.deepcopy(net.state_dict())
    step(x.numpy(), y.numpy())
    after_two = copy.deepcopy(net.state_dict())
    net.load_state_dict(weights)
    optimizer.load_state_dict(saved)
    step(x.numpy(), y.numpy())
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, after_two[key], atol=0, rtol=0, msg=key)
    assert [float(s["step"]) for s in optimizer.state.values()] == [2.0] * len(optimizer.state)


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "momentum"),
        (lambda p: torch.optim.Adam(p, lr=0.1), "Adam"),
        (lambda p: torch.optim.AdamW(p, lr=0.1, amsgrad=True), "amsgrad"),
    ],
)
def test_what_the_hand_step_does_not_write_goes_to_autograd(make, reason):
    net = LectureMLP(27)
    assert reason in hand_step.unsupported(net, make(net.parameters()))
    folded = LectureMLP(27, fold_embedding=True)
    assert "fold_embedding" in hand_step.unsupported(folded, torch.optim.SGD(folded.parameters(), lr=0.1))
    assert "float32" in hand_step.unsupported(LectureMLP(27).double(), torch.optim.SGD(net.parameters(), lr=0.1))


def test_families_faster_by_autograd_take_it(tmp_path):
    """The sequence families with attention, recurrent, causal-average or layer-norm layers train by autograd (numpy is
    slower there, README Speed); the bigram, a table, trains by hand."""
    for model, by_hand in (("transformer", False), ("rnn", False), ("bow", False), ("bigram", True)):
        net = _family_net(tmp_path, model, 6).float()
        reason = hand_step.unsupported(net, torch.optim.AdamW(net.parameters(), lr=0.01))
        assert (reason is None) == by_hand, (model, reason)
