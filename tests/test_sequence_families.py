"""makemore.py's sequence families on the layer library: their layers by hand, torch equal to numpy, makemore.py's
parameter counts, causality, the whole-word data, and each family trained, resumed, sampled and scored."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from charmlp.data.batches import MinibatchSampler, SplitBatches
from charmlp.data.vocab import Vocabulary
from charmlp.data.windows import PAD, build_sequences
from charmlp.errors import CharmlpError
from charmlp.model import families, numpy_ops, torch_ops
from charmlp.model import layers as L
from charmlp.model.network import build_network
from charmlp.sampling.checkpoint import load_trained
from charmlp.sampling.generate import Network, score
from charmlp.training.config import register_resolvers
from charmlp.training.evaluate import evaluate_checkpoint
from charmlp.training.loss import cross_entropy
from charmlp.training.run import run

from .conftest import ROOT, compose_cfg, run_script

SEQUENCE = ("bigram", "bow", "rnn", "gru", "transformer")
# makemore.py's printed counts on names.txt (27 characters, block 16): "number of parameters" of each model
MAKEMORE_COUNTS = {"bigram": 729, "bow": 12_827, "rnn": 11_803, "gru": 28_315, "transformer": 204_544}


def family(name: str, block_size: int = 16) -> dict:
    register_resolvers(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    return {**OmegaConf.to_container(cfg.model, resolve=True), "vocab_size": 27, "block_size": block_size}


@pytest.mark.parametrize("name", SEQUENCE)
def test_makemore_parameter_counts_and_torch_equals_numpy(name):
    model = family(name)
    torch.manual_seed(0)
    net = build_network(model).eval()
    with torch.no_grad():  # the bigram starts at zeros: give every parameter a value
        for p in net.parameters():
            p.add_(torch.randn(p.shape) * 0.3)
    assert sum(p.numel() for p in net.parameters()) == MAKEMORE_COUNTS[name]
    assert L.parameter_count(families.layers_of(model, 27, 16)) == MAKEMORE_COUNTS[name]
    x = torch.randint(0, 27, (6, 11), generator=torch.Generator().manual_seed(1))  # shorter than the block
    with torch.no_grad():
        expected = net(x).numpy()
    numpy_net = Network.from_state(model, {k: v.numpy() for k, v in net.state_dict().items()}, vocab_size=27)
    assert numpy_net.sequence and expected.shape == (6, 11, 27)
    np.testing.assert_allclose(numpy_net.forward(x.numpy()), expected, rtol=0, atol=2e-5)


def test_transformer_without_its_output_layer_is_makemores_020m():
    net = build_network(family("transformer"))
    assert sum(p.numel() for n, p in net.named_parameters() if not n.startswith("layers.11.")) == 202_816


@pytest.mark.parametrize("name", SEQUENCE)
def test_no_position_sees_the_future(name):
    torch.manual_seed(0)
    net = build_network(family(name)).eval()
    x = torch.randint(1, 27, (3, 10), generator=torch.Generator().manual_seed(2))
    changed = x.clone()
    changed[:, 6:] = (changed[:, 6:] + 5) % 26 + 1
    with torch.no_grad():
        a, b = net(x), net(changed)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert name == "bigram" or not torch.allclose(a[:, 6:], b[:, 6:])


def test_rnn_and_gru_cells_by_hand():
    # one channel in, one hidden unit: h1 = tanh(w_x x1 + w_h h0 + b)
    rnn = L.Recurrent(1, 1, "rnn")
    p = {"start": torch.tensor([0.5]), "weight": torch.tensor([[2.0], [-1.0]]), "bias": torch.tensor([0.1])}
    h = rnn.forward(torch_ops, p, torch.tensor([[[1.0], [0.0]]]))
    h1 = math.tanh(2.0 - 0.5 + 0.1)
    assert h[0, :, 0].tolist() == pytest.approx([h1, math.tanh(-h1 + 0.1)], abs=1e-6)
    # GRU, gates z, r, hbar side by side: z = sig(x + h), r = sig(0), hbar = tanh(x + r h), h' = h + z (hbar - h)
    gru = L.Recurrent(1, 1, "gru")
    p = {
        "start": torch.tensor([0.5]),
        "weight": torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]]),
        "bias": torch.zeros(3),
    }
    h = gru.forward(torch_ops, p, torch.tensor([[[1.0]]]))
    z, r = 1 / (1 + math.exp(-1.5)), 0.5
    hbar = math.tanh(1.0 + r * 0.5)
    assert float(h[0, 0, 0]) == pytest.approx(0.5 + z * (hbar - 0.5), abs=1e-6)


def test_attention_layernorm_and_causal_average_by_hand():
    x = torch.tensor([[[1.0, 3.0], [3.0, 5.0]]])
    assert L.CausalAverage().forward(torch_ops, {}, x).tolist() == [[[1.0, 3.0], [2.0, 4.0]]]
    ln = L.LayerNorm(2, eps=0.0).forward(torch_ops, {"gamma": torch.ones(2), "beta": torch.zeros(2)}, x)
    assert ln.tolist() == [[[-1.0, 1.0], [-1.0, 1.0]]]
    # one head of one channel: q = k = 1, v = (10, 20): position 0 sees only itself, position 1 both equally
    qkv = torch.tensor([[[1.0, 1.0, 10.0], [1.0, 1.0, 20.0]]])
    out = L.Attention(1, heads=1).forward(torch_ops, {}, qkv)
    assert out[0, :, 0].tolist() == pytest.approx([10.0, 15.0])
    np.testing.assert_allclose(L.Attention(1, heads=1).forward(numpy_ops, {}, qkv.numpy()), out.numpy(), atol=1e-6)


def test_numpy_ops_equal_torch_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g) * 3
    gamma, beta = torch.randn(8, generator=g), torch.randn(8, generator=g)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    pairs = [
        (torch_ops.gelu(x), numpy_ops.gelu(x.numpy())),
        (torch.sigmoid(x), numpy_ops.sigmoid(x.numpy())),
        (
            torch_ops.layer_norm(x, gamma, beta, 1e-5),
            numpy_ops.layer_norm(x.numpy(), gamma.numpy(), beta.numpy(), 1e-5),
        ),
        (torch_ops.causal_mean(x), numpy_ops.causal_mean(x.numpy())),
        (torch_ops.causal_attention(q, k, v), numpy_ops.causal_attention(q.numpy(), k.numpy(), v.numpy())),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(theirs, ours.numpy(), rtol=0, atol=2e-5)


def test_whole_words_as_makemore_builds_them():
    vocab = Vocabulary.from_words(["ab", "b"])
    X, Y = build_sequences(["ab", "b"], vocab, block_size=4)
    assert X.tolist() == [[0, 1, 2, 0], [0, 2, 0, 0]]
    assert Y.tolist() == [[1, 2, 0, PAD], [2, 0, PAD, PAD]]
    with pytest.raises(CharmlpError, match="data.block_size=3"):
        build_sequences(["abab"], vocab, block_size=3)  # 4 characters + the end token need 5


def test_word_batches_are_cut_to_their_longest_word_and_eval_batches_count_predictions():
    vocab = Vocabulary.from_words(["a", "aaaa"])
    X, Y = build_sequences(["a", "aaaa"], vocab, block_size=8)
    xs, ys = MinibatchSampler(X, Y, batch_size=1, generator=torch.Generator().manual_seed(0)).draw(6)
    assert {tuple(y.shape) for y in ys} <= {(1, 2), (1, 5)} and len(xs) == 6
    assert all(int((y == PAD).sum()) == 0 for y in ys)
    assert SplitBatches(X, Y, batch_size=16).batch_size == 2  # 16 predictions' worth of 8-step words


def test_word_loss_is_nats_per_character_the_end_token_included():
    logits = torch.zeros(1, 3, 4)  # uniform over 4: ln 4 per prediction, padding not counted
    y = torch.tensor([[1, 0, PAD]])
    assert float(cross_entropy(logits, y)) == pytest.approx(math.log(4))
    assert float(cross_entropy(logits, y, reduction="sum")) == pytest.approx(2 * math.log(4))


def test_the_mode_must_fit_the_family(tmp_path):
    with pytest.raises(CharmlpError, match="data.mode=words, not data.mode=windows"):
        run(compose_cfg(tmp_path, "model=rnn", "data.mode=windows", "data.block_size=16", "trainer.max_steps=100"))
    with pytest.raises(CharmlpError, match="data.mode=windows, not data.mode=words"):
        run(compose_cfg(tmp_path, "model=mlp", "data.mode=words", "data.block_size=16", "trainer.max_steps=100"))


@pytest.mark.parametrize("name", SEQUENCE)
def test_every_family_trains_resumes_exactly_samples_and_scores(tmp_path, name, names):
    short = [f"experiment=makemore_{name}", f"data.path={names}", "trainer.val_check_interval=100", "model.emb_dim=16"]
    short = [s for s in short if name != "bigram" or "emb_dim" not in s]
    short += ["model.blocks=1"] if name == "transformer" else []
    trains_resumes_exactly_samples_and_scores(tmp_path, short)


def trains_resumes_exactly_samples_and_scores(tmp_path, short: list[str]) -> None:
    """300 updates straight equal 150 resumed to 300; sample.py's scores, eval.py and the run agree; prefix samples."""
    straight = run(compose_cfg(tmp_path / "a", "trainer.max_steps=300", *short))
    run(compose_cfg(tmp_path / "b", "trainer.max_steps=150", *short))
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    resumed = run(compose_cfg(tmp_path / "c", "trainer.max_steps=300", f"ckpt_path={last}", *short))
    assert resumed == straight < math.log(27)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["val/loss_unseen"] >= metrics["val/loss"] - 0.05 and metrics["val/words_unseen"] > 0
    ckpt = tmp_path / "a" / "checkpoints" / "best.ckpt"
    # sample.py's scores of the val words are the evaluation's exact loss (best.ckpt is the val-scored one)
    trained = load_trained(str(ckpt))
    scored = score(trained.net, trained.vocab, trained.words["val"])
    assert sum(s for s, _ in scored) / sum(c for _, c in scored) == pytest.approx(metrics["val/loss"], abs=1e-4)
    assert evaluate_checkpoint(str(ckpt))["val/loss"] == pytest.approx(metrics["val/loss"], abs=1e-6)  # eval.py's
    names = run_script("sample.py", f"ckpt={ckpt}", "n=20", "seed=0", "prefix=ma")
    assert names.returncode == 0, names.stderr
    assert len(names.stdout.splitlines()) == 20 and all(n.startswith("ma") for n in names.stdout.splitlines())


