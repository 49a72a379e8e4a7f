"""The family registry (charmlp.model.families): one place decides a config's family, validates and builds its
layers, and names its torch class, for training and sampling alike."""

from __future__ import annotations

import re

import pytest

from charmlp.errors import CharmlpError
from charmlp.model import families
from charmlp.model.layers import parameter_count
from charmlp.model.lecture import LectureMLP
from charmlp.model.network import LayerNet, build_network
from charmlp.sampling.generate import Network

MLP = {"emb_dim": 10, "hidden_dim": 200, "num_hidden": 1, "dropout": 0.0, "init": "normal", "fold_embedding": False}
BN = {"emb_dim": 10, "layers": [{"layer": "embedding", "dim": 10}, {"layer": "flatten"}, {"layer": "linear", "out": 4}]}
BN["layers"] += [{"layer": "batchnorm"}, {"layer": "tanh"}, {"layer": "linear"}]


def test_a_config_names_its_family_by_its_shape():
    assert families.family_of(MLP).name == "mlp"
    assert families.family_of(BN).name == "layers"
    assert families.family_of({}).name == "mlp"  # the oldest checkpoints' model config: the lecture's keys only


def test_the_lectures_layers_keep_its_names_and_count():
    layers = families.layers_of(MLP, vocab_size=27, block_size=3)
    keys = [key for layer in layers for key in layer.keys.values()]
    assert keys == ["C", "W1", "b1", "W2", "b2"]
    assert parameter_count(layers) == 27 * 10 + 30 * 200 + 200 + 200 * 27 + 27 == 11_897


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_dim": 0}, "model.hidden_dim must be at least 1, got 0"),
        ({"dropout": 1.0}, "model.dropout must be in [0, 1), got 1.0"),
        ({"init": "xavier"}, "model.init must be 'normal'"),
    ],
)
def test_a_bad_value_is_refused_by_the_registry_for_training_and_sampling(change, message):
    model = {**MLP, **change, "vocab_size": 27, "block_size": 3}
    for build in (lambda: families.layers_of(model, 27, 3), lambda: build_network(model)):
        with pytest.raises(CharmlpError, match=re.escape(message)):
            build()


@pytest.mark.parametrize(("model", "network"), [(MLP, LectureMLP), (BN, LayerNet)])
def test_training_and_sampling_build_the_same_layers(model, network):
    model = {**model, "vocab_size": 27, "block_size": 3}
    net = build_network(model)
    assert type(net) is network
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    assert list(Network.from_state(model, state, vocab_size=27).layers) == net.stack
