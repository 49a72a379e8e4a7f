"""The network's health in TensorBoard: readings checked by hand, no change to training, tags over real HTTP."""

import contextlib
import json
import math
import re
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import torch

from charmlp.model.lecture import LectureMLP
from charmlp.training.diagnostics import Diagnostics
from charmlp.training.report import knobs
from charmlp.training.run import run

from .conftest import compose_cfg, run_script

SMALL = ["trainer.val_check_interval=100", "updates_per_step=50"]
LOSSES = ("train/loss", "val/loss", "test/loss")


@pytest.mark.parametrize(
    ("every", "first", "todo", "index"),
    [(1000, 0, 100, None), (1000, 900, 100, 99), (1000, 999, 1, 0), (30, 0, 100, 29), (0, 0, 100, None)],
)
def test_the_reading_falls_on_every_multiple_of_every(every, first, todo, index):
    assert Diagnostics(every=every).due(first, todo) == index  # updates first+1 .. first+todo


def tiny_mlp() -> LectureMLP:
    """One character of context, one embedding number, two tanh units: h = tanh(10 c, c / 2)."""
    net = LectureMLP(vocab_size=3, block_size=1, emb_dim=1, hidden_dim=2)
    with torch.no_grad():
        net.C.copy_(torch.tensor([[0.0], [1.0], [-1.0]]))
        net.W1.copy_(torch.tensor([[10.0, 0.5]]))
        net.b1.zero_()
        net.W2.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, -0.5, 0.0]]))
        net.b2.zero_()
    return net


def test_a_reading_by_hand():
    """Examples c=1 and c=-1: h1 = [[tanh 10, tanh 0.5], [-tanh 10, -tanh 0.5]], so unit 0 is saturated for
    both (dead) and unit 1 never; the update is SGD's -0.1 x grad."""
    net, x, y = tiny_mlp(), torch.tensor([[1], [2]]), torch.tensor([0, 2])
    diagnostics = Diagnostics(every=1, map_examples=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with diagnostics.around(net, x, y, step=1, context=contextlib.nullcontext()):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        grads = dict(zip(("C", "W1", "b1", "W2", "b2"), torch.autograd.grad(loss, list(net.parameters()))))
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.sub_(0.1 * grads[name])
    s = diagnostics.last.scalars
    t, u = math.tanh(10), math.tanh(0.5)
    assert s["diag/act_mean/h1"] == pytest.approx(0.0, abs=1e-7)
    assert s["diag/act_std/h1"] == pytest.approx(math.sqrt((2 * t * t + 2 * u * u) / 3))  # unbiased: t, u, -t, -u
    assert s["diag/saturation/h1"] == 0.5
    assert s["diag/dead_units/h1"] == 1
    assert diagnostics.last.maps["diag/saturation_map/h1"].tolist() == [[255, 0]]  # one example asked for
    for name in ("C", "W1", "W2"):
        assert s[f"diag/grad_data/{name}"] == pytest.approx(float(grads[name].std() / before[name].std()), rel=1e-6)
        after = net.state_dict()[name]
        expected = math.log10(float((0.1 * grads[name]).std() / after.std()))
        assert s[f"diag/update_data/{name}"] == pytest.approx(expected, rel=1e-5)
    norm = math.sqrt(sum(float(g.square().sum()) for g in grads.values()))
    assert s["diag/grad_norm"] == pytest.approx(norm, rel=1e-6)
    assert s["diag/guide/update_data"] == -3


def test_a_reading_leaves_the_generator_grads_and_running_statistics_alone():
    from charmlp.model.network import build_network

    torch.manual_seed(0)
    net = build_network(
        {
            "layers": [
                {"layer": "embedding", "dim": 4},
                {"layer": "flatten"},
                {"layer": "linear", "out": 8, "bias": False},
                {"layer": "batchnorm"},
                {"layer": "tanh"},
                {"layer": "dropout", "p": 0.5},
                {"layer": "linear"},
            ],
            "vocab_size": 5,
            "block_size": 2,
        }
    )
    x, y = torch.randint(0, 5, (16, 2)), torch.randint(0, 5, (16,))
    state, rng = {k: v.clone() for k, v in net.state_dict().items()}, torch.get_rng_state()
    with Diagnostics(every=1).around(net, x, y, step=1, context=contextlib.nullcontext()):
        assert torch.equal(torch.get_rng_state(), rng)  # the real update draws the same dropout mask
        for name, value in net.state_dict().items():
            assert torch.equal(value, state[name]), name  # running mean and variance put back
        assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize(
    "extra",
    [
        [],  # the lecture's MLP on the hand-written update
        ["experiment=lecture_bn", "model.hidden_dim=32", "model.dropout=0.2", "optimizer=adamw"],  # autograd
    ],
)
def test_training_is_bit_identical_with_diagnostics_on_and_off(tmp_path, extra):
    args = ["trainer.max_steps=300", *SMALL, *extra]
    run(compose_cfg(tmp_path / "on", *args, "diagnostics.every=70"))  # readings inside Lightning steps
    run(compose_cfg(tmp_path / "off", *args, "diagnostics.every=0"))
    on, off = (torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True) for d in ("on", "off"))
    for name, weights in on["state_dict"].items():
        assert torch.equal(weights, off["state_dict"][name]), name
    losses = [[json.loads((tmp_path / d / "metrics.json").read_text())[k] for k in LOSSES] for d in ("on", "off")]
    assert losses[0] == losses[1]
    tag = "diag/update_data/" + ("layers.6.weight" if extra else "W2")  # the output layer's weights
    assert [step for step, _ in on["loss_history"][tag]] == [70, 140, 210, 280]
    assert (tmp_path / "on" / "diagnostics.png").exists() and not (tmp_path / "off" / "diagnostics.png").exists()


