"""The torch-free checkpoint reader on real, damaged and hostile files: it samples or raises one CharmlpError.

Hostile files are torch-style zips around hand-written pickle opcodes; real ones come from torch.save of a
tiny dict shaped like a charmlp checkpoint (vocabulary '.ab', block_size 2, embedding 2, 4 hidden units).
"""

from __future__ import annotations

import io
import pickle
import random
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from charmlp.errors import CharmlpError
from charmlp.sampling.checkpoint import load_trained
from charmlp.sampling.ckpt_reader import STORAGE_TYPES, read_checkpoint
from charmlp.sampling.generate import generate

from .conftest import run_script

P2 = b"\x80\x02"
ONE_FLOAT = struct.pack("<f", 1.0)
MARK = Path("/tmp/charmlp-test-ckpt-reader-PWNED")  # no file may ever create it


def tiny_checkpoint(dtype: torch.dtype = torch.float32, changes: dict | None = None) -> dict:
    """A dict shaped like what train.py saves, small enough to check by hand."""
    state = {
        "mlp.C": torch.arange(6.0).reshape(3, 2) / 10,
        "mlp.W1": torch.arange(16.0).reshape(4, 4) / 10 - 0.8,
        "mlp.b1": torch.tensor([0.1, -0.1, 3.14159, 0.0]),
        "mlp.W2": torch.arange(12.0).reshape(4, 3) / 10 - 0.6,
        "mlp.b2": torch.tensor([0.5, 0.0, -0.5]),
    }
    ckpt = {
        "epoch": 0,
        "state_dict": {k: v.to(dtype) for k, v in state.items()},
        "hyper_parameters": {
            "model": {"emb_dim": 2, "hidden_dim": 4, "block_size": 2},
            "vocab": {"itos": [".", "a", "b"]},
        },
        "NamesDataModule": {"words": {"train": "ab\nba\naab", "val": "b", "test": ""}},
    }
    for path, value in (changes or {}).items():  # {"hyper_parameters/model/block_size": 0} sets, None deletes
        *parents, last = path.split("/")
        target = ckpt
        for key in parents:
            target = target[key]
        target[last] = value
        if value is None:
            del target[last]
    return ckpt


def save(tmp_path: Path, obj: object, name: str = "x.ckpt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tmp_path_factory.mktemp("real"), tiny_checkpoint(), "real.ckpt")


# ---- hand-made pickles in a torch-style zip (as torch writes it: every member stored) ----


def zipped(pkl: bytes, members: dict[str, bytes] | None = None, byteorder: bytes = b"little") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", byteorder)
        for name, data in (members or {}).items():
            z.writestr(name, data)
    return out.getvalue()


def text(x: str) -> bytes:
    return b"X" + struct.pack("<I", len(x.encode())) + x.encode()  # BINUNICODE


def num(v: object) -> bytes:
    return pickle.dumps(v, 2)[2:-1]


def pid(key: str = "0", storage: str = "FloatStorage", numel: int = 1) -> bytes:
    """The persistent id torch writes for a storage, then BINPERSID."""
    return (
        b"(" + text("storage") + b"ctorch\n" + storage.encode() + b"\n" + text(key) + text("cpu") + num(numel) + b"tQ"
    )


def tensor(size: tuple, stride: tuple, offset: object = 0, storage: bytes | None = None) -> bytes:
    """_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()) without PROTO or STOP."""
    args = (storage or pid()) + num(offset) + num(size) + num(stride) + b"\x89ccollections\nOrderedDict\n)R"
    return b"ctorch._utils\n_rebuild_tensor_v2\n(" + args + b"tR"


def one_tensor(size: tuple, stride: tuple, offset: object = 0, data: bytes = ONE_FLOAT, **pid_args: object) -> bytes:
    return zipped(P2 + tensor(size, stride, offset, pid(**pid_args)) + b".", {"archive/data/0": data})


def bomb(member: str) -> bytes:
    """4 MB of zeros, deflated to a few kB: declared as it really is, so only the compression is wrong."""
    pkl = P2 + tensor((1,), (1,), storage=pid(numel=1 << 20)) + b"."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pkl, compress_type=zipfile.ZIP_DEFLATED if member == "data.pkl" else None)
        z.writestr("archive/data/0", bytes(4 << 20), compress_type=zipfile.ZIP_DEFLATED)
    assert len(out.getvalue()) < 100_000
    return out.getvalue()


