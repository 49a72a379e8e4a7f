"""Read a torch checkpoint's contents into numpy without importing torch.

`import torch` alone takes about 2 s on a small CPU machine; a name generator should answer before that.
A torch checkpoint is a zip of one pickle plus raw tensor storages: this unpickler rebuilds tensors as
numpy arrays and refuses every class it does not know (as torch's own `weights_only=True` loading does).
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    if not size:
        return storage[offset].copy()
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride])
    return view.copy()


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if module == "collections" and name in ("OrderedDict", "Counter", "defaultdict"):
            return getattr(collections, name)  # Counter: MultiStepLR's milestones
        if module == "torch" and name == "Size":
            return tuple
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        _, dtype, key, _location, _numel = pid
        raw = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(raw, dtype=dtype)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dict, every tensor as a numpy array (on whatever device it was saved)."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise pickle.UnpicklingError("no data.pkl inside: not a torch checkpoint")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder) != b"little":
            raise pickle.UnpicklingError("big-endian checkpoints are not supported")
        with archive.open(pickles[0]) as f:
            return _Unpickler(f, archive, prefix).load()