def test_hparams_are_the_knobs_and_what_the_command_line_set(tmp_path):
    cfg = compose_cfg(tmp_path, "experiment=best_mlp", "threads=2", "trainer.precision=bf16-mixed")
    params = knobs(
        cfg, {"experiment": "best_mlp", "model": "mlp", "optimizer": "adamw"}, ["threads=2", "paths.log_dir=x"]
    )
    assert params["experiment"] == "best_mlp" and params["optimizer"] == "adamw"
    assert params["model.hidden_dim"] == 2048 and params["optimizer.weight_decay"] == 0.01
    assert params["threads"] == 2 and params["trainer.max_steps"] == 20000
    assert "trainer.precision" not in params  # set, but not on this (stand-in) command line
    assert not [k for k in params if "_target_" in k or k.startswith(("paths.", "hydra.", "callbacks."))]
    assert len(params) <= 30


def test_bad_diagnostics_values_get_one_line(tmp_path):
    for arg, words in (("diagnostics.every=-5", "diagnostics.every"), ("+diagnostics.colour=1", "diagnostics")):
        result = run_script("train.py", arg, f"hydra.run.dir={tmp_path / 'r'}")
        assert result.returncode == 2, result.stderr[-500:]
        assert words in result.stderr and "Traceback" not in result.stderr


def get(url: str, body: bytes | None = None) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_real_tensorboard_serves_every_kind_of_tag(tmp_path):
    """tensorboard itself, on a loopback port, loading the run before it serves (blocking reload): what a
    browser's requests get back."""
    result = run_script(
        "train.py", "trainer.max_steps=200", "diagnostics.every=100", *SMALL, f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host", "127.0.0.1", "--port", "0"]
        + ["--load_fast", "false", "--reload_task", "blocking", "--reload_interval", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in server.stderr:  # "TensorBoard 2.x at http://127.0.0.1:PORT/" once it serves
            if found := re.search(r"http://127\.0\.0\.1:\d+", line):
                break
        else:
            pytest.fail("tensorboard did not start")
        url, run_name = found.group(0), "run/tensorboard"
        scalars = get(f"{url}/data/plugin/scalars/tags")[run_name]
        assert {"diag/saturation/h1", "diag/act_std/h1", "diag/grad_data/W1", "diag/update_data/W1"} <= set(scalars)
        assert {"diag/activations/h1", "diag/act_grads/h1"} <= set(get(f"{url}/data/plugin/histograms/tags")[run_name])
        assert "diag/saturation_map/h1" in get(f"{url}/data/plugin/images/tags")[run_name]
        layout = get(f"{url}/data/plugin/custom_scalars/layout")
        charts = {tag for c in layout["category"] for chart in c["chart"] for tag in chart["multiline"]["tag"]}
        assert {r"diag/saturation/.*", r"diag/act_std/.*", r"diag/grad_data/.*", r"diag/update_data/.*"} <= charts
        first = layout["category"][0]["chart"][0]  # the tab opens on the loss: train and val on one chart
        assert layout["category"][0]["title"] == "loss" and first["multiline"]["tag"] == ["train/loss", "val/loss"]
        experiment = get(f"{url}/data/plugin/hparams/experiment", b'{"experimentName": ""}')
        names = {h["name"] for h in experiment["hparamInfos"]}
        assert {"model.hidden_dim", "optimizer.lr", "trainer.max_steps", "seed"} <= names and len(names) <= 30
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} == {"val/loss", "test/loss", "train/loss"}
    finally:
        server.kill()
        server.wait()


def test_saturation_map_is_white_where_saturated():
    net = tiny_mlp()
    diagnostics = Diagnostics(every=1)
    with diagnostics.around(net, torch.tensor([[0], [1], [2]]), torch.tensor([0, 0, 0]), 1, contextlib.nullcontext()):
        pass
    assert np.array_equal(diagnostics.last.maps["diag/saturation_map/h1"], [[0, 0], [255, 0], [255, 0]])


def test_training_keeps_tensorflow_out_of_the_process():
    """Where TensorFlow is installed, TensorBoard's writer would load it (a quarter slower training); the entry
    switches TensorBoard to its stub, which this checks holds (it fails only on a machine with TensorFlow)."""
    code = (
        "from charmlp.training.entry import tensorboard_without_tensorflow; tensorboard_without_tensorflow(); "
        "import sys, torch.utils.tensorboard; from tensorboard.compat import tf; "
        "print(tf.__name__, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["tensorboard.compat.tensorflow_stub", "False"]


def test_a_diverging_run_still_ends_with_its_nan_message(tmp_path):
    """NaN weights from update 3 on: the readings of updates 4-50 skip the NaNs in their histograms, and the run
    stops with the NaN message after its Lightning step (no histogram traceback)."""
    args = ["optimizer=adamw", "optimizer.lr=1e30", "trainer.max_steps=200", "diagnostics.every=1", *SMALL]
    result = run_script("train.py", *args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert "the training loss became nan at update 3" in result.stderr