def test_a_word_longer_than_the_block_is_scored_as_generation_reads_it():
    torch.manual_seed(0)
    model = family("rnn", block_size=4)
    net = build_network(model).eval()
    numpy_net = Network.from_state(model, {k: v.numpy() for k, v in net.state_dict().items()}, vocab_size=27)
    vocab = Vocabulary.from_words(["abcdefghijklmnopqrstuvwxyz"])
    (long_nll, count), (short_nll, _) = score(numpy_net, vocab, ["abcdef", "abc"])
    assert count == 7 and long_nll > short_nll > 0
    ids = [0, 1, 2, 3, 4, 5, 6]  # '.abcdef': past 4 ids, each prediction sees the last 4
    by_hand = 0.0
    for t, target in enumerate([1, 2, 3, 4, 5, 6, 0]):
        logits = numpy_net.logits(np.array([ids[max(0, t - 3) : t + 1]]))[0].astype(np.float64)
        by_hand -= logits[target] - np.log(np.exp(logits).sum())
    assert long_nll == pytest.approx(by_hand, abs=1e-6)


PART5_WAVENET = [  # part 5's model written out, as conf/model/wavenet.yaml listed it before its levels were counted
    {"layer": "embedding", "dim": 24},
    *[
        spec
        for _ in range(3)
        for spec in (
            {"layer": "flatten", "n": 2},
            {"layer": "linear", "out": 128, "bias": False},
            {"layer": "batchnorm"},
            {"layer": "tanh"},
            {"layer": "dropout", "p": 0.0},
        )
    ],
    {"layer": "linear", "gain": 0.1},
]


