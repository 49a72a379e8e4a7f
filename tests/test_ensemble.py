"""experiment=best's ensemble: the windowed embedding (an MLP's context windows at every position of a word), the
ensemble layer (each member trained on its own loss, the average probability predicted), folding inside a member,
torch equal to numpy, and model=mlp_and_transformer trained, resumed, evaluated, scored and sampled."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from charmlp.data.vocab import Vocabulary
from charmlp.data.windows import PAD, build_sequences, build_windows
from charmlp.errors import CharmlpError
from charmlp.model import layers as L
from charmlp.model import numpy_ops, torch_ops
from charmlp.model.network import LayerNet, build_network
from charmlp.sampling.generate import Network
from charmlp.training.config import register_resolvers
from charmlp.training.loss import cross_entropy

from .conftest import ROOT, run_script
from .test_sequence_families import family, trains_resumes_exactly_samples_and_scores

MLP = [{"layer": "linear", "out": 8}, {"layer": "tanh"}, {"layer": "linear"}]


def test_causal_windows_by_hand_in_torch_and_numpy():
    ids = torch.tensor([[0, 1, 2, 3]])
    expected = [[[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]]  # '.' (id 0) before the start
    assert torch_ops.causal_windows(ids, 3).tolist() == expected
    assert numpy_ops.causal_windows(ids.numpy(), 3).tolist() == expected


def test_a_windowed_mlp_on_whole_words_predicts_every_position_as_the_window_mlp_predicts_each_window():
    words = ["emma", "ava", "x"]
    vocab = Vocabulary.from_words(words)
    v = len(vocab)
    windows = L.build([{"layer": "embedding", "dim": 3}, {"layer": "flatten"}, *MLP], v, 4)
    words_net = L.build([{"layer": "embedding", "dim": 3, "window": 4}, *MLP], v, 6)
    torch.manual_seed(0)
    net = LayerNet(windows, 4).eval()
    windows_state = net.state_dict()  # the same numbers: the words stack has no flatten, so its layers number one less
    state = {
        key: windows_state[key.replace("layers.1.", "layers.2.").replace("layers.3.", "layers.4.")]
        for key in [k for layer in L.walk(words_net) for k in layer.keys.values()]
    }
    seq = LayerNet(words_net, 6, values=state).eval()
    X, Y = build_windows(words, vocab, 4)
    Xs, Ys = build_sequences(words, vocab, 6)
    with torch.no_grad():
        per_window, per_position = net(X.long()), seq(Xs.long())
    keep = Ys != PAD  # the same predictions in the same order: word by word, position by position
    assert torch.equal(Ys[keep].long(), Y.long())
    torch.testing.assert_close(per_position[keep], per_window, rtol=0, atol=1e-6)


def ensemble(v: int = 5, block: int = 7) -> list[L.Layer]:
    return L.build(
        [
            {
                "layer": "ensemble",
                "members": [
                    [{"layer": "embedding", "dim": 4, "window": 3}, *MLP],
                    [{"layer": "embedding", "dim": 6}, {"layer": "position"}, {"layer": "layernorm"}, MLP[-1]],
                ],
            }
        ],
        v,
        block,
    )


def test_an_ensemble_predicts_its_members_average_probability_and_trains_each_on_its_own_loss():
    stack = ensemble()
    assert [layer.name for layer in L.walk(stack)][:3] == ["layers.0", "layers.0.0.0", "layers.0.0.1"]
    assert stack[0].members[1][2].keys == {"gamma": "layers.0.1.2.gamma", "beta": "layers.0.1.2.beta"}
    assert L.predicts_every_step(stack, 7) and L.parameter_count(stack) == (5 * 4 + 12 * 8 + 8 + 8 * 5 + 5) + (
        5 * 6 + 7 * 6 + 12 + 6 * 5 + 5
    )
    # two members of known logits: p = (1/2, 1/2) and (1, 0) give the mixture (3/4, 1/4)
    a, b = torch.log(torch.tensor([[0.5, 0.5]])), torch.tensor([[0.0, -1e4]])
    assert torch.exp(stack[0].combine(torch_ops, [a, b], training=False))[0].tolist() == pytest.approx([0.75, 0.25])
    assert np.exp(stack[0].combine(numpy_ops, [a.numpy(), b.numpy()], False))[0].tolist() == pytest.approx([0.75, 0.25])
    stacked = stack[0].combine(torch_ops, [a, b], training=True)
    y = torch.tensor([1])
    assert stacked.shape == (2, 1, 2)  # while training: the members' logits, members first; the loss their mean
    assert float(cross_entropy(stacked, y)) == pytest.approx((math.log(2) + 1e4) / 2)
    with pytest.raises(ValueError, match="reduction='mean' only"):
        cross_entropy(stacked, y, reduction="sum")
    torch.manual_seed(0)
    net = LayerNet(stack, 7)
    x = torch.randint(0, 5, (3, 7), generator=torch.Generator().manual_seed(1))
    net.train()
    assert net(x).shape == (2, 3, 7, 5)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert torch.allclose(out.exp().sum(-1), torch.ones(3, 7))  # log-probabilities: cross_entropy reads them as is
    state = {k: t.numpy() for k, t in net.state_dict().items()}
    np.testing.assert_allclose(L.forward(L.bind(stack, state), numpy_ops, x.numpy()), out.numpy(), rtol=0, atol=2e-6)


def test_folding_a_members_first_layers_is_the_same_function_and_gradient():
    torch.manual_seed(0)
    plain = LayerNet(ensemble(), 7)
    folded = LayerNet(ensemble(), 7, fold_embedding=True)
    folded.load_state_dict(plain.state_dict())
    x = torch.randint(0, 5, (3, 7), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (3, 7), generator=torch.Generator().manual_seed(2))
    for net in (plain, folded):
        cross_entropy(net(x), y).backward()
    for (name, p), q in zip(plain.named_parameters(), folded.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(CharmlpError, match="fold_embedding"):
        LayerNet(
            L.build([{"layer": "embedding", "dim": 6}, {"layer": "position"}, MLP[-1]], 5, 7), 7, fold_embedding=True
        )


@pytest.mark.parametrize(
    ("members", "named"),
    [
        ([MLP], "two or more"),
        (
            [[{"layer": "embedding", "window": 2}, *MLP], [{"layer": "embedding"}, {"layer": "flatten"}, *MLP]],
            "each must end in 5 logits, all of them at the same time steps",
        ),
        ([[{"layer": "linear"}], [{"layer": "embedding"}]], "the first layer must be an embedding"),
    ],
)
def test_an_ensemble_that_cannot_work_says_why(members, named):
    with pytest.raises(CharmlpError, match=named):
        L.build([{"layer": "ensemble", "members": members}], 5, 4)
    with pytest.raises(CharmlpError, match="only be the first layer"):
        L.build([{"layer": "embedding"}, {"layer": "ensemble", "members": [MLP, MLP]}], 5, 4)
    with pytest.raises(CharmlpError, match="window must be a whole number"):
        L.build([{"layer": "embedding", "window": -1}, *MLP], 5, 4)
    with pytest.raises(CharmlpError, match="window=5 is longer than data.block_size=4"):
        L.build([{"layer": "embedding", "window": 5}, *MLP], 5, 4)
    windowed = [{"layer": "embedding", "window": 2}, *MLP]
    with pytest.raises(CharmlpError, match=r"model.layers\[1\]: an ensemble must be the only layer"):
        L.build([{"layer": "ensemble", "members": [windowed, windowed]}, {"layer": "linear"}], 5, 4)
    nested = [{"layer": "ensemble", "members": [windowed, windowed]}]
    with pytest.raises(CharmlpError, match=r"members\[0\]\[0\]: an ensemble can only be the first layer"):
        L.build([{"layer": "ensemble", "members": [nested, windowed]}], 5, 4)


def test_mlp_and_transformer_is_its_members_and_torch_equals_numpy():
    model = family("mlp_and_transformer")
    net = build_network(model).eval()
    mlp = 27 * 32 + 320 * 2048 + 2048 + 2048 * 27 + 27
    assert sum(p.numel() for p in net.parameters()) == mlp + 204_544  # + makemore.py's Transformer, as counted there
    x = torch.randint(0, 27, (4, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x).numpy()
    numpy_net = Network.from_state(model, {k: v.numpy() for k, v in net.state_dict().items()}, vocab_size=27)
    assert numpy_net.sequence
    np.testing.assert_allclose(numpy_net.forward(x.numpy()), expected, rtol=0, atol=2e-5)


def test_experiment_best_trains_resumes_exactly_evaluates_scores_and_samples(tmp_path, names):
    short = ["experiment=best", f"data.path={names}", "trainer.val_check_interval=100", "threads=1"]
    short += ["model.mlp_hidden_dim=64", "model.emb_dim=16", "model.blocks=1"]
    short += ["scheduler=constant"]  # one-cycle's plan is fixed by max_steps: a resume to 300 could not continue it
    trains_resumes_exactly_samples_and_scores(tmp_path, short)


@pytest.mark.parametrize(
    ("experiment", "search"), [("best", "optuna_best"), ("best_mlp", "optuna_best"), ("best", "optuna_best_ensemble")]
)
def test_each_best_search_searches_only_keys_its_experiment_has(experiment, search):
    register_resolvers(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"experiment={experiment}", f"hparams_search={search}"], return_hydra_config=True
        )
    params = dict(cfg.hydra.sweeper.params)
    assert "optimizer.weight_decay" in params and len(params) >= 5
    for key in params:
        assert OmegaConf.select(cfg, key, default="absent") != "absent", key
    assert ("data.block_size" in params) == (cfg.data.mode == "windows")  # whole words take the longest word + 1


def test_the_ensembles_search_runs_finite_trials(tmp_path, names):
    args = [
        "experiment=best",
        "hparams_search=optuna_best_ensemble",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruner=null",
    ]
    args += [f"data.path={names}", "threads=1", "trainer.max_steps=200", "trainer.val_check_interval=100"]
    args += ["model.blocks=1", "model.emb_dim=16", "diagnostics.every=0", "~logger"]
    result = run_script("train.py", "-m", *args, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert len(rows) == 2 and all(row["status"] == "ok" and math.isfinite(float(row["val/loss"])) for row in rows)
    assert all("model.window=" in row["overrides"] and "model.mlp_hidden_dim=" in row["overrides"] for row in rows)