def claims_more_than_it_holds() -> bytes:
    """A stored storage whose central-directory entry says 1 GiB (its declared numel agrees): a 1 GiB read."""
    data = bytearray(one_tensor((1,), (1,), numel=1 << 28))
    entry = data.rindex(b"PK\x01\x02")  # the last central-directory entry is archive/data/0
    data[entry + 20 : entry + 28] = struct.pack("<II", 1 << 30, 1 << 30)  # its compressed and plain sizes
    return bytes(data)


# a (2,) view and a (1,) view of one 2-element storage: 3 elements copied out of 2
OVERLAPPING = P2 + b"(" + tensor((2,), (1,), storage=pid(numel=2) + b"q\x01") + tensor((1,), (1,), 1, b"h\x01") + b"l."

HOSTILE = {
    "global os.system": (
        zipped(P2 + b"cos\nsystem\n" + text(f"touch {MARK}") + b"\x85R."),
        "unexpected object os.system",
    ),
    "global posix.system": (zipped(P2 + b"cposix\nsystem\n" + text(f"touch {MARK}") + b"\x85R."), "posix.system"),
    "stack_global eval": (
        zipped(b"\x80\x04" + text("builtins") + text("eval") + b"\x93" + text(f"open('{MARK}', 'w')") + b"\x85R."),
        "unexpected object builtins.eval",
    ),
    "OrderedDict(1)": (zipped(P2 + b"ccollections\nOrderedDict\nK\x01\x85R."), "'int' object is not iterable"),
    "rebuild on a str": (
        zipped(P2 + b"ctorch._utils\n_rebuild_tensor_v2\n(" + text("abc") + b"K\x00K\x01\x85K\x01\x85tR."),
        "a tensor is rebuilt from something that is not a storage",
    ),
    "stride-0 giant view": (one_tensor((10**6, 10**6), (0, 0)), "lies outside its storage of 1"),
    "view bigger than storage": (one_tensor((1 << 22,), (1,)), "size (4194304,) and stride (1,) at 0 lies outside"),
    "stride 2^40": (one_tensor((4,), (1 << 40,)), "lies outside its storage"),
    "negative stride": (one_tensor((3,), (-(1 << 30),)), "bad tensor offset, size or stride"),
    "offset past the end": (one_tensor((1,), (1,), offset=1), "at 1 lies outside its storage of 1"),
    "last element past the end": (one_tensor((2,), (1,), data=bytes(8), offset=1, numel=2), "lies outside"),
    "negative offset": (one_tensor((1,), (1,), offset=-1), "bad tensor offset"),
    "str offset": (one_tensor((1,), (1,), offset="0"), "bad tensor offset"),
    "size and stride differ in length": (one_tensor((1, 1), (1,)), "bad tensor offset"),
    "numel lie": (one_tensor((1,), (1,), numel=2), "storage 0 does not hold 2 FloatStorage elements"),
    "huge numel": (one_tensor((1,), (1,), numel=10**15), "does not hold 1000000000000000"),
    "negative numel": (one_tensor((1,), (1,), numel=-1), "bad storage key"),
    "object dtype in the pid": (
        zipped(
            P2 + b"((" + text("storage") + text("O") + text("0") + text("cpu") + b"K\x01tQ.",
            {"archive/data/0": bytes(8)},
        ),
        "unknown storage type O",
    ),
    "storage type not in the list": (one_tensor((1,), (1,), storage="ComplexFloatStorage"), "ComplexFloatStorage"),
    "pid of 4 fields": (zipped(P2 + b"(" + text("storage") + text("0") + text("cpu") + b"K\x01tQ."), "persistent id"),
    "pid a str": (zipped(P2 + text("storage") + b"Q."), "unexpected persistent id storage"),
    "storage key with a path": (one_tensor((1,), (1,), key="../0"), "bad storage key ../0"),
    "storage missing": (zipped(P2 + tensor((1,), (1,)) + b"."), "storage 0 is missing"),
    "storage declared twice": (
        zipped(P2 + pid() + pid(storage="IntStorage") + b"l.", {"archive/data/0": ONE_FLOAT}),
        "storage 0 is declared twice",
    ),
    "overlapping views": (zipped(OVERLAPPING, {"archive/data/0": bytes(8)}), "more elements than their storages"),
    "compressed storage bomb": (
        bomb("data/0"),
        "compressed member archive/data/0: torch writes checkpoints uncompressed",
    ),
    "compressed data.pkl": (bomb("data.pkl"), "compressed member archive/data.pkl"),
    "storage larger than the file": (claims_more_than_it_holds(), "claims 1073741824 bytes"),
    "BUILD on a storage type": (
        zipped(P2 + b"ctorch\nFloatStorage\nN}" + text("dtype") + text("O") + b"s\x86b."),
        "can't set attribute",
    ),
    "BUILD on _rebuild_tensor_v2": (
        zipped(P2 + b"ctorch._utils\n_rebuild_tensor_v2\nN}" + text("__defaults__") + b"K\x01\x85s\x86b."),
        "__defaults__",
    ),
    "bytearray8 of 2^62 bytes": (
        zipped(P2 + b"\x96" + struct.pack("<Q", 1 << 62) + b"x."),
        "expected 4611686018427387904 bytes in a bytearray8, but only 2 remain",
    ),
    "bytes of 4 GiB": (zipped(b"\x80\x03B" + struct.pack("<I", 2**32 - 1) + b"x."), "expected 4294967295 bytes"),
    "unknown opcode": (zipped(P2 + b"\xff."), "opcode b'\\xff' unknown"),
    "big-endian": (zipped(P2 + b"}.", byteorder=b"big"), "big-endian"),
    "no data.pkl": (zipped(P2 + b"}.").replace(b"data.pkl", b"data.pkX"), "no data.pkl inside"),
    "data.pkl outside a folder": (zipped(P2 + b"}.").replace(b"archive/", b"../../x/"), "no data.pkl inside"),
    "truncated zip": (one_tensor((1,), (1,))[:-10], "File is not a zip file"),
    "truncated pickle": (zipped(P2 + b"}(" + text("a")), "pickle exhausted before seeing STOP"),
    "not a zip": (b"garbage\n", "File is not a zip file"),
    "not a dict": (zipped(P2 + b"K\x05."), "the checkpoint is not a dict but int"),
    "a list": (zipped(P2 + b"]."), "the checkpoint is not a dict but list"),
    "empty dict": (zipped(P2 + b"}."), "the checkpoint has no 'hyper_parameters'"),
}