def test_wavenet_levels_follow_the_block_size_and_keep_part5s_state_names():
    counted = families.layers_of(family("wavenet", 8), 27, 8)
    written = L.build(PART5_WAVENET, 27, 8)
    assert [(type(a), a.keys, a.name) for a in counted] == [(type(b), b.keys, b.name) for b in written]
    torch.manual_seed(0)
    a = build_network(family("wavenet", 8)).state_dict()
    torch.manual_seed(0)
    b = build_network({"layers": PART5_WAVENET, "vocab_size": 27, "block_size": 8}).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # old checkpoints load as they were
    # block 16: four levels; 24*27 + 48*128 + 3 * 256*128 + 4 * 256 (batch norm) + 128*27 + 27, counted by hand
    assert L.parameter_count(families.layers_of(family("wavenet", 16), 27, 16)) == 109_603


@pytest.mark.parametrize(
    "block_size,levels,named",
    [(6, None, "data.block_size must be a power of two"), (16, 3, "set data.block_size=8"), (3, None, "model.levels")],
)
def test_a_wavenet_that_cannot_work_names_the_key_to_set(block_size, levels, named):
    model = {**family("wavenet", block_size), "levels": levels}
    model["layers"][1]["times"] = levels
    with pytest.raises(CharmlpError, match=named):
        families.layers_of(model, 27, block_size)


