import torch

from charmlp.data.batches import MinibatchSampler
from charmlp.training.datamodule import NamesDataModule

from .conftest import ROOT


def test_setup_builds_vocab_split_and_windows(tiny_words):
    dm = NamesDataModule(str(tiny_words), block_size=2, batch_size=4)
    dm.setup()
    assert dm.vocab.itos[0] == "." and len(dm.vocab) == 1 + len(set("".join(tiny_words.read_text().split())))
    sizes = {k: len(v) for k, v in dm.words.items()}
    assert sizes == {"train": 9, "val": 1, "test": 2, "val_unseen": 1, "test_unseen": 2}  # 12 words: int(9.6)=9
    for name, words in dm.words.items():
        X, Y = dm.windows[name]
        assert len(Y) == sum(len(w) + 1 for w in words) and X.shape[1] == 2


def test_bundled_data_split_sizes():
    dm = NamesDataModule(str(ROOT / "data" / "names.txt"))
    dm.setup()
    assert [len(dm.words[k]) for k in ("train", "val", "test")] == [25975, 3247, 3247]
    assert len(dm.vocab) == 27


def test_minibatches_are_fresh_draws_of_batch_size():
    X = torch.arange(100, dtype=torch.uint8).view(50, 2)
    Y = torch.arange(50, dtype=torch.uint8)
    sampler = MinibatchSampler(X, Y, batch_size=8, generator=torch.Generator().manual_seed(0))
    xs, ys = sampler.draw(3)
    assert xs.shape == (3, 8, 2) and ys.shape == (3, 8) and xs.dtype == torch.int64
    assert torch.equal(xs[:, :, 0], 2 * ys)  # each context travels with its own target
    assert not torch.equal(ys[0], ys[1])


def test_one_draw_of_n_equals_n_draws_of_one():
    """Chunked drawing is an optimisation only: the same minibatches in the same order."""
    X, Y = torch.zeros(1000, 3, dtype=torch.uint8), torch.arange(1000) % 256
    a = MinibatchSampler(X, Y.to(torch.uint8), 32, torch.Generator().manual_seed(5))
    b = MinibatchSampler(X, Y.to(torch.uint8), 32, torch.Generator().manual_seed(5))
    ys_a = a.draw(10)[1]
    ys_b = torch.cat([b.draw(1)[1] for _ in range(4)] + [b.draw(6)[1]])
    assert torch.equal(ys_a, ys_b)


def test_state_dict_carries_generator_vocab_and_words(tiny_words):
    dm = NamesDataModule(str(tiny_words))
    dm.setup()
    loader = iter(dm.train_dataloader())
    sampler = next(loader)
    state = dm.state_dict()
    after = sampler.draw(2)[1]
    dm.load_state_dict(state)
    assert torch.equal(sampler.draw(2)[1], after)
    assert state["vocab"] == dm.vocab.to_dict()
    assert state["words"]["train"].split("\n") == dm.words["train"]


def test_generator_from_another_device_type_reseeds_by_step(tiny_words, caplog):
    """A GPU checkpoint's generator state (16 bytes of Philox seed/offset) cannot become a CPU generator's:
    resume draws a new sequence, the same one each time for the same seed and step, and says so."""
    cuda_like_state = torch.zeros(16, dtype=torch.uint8)

    def first_draw() -> torch.Tensor:
        dm = NamesDataModule(str(tiny_words))
        dm.setup()
        dm.load_state_dict({"generator": cuda_like_state})
        return next(iter(dm.train_dataloader())).draw(3)[1]

    with caplog.at_level("WARNING", logger="charmlp"):
        a, b = first_draw(), first_draw()
    assert torch.equal(a, b)
    fresh = NamesDataModule(str(tiny_words))
    fresh.setup()
    assert not torch.equal(a, next(iter(fresh.train_dataloader())).draw(3)[1])  # not the run's first minibatches
    assert "another device type than cpu" in caplog.text