@pytest.mark.parametrize("content,message", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_file_is_one_charmlp_error(tmp_path, content, message):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(content)
    with pytest.raises(CharmlpError, match="not a (readable )?charmlp checkpoint") as err:
        load_trained(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not MARK.exists()
    assert STORAGE_TYPES["FloatStorage"].dtype == np.float32  # no pickle changed the shared markers


def test_a_pickle_that_makes_python_warn_gives_no_warning(tmp_path):
    path = tmp_path / "escape.ckpt"
    path.write_bytes(zipped(b"S'\\q'\n."))  # protocol 0 string with an invalid escape: a DeprecationWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CharmlpError, match="the checkpoint is not a dict but str"):
            load_trained(path)
    assert caught == []


def test_a_bad_crc_is_refused(real_ckpt, tmp_path):
    data = bytearray(real_ckpt.read_bytes())
    data[data.index(struct.pack("<f", 0.5))] ^= 1  # b2[0], inside storage data
    (tmp_path / "flip.ckpt").write_bytes(data)
    with pytest.raises(CharmlpError, match="Bad CRC-32"):
        load_trained(tmp_path / "flip.ckpt")


WRONG = {
    "W1 rows": (
        {"state_dict/mlp.W1": torch.zeros(5, 4)},
        "W1 has shape (5, 4); the model config needs (4, 4)",
    ),
    "b1 length": ({"state_dict/mlp.b1": torch.zeros(3)}, "b1 has shape (3,); the model config needs (4,)"),
    "W2 rows": (
        {"state_dict/mlp.W2": torch.zeros(5, 3)},
        "W2 has shape (5, 3); the model config needs (4, 3)",
    ),
    "output columns": (
        {"state_dict/mlp.W2": torch.zeros(4, 4), "state_dict/mlp.b2": torch.zeros(4)},
        "W2 has shape (4, 4); the model config needs (4, 3)",
    ),
    "C rows": ({"state_dict/mlp.C": torch.zeros(4, 2)}, "C has shape (4, 2); the model config needs (3, 2)"),
    "C a vector": ({"state_dict/mlp.C": torch.zeros(6)}, "C has shape (6,); the model config needs (3, 2)"),
    "no W2": ({"state_dict/mlp.W2": None, "state_dict/mlp.W3": torch.zeros(4, 3)}, "W2 is missing or not a float"),
    "no b1": ({"state_dict/mlp.b1": None}, "b1 is missing or not a float tensor"),
    "no state_dict": ({"state_dict": None}, "the checkpoint has no 'state_dict'"),
    "no layer": ({"state_dict": {"mlp.C": torch.zeros(3, 2)}}, "W1 is missing"),
    "integer weights": (
        {"state_dict/mlp.b2": torch.zeros(3, dtype=torch.int64)},
        "b2 is missing or not a float tensor",
    ),
    "a list as weights": ({"state_dict/mlp.b2": [0.0, 0.0, 0.0]}, "b2 is missing or not a float tensor"),
    "NaN weights": ({"state_dict/mlp.b2": torch.tensor([0.0, float("nan"), 0.0])}, "b2 holds NaN or infinite values"),
    "block_size 0": ({"hyper_parameters/model/block_size": 0}, "block_size must be a positive integer, got 0"),
    "block_size str": ({"hyper_parameters/model/block_size": "2"}, "block_size must be a positive integer"),
    "block_size too big": (
        {"hyper_parameters/model/block_size": 3},
        "W1 has shape (4, 4); the model config needs (6, 4)",
    ),
    "no block_size": ({"hyper_parameters/model": {}}, "block_size must be a positive integer, got None"),
    "itos without '.'": ({"hyper_parameters/vocab": {"itos": ["a", "b", "c"]}}, "must start with '.'"),
    "itos repeats": ({"hyper_parameters/vocab": {"itos": [".", "a", "a"]}}, "lists a character twice"),
    "itos of words": ({"hyper_parameters/vocab": {"itos": [".", "ab", "c"]}}, "list of one-character strings"),
    "itos a str": ({"hyper_parameters/vocab": {"itos": ".ab"}}, "list of one-character strings"),
    "vocab a list": ({"hyper_parameters/vocab": [".", "a", "b"]}, "list of one-character strings"),
    "words not str": ({"NamesDataModule": {"words": {"train": ["ab"]}}}, "must map split names to strings"),
    "state_dict a list": ({"state_dict": []}, "state_dict is not a dict but list"),
}


@pytest.mark.parametrize("changes,message", WRONG.values(), ids=WRONG.keys())
def test_wrong_contents_name_the_mismatch(tmp_path, changes, message):
    path = save(tmp_path, tiny_checkpoint(changes=changes))
    with pytest.raises(CharmlpError) as err:
        load_trained(path)
    assert str(err.value).startswith(f"{path} is ") and message in str(err.value) and "\n" not in str(err.value)


def test_views_read_their_elements(tmp_path):
    # storage 0 holds 0..5: the (3, 2) view with strides (1, 3) is its transpose, [[0, 3], [1, 4], [2, 5]];
    # storage 1 holds 0..5 too: the (2,) view at offset 1 with stride 2 is [1, 3], the 0-d view at 5 is 5
    transposed = tensor((3, 2), (1, 3), storage=pid(numel=6))
    strided = tensor((2,), (2,), 1, storage=pid("1", numel=6) + b"q\x01")
    scalar = tensor((), (), 5, b"h\x01")
    arange = np.arange(6, dtype="<f4").tobytes()
    path = tmp_path / "views.ckpt"
    path.write_bytes(
        zipped(P2 + b"(" + transposed + strided + scalar + b"l.", {"archive/data/0": arange, "archive/data/1": arange})
    )
    transposed, strided, scalar = read_checkpoint(path)
    assert transposed.tolist() == [[0, 3], [1, 4], [2, 5]] and strided.tolist() == [1, 3] and scalar.tolist() == 5
    assert transposed.dtype == np.float32 and transposed.flags.writeable


def test_torch_views_read_as_torch_wrote_them(tmp_path):
    base, other = torch.arange(6.0).reshape(2, 3), torch.arange(6.0).reshape(2, 3)
    path = save(tmp_path, {"t": base.t(), "row": other[1], "empty": torch.zeros(0, 4), "again": [base.t(), base.t()]})
    ckpt = read_checkpoint(path)
    assert ckpt["t"].tolist() == [[0, 3], [1, 4], [2, 5]] and ckpt["row"].tolist() == [3, 4, 5]
    assert ckpt["empty"].shape == (0, 4)
    assert ckpt["again"][0] is ckpt["again"][1] is ckpt["t"]  # three tensor objects, one view: copied once


def test_overlapping_views_are_refused(tmp_path):
    # they would let a few pickle bytes copy one storage again and again; a charmlp checkpoint has none
    base = torch.arange(6.0)
    with pytest.raises(CharmlpError, match="more elements than their storages"):
        load_trained(save(tmp_path, {"all": base, "tail": base[3:]}))


def test_fp32_checkpoint_keeps_its_numbers(real_ckpt):
    trained = load_trained(real_ckpt)
    expected = tiny_checkpoint()["state_dict"]
    assert trained.net.state["C"].dtype == np.float32 and np.array_equal(
        trained.net.state["C"], expected["mlp.C"].numpy()
    )
    assert np.array_equal(trained.net.state["b1"], expected["mlp.b1"].numpy())
    assert trained.words == {"train": ["ab", "ba", "aab"], "val": ["b"], "test": []}
    assert trained.vocab.itos == (".", "a", "b") and trained.net.block_size == 2


@pytest.mark.parametrize(
    "dtype,b1",
    [
        # bf16 keeps float32's top 16 bits, rounded to nearest: 0.1 = 0x3DCCCCCD -> 0x3DCD = 0.10009765625,
        # pi-ish 3.14159 = 0x40490FD0 -> 0x4049 = 3.140625
        (torch.bfloat16, [0.10009765625, -0.10009765625, 3.140625, 0.0]),
        # fp16: 0.1 -> 1638/16384 = 0.0999755859375; 3.14159 -> 3.140625 (1608/512)
        (torch.float16, [0.0999755859375, -0.0999755859375, 3.140625, 0.0]),
    ],
)
def test_half_precision_checkpoints_sample_as_float32(tmp_path, dtype, b1):
    trained = load_trained(save(tmp_path, tiny_checkpoint(dtype)))
    assert trained.net.state["b1"].dtype == np.float32 and trained.net.state["b1"].tolist() == b1
    assert np.allclose(trained.net.state["C"], [[0, 0.1], [0.2, 0.3], [0.4, 0.5]], rtol=0, atol=2e-3)
    samples = generate(trained.net, trained.vocab, 5, np.random.default_rng(0))
    assert len(samples) == 5 and all(set(s.name) <= {"a", "b"} for s in samples)


def test_bf16_checkpoint_samples_from_the_command_line(tmp_path):
    path = save(tmp_path, tiny_checkpoint(torch.bfloat16))
    result = run_script("sample.py", f"ckpt={path}", "n=3", "max_len=8")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(result.stdout.splitlines()) == 3


def test_hostile_file_from_the_command_line_is_one_line(tmp_path):
    path = tmp_path / "bomb.ckpt"
    path.write_bytes(bomb("data/0"))
    result = run_script("sample.py", f"ckpt={path}", "n=2")
    assert result.returncode == 2 and result.stdout == ""
    assert (
        result.stderr == f"error: {path} is not a readable charmlp checkpoint (compressed member archive/data/0: "
        "torch writes checkpoints uncompressed)\n"
    )


def rezip(original: Path, mutate_member: str, mutate: Callable[[bytes], bytes]) -> bytes:
    """The checkpoint with one member's bytes changed and its CRC fixed, so the damage reaches the reader."""
    out = io.BytesIO()
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, mutate(data) if info.filename.endswith(mutate_member) else data)
    return out.getvalue()


def test_fuzzed_checkpoints_load_and_sample_or_raise_charmlp_error(real_ckpt, tmp_path):
    rng = random.Random(0)
    original = real_ckpt.read_bytes()

    def damage(data: bytes) -> bytes:
        data = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 8])):
            kind, at = rng.random(), rng.randrange(len(data))
            if kind < 0.6:
                data[at] = rng.randrange(256)
            elif kind < 0.8:
                del data[at:]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
            if not data:
                break
        return bytes(data)

    outcomes = {"loaded": 0, "refused": 0}
    for case in range(240):
        if case < 80:  # raw bytes: mostly the zip's own checks
            content = damage(original)
        else:  # the pickle or a storage, behind a valid CRC
            member = "data.pkl" if case < 200 else f"data/{rng.randrange(5)}"
            content = rezip(real_ckpt, member, damage)
        path = tmp_path / f"fuzz{case}.ckpt"
        path.write_bytes(content)
        try:
            trained = load_trained(path)
        except CharmlpError as err:
            assert "\n" not in str(err)
            outcomes["refused"] += 1
            continue
        samples = generate(trained.net, trained.vocab, 4, np.random.default_rng(case), max_len=10)
        assert len(samples) == 4 and all(isinstance(s.name, str) for s in samples)
        outcomes["loaded"] += 1
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 0, outcomes