def test_model_wavenet_alone_takes_part5s_block_of_8(tmp_path):
    assert compose_cfg(tmp_path, "model=wavenet").data.block_size == 8
    assert compose_cfg(tmp_path, "model=wavenet", "data.block_size=16").data.block_size == 16
    assert compose_cfg(tmp_path, "model=mlp").data.block_size == 3


@pytest.mark.parametrize("name", ["mlp", "bn_mlp", "wavenet", *SEQUENCE, "mlp_and_transformer"])
def test_the_default_optuna_search_has_only_keys_the_family_has(tmp_path, name):
    register_resolvers(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna", f"model={name}"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    assert "optimizer.lr" in params and "data.batch_size" in params
    for key, space in params.items():
        assert OmegaConf.select(cfg, key, default="absent") != "absent", key
        if key == "data.block_size":  # searched only where the family takes a window's block size
            assert cfg.data.mode == "windows"
            if name == "wavenet":
                assert space == "choice(4, 8, 16)"


@pytest.mark.parametrize("name", ["transformer"])  # the sequence layers at once; gru, rnn: their runs above
def test_a_sequence_family_under_ddp_ends_equal_on_both_ranks_and_resumes(tmp_path, name, names):
    args = [f"data.path={names}", f"experiment=makemore_{name}", "model.emb_dim=16", "trainer.val_check_interval=100"]
    args += ["threads=1", "diagnostics.every=70"] + (["model.blocks=1"] if name == "transformer" else [])
    result = run_script("train.py", *args, "trainer=ddp", "trainer.max_steps=200", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "weights equal on 2 ranks" in result.stderr
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert run(compose_cfg(tmp_path / "b", *args, "trainer.max_steps=300", f"ckpt_path={last}")) < math.log(27)
