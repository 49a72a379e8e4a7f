"""The layer library: each layer's numbers by hand, and every layer and family equal in torch and numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from charmlp.errors import CharmlpError
from charmlp.model import families, torch_ops
from charmlp.model import layers as L
from charmlp.model.network import LayerNet, build_network
from charmlp.sampling.generate import Network

ROOT = Path(__file__).resolve().parents[1]


def family(name: str, block_size: int, **overrides) -> dict:
    """conf/model/NAME.yaml as the training run gets it (interpolations resolved), for vocabulary 27."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", f"data.block_size={block_size}"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return {**model, **overrides, "vocab_size": 27, "block_size": block_size}


def both_ways(model: dict, x: torch.Tensor, net: L.Layer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the torch network in eval mode and of sample.py's numpy Network from its state."""
    torch.manual_seed(0)
    torch_net = build_network(model).eval()
    with torch.no_grad():  # running statistics away from their initial 0 and 1, so evaluation uses them
        for name, buffer in torch_net.named_buffers():
            buffer.copy_(torch.rand(buffer.shape) + (0.5 if "running_mean" not in name else -0.5))
        expected = torch_net(x).numpy()
    state = {k: v.numpy() for k, v in torch_net.state_dict().items()}
    return expected, Network.from_state(model, state, vocab_size=27).forward(x.numpy())


@pytest.mark.parametrize(
    "name,block_size,count",
    [("mlp", 3, 11_897), ("bn_mlp", 3, 12_097), ("wavenet", 8, 76_579)],  # the lecture's own counts
)
def test_every_family_gives_the_same_logits_in_torch_and_numpy(name, block_size, count):
    # the MLP scaled: N(0, 1) weights give logits near 30, where float32 itself rounds at 2e-6
    model = family(name, block_size, **({"init": "scaled"} if name == "mlp" else {}))
    x = torch.randint(0, 27, (50, block_size), generator=torch.Generator().manual_seed(1))
    expected, got = both_ways(model, x)
    assert got.shape == (50, 27)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert L.parameter_count(families.layers_of(model, 27, block_size)) == count
    assert sum(p.numel() for p in build_network(model).parameters()) == count


LAYER_STACKS = {  # each layer kind at least once, 2-D and 3-D where it takes both
    "embedding+flatten+linear": [{"layer": "embedding", "dim": 3}, {"layer": "flatten"}, {"layer": "linear"}],
    "linear without bias, 3-D": [
        {"layer": "embedding", "dim": 3},
        {"layer": "linear", "out": 5, "bias": False},
        {"layer": "flatten", "n": 4},
        {"layer": "linear"},
    ],
    "batchnorm var 3-D and 2-D": [
        {"layer": "embedding", "dim": 3},
        {"layer": "flatten", "n": 2},
        {"layer": "batchnorm"},
        {"layer": "tanh"},
        {"layer": "flatten", "n": 2},
        {"layer": "batchnorm", "eps": 0.1},
        {"layer": "linear"},
    ],
    "batchnorm std, dropout": [
        {"layer": "embedding", "dim": 3},
        {"layer": "flatten"},
        {"layer": "batchnorm", "spread": "std", "eps": 0.0, "momentum": 0.001},
        {"layer": "dropout", "p": 0.5},
        {"layer": "linear"},
    ],
    "sequence: position, layer norm, attention, residual, gelu": [
        {"layer": "embedding", "dim": 6},
        {"layer": "position"},
        {
            "layer": "residual",
            "body": [
                {"layer": "layernorm"},
                {"layer": "linear", "out": 18, "init": "uniform"},
                {"layer": "attention", "heads": 2},
                {"layer": "linear", "out": 6},
            ],
        },
        {
            "layer": "residual",
            "body": [{"layer": "linear", "out": 8}, {"layer": "gelu"}, {"layer": "linear", "out": 6}],
        },
        {"layer": "layernorm", "eps": 0.01},
        {"layer": "linear", "bias": False},
    ],
    "sequence: rnn, gru, causal average, sigmoid, relu": [
        {"layer": "embedding", "dim": 3, "std": 0.5},
        {"layer": "recurrent", "hidden": 4},
        {"layer": "recurrent", "hidden": 5, "cell": "gru"},
        {"layer": "residual", "body": [{"layer": "causal_average"}]},
        {"layer": "sigmoid"},
        {"layer": "linear", "out": 4},
        {"layer": "relu"},
        {"layer": "linear"},
    ],
    "ensemble of a windowed MLP and a position model": [
        {
            "layer": "ensemble",
            "members": [
                [
                    {"layer": "embedding", "dim": 3, "window": 2},
                    {"layer": "linear", "out": 5},
                    {"layer": "tanh"},
                    {"layer": "linear"},
                ],
                [{"layer": "embedding", "dim": 4}, {"layer": "position"}, {"layer": "linear"}],
            ],
        }
    ],
    "repeat (in place)": [
        {"layer": "embedding", "dim": 3},
        {"layer": "repeat", "times": 2, "body": [{"layer": "flatten", "n": 2}, {"layer": "linear", "out": 4}]},
        {"layer": "linear"},
    ],
}


@pytest.mark.parametrize("stack", LAYER_STACKS.values(), ids=LAYER_STACKS.keys())
def test_every_layer_gives_the_same_numbers_in_torch_and_numpy(stack):
    model = {"layers": stack, "vocab_size": 27, "block_size": 4}
    x = torch.randint(0, 27, (20, 4), generator=torch.Generator().manual_seed(2))
    expected, got = both_ways(model, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_the_tests_cover_every_layer_kind():
    def kinds(specs):
        for spec in specs:
            yield spec["layer"]
            yield from kinds(spec.get("body", []))
            for member in spec.get("members", []):
                yield from kinds(member)

    assert {kind for stack in LAYER_STACKS.values() for kind in kinds(stack)} == set(L.KINDS) | set(L.MACROS)


def test_flatten_consecutive_joins_neighbours():
    x = np.arange(8).reshape(1, 4, 2)  # steps [0 1] [2 3] [4 5] [6 7]
    assert L.FlattenConsecutive(2).forward(np, {}, x).tolist() == [[[0, 1, 2, 3], [4, 5, 6, 7]]]
    assert L.FlattenConsecutive(4).forward(np, {}, x).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]  # one step left: 2-D


def test_batchnorm_part5_by_hand():
    """x = [[1, 2], [3, 6]]: batch mean [2, 4], unbiased var [2, 8]; running stats move by momentum 0.1."""
    bn = L.BatchNorm1d(2, eps=0.0, momentum=0.1)
    p = {k: v.clone() for k, v in bn.init(torch).items()}
    p["gamma"], p["beta"] = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    out = bn.forward(torch_ops, p, torch.tensor([[1.0, 2.0], [3.0, 6.0]]), training=True)
    s = 2**-0.5  # (1 - 2) / sqrt(2), and (2 - 4) / sqrt(8) scaled by 2, plus 1
    assert torch.allclose(out, torch.tensor([[-s, 1 - 2 * s], [s, 1 + 2 * s]]))
    assert p["running_mean"].tolist() == pytest.approx([0.2, 0.4]) and p["running_var"].tolist() == pytest.approx(
        [1.1, 1.7]
    )
    # evaluation: the running statistics, the same in numpy
    arrays = {k: v.numpy() for k, v in p.items()}
    assert bn.forward(np, arrays, np.array([[1.2, 0.4]]))[0] == pytest.approx([(1.2 - 0.2) / 1.1**0.5, 1.0])


def test_batchnorm_3d_takes_statistics_over_batch_and_time():
    bn = L.BatchNorm1d(1, eps=0.0, momentum=1.0)  # momentum 1: the running stats become the batch's
    p = bn.init(torch)
    bn.forward(torch_ops, p, torch.tensor([[[1.0], [2.0]], [[3.0], [6.0]]]), training=True)
    assert p["running_mean"].tolist() == [3.0] and p["running_var"].tolist() == pytest.approx([14 / 3])


def test_batchnorm_part3_is_the_lectures_code():
    """bngain * (h - h.mean(0)) / h.std(0) + bnbias; bnstd_running = 0.999 * bnstd_running + 0.001 * std."""
    h = torch.randn(32, 4, generator=torch.Generator().manual_seed(3))
    bn = L.BatchNorm1d(4, eps=0.0, momentum=0.001, spread="std")
    p = bn.init(torch)
    out = bn.forward(torch_ops, p, h, training=True)
    assert torch.allclose(out, (h - h.mean(0, keepdim=True)) / h.std(0, keepdim=True))
    assert torch.allclose(p["running_std"], 0.999 * torch.ones(4) + 0.001 * h.std(0))
    assert torch.allclose(p["running_mean"], 0.001 * h.mean(0))


def test_linear_init_scales():
    torch.manual_seed(0)
    w = L.Linear(400, 300, gain=0.1).init(torch)["weight"]
    assert abs(float(w.std()) - 0.1 / 20) < 1e-4  # gain / sqrt(fan_in)
    assert L.Linear(10, 5, std=0.01, bias=False).shapes() == {"weight": (10, 5)}


@pytest.mark.parametrize(
    "stack,message",
    [
        ([{"layer": "conv"}], "model.layers[0]: unknown layer 'conv'; known: embedding, flatten"),
        ([{"layer": "linear"}], "model.layers[0]: the first layer must be an embedding"),
        ([{"layer": "embedding", "dim": 2}, {"layer": "flatten", "n": 3}, {"layer": "linear"}], "flatten n=3 needs"),
        ([{"layer": "embedding", "dim": 2}, {"layer": "flatten"}], "the last layer must give 27 logits"),
        (
            [{"layer": "embedding", "dim": 2}, {"layer": "flatten"}, {"layer": "linear", "width": 3}],
            "unexpected keyword",
        ),
        ([{"layer": "embedding", "dim": 2}, {"layer": "batchnorm", "spread": "mad"}], "spread must be var"),
        ([], "model.layers is empty"),
        ([{"layer": "embedding", "dim": 2}, {"layer": "flatten", "n": 0}], "sizes must be positive integers"),
        ([{"layer": "embedding", "dim": -2}, {"layer": "flatten"}], "sizes must be positive integers"),
        (
            [{"layer": "embedding", "dim": 2}, {"layer": "flatten"}, {"layer": "linear", "out": 2.5}],
            "positive integers",
        ),
    ],
)
def test_a_wrong_layer_list_is_one_line(stack, message):
    with pytest.raises(CharmlpError, match=None) as err:
        L.build(stack, 27, 4)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_layer_net_names_its_state_as_the_checkpoint_does():
    net = LayerNet(L.build(LAYER_STACKS["batchnorm std, dropout"], 27, 4), block_size=4)
    assert list(net.state_dict()) == [
        "layers.0.weight",
        "layers.2.gamma",
        "layers.2.beta",
        "layers.2.running_mean",
        "layers.2.running_std",
        "layers.4.weight",
        "layers.4.bias",
    ]
    assert [name for name, _ in net.named_buffers()] == ["layers.2.running_mean", "layers.2.running_std"]


@pytest.mark.parametrize(
    "model,message",
    [
        ({"layers": "embedding", "block_size": 2}, "unknown layer 'e'"),
        ({"layers": [{"layer": "embedding", "dim": 2}, {"layer": "flatten"}, {"layer": "linear"}]}, "block_size"),
        ({"layers": LAYER_STACKS["batchnorm std, dropout"], "block_size": 4}, "layers.0.weight is missing"),
        ({"block_size": 2}, "the model config does not describe a network"),  # an MLP without its sizes
    ],
)
def test_a_checkpoints_model_config_is_checked_before_use(model, message):
    """sample.py reads the layer list from the checkpoint, which may be any file: one CharmlpError line."""
    with pytest.raises(CharmlpError) as err:
        Network.from_state(model, {}, vocab_size=27)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_batchnorm_refuses_a_batch_of_one():
    """One value per channel has no variance (n - 1 = 0): say so rather than train on NaN."""
    bn = L.BatchNorm1d(2)
    with pytest.raises(CharmlpError, match=r"data.batch_size >= 2"):
        bn.forward(torch_ops, bn.init(torch), torch.ones(1, 2), training=True)


@pytest.mark.parametrize(("name", "block_size"), [("mlp", 3), ("bn_mlp", 3), ("wavenet", 8)])
def test_folded_embedding_gives_the_plain_numbers_and_gradients(name, block_size):
    """model.fold_embedding: the first linear layer as per-position table lookups, the same function."""
    model = family(name, block_size, **({"init": "scaled"} if name == "mlp" else {}))
    x = torch.randint(0, 27, (64, block_size), generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 27, (64,), generator=torch.Generator().manual_seed(3))
    results = []
    for fold in (False, True):
        torch.manual_seed(0)
        net = build_network({**model, "fold_embedding": fold})  # training mode: batch statistics
        loss = torch.nn.functional.cross_entropy(net(x), y)
        results.append(
            (
                net(x).detach(),
                dict(zip(dict(net.named_parameters()), torch.autograd.grad(loss, list(net.parameters())))),
            )
        )
    (plain, plain_grads), (folded, folded_grads) = results
    torch.testing.assert_close(folded, plain, rtol=0, atol=1e-5)
    for key, grad in plain_grads.items():
        torch.testing.assert_close(folded_grads[key], grad, rtol=1e-4, atol=1e-6)


def test_a_fold_of_what_does_not_start_embedding_flatten_linear_is_refused():
    stack = L.build(
        [{"layer": "embedding", "dim": 3}, {"layer": "tanh"}, {"layer": "flatten"}, {"layer": "linear"}], 27, 2
    )
    with pytest.raises(CharmlpError, match="fold_embedding"):
        LayerNet(stack, 2, fold_embedding=True)
