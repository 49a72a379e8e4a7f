"""Read a torch checkpoint's contents into numpy without importing torch.

`import torch` alone takes about 2 s on a small CPU machine; a name generator should answer before that.
A torch checkpoint is a zip of one pickle plus raw tensor storages: this unpickler rebuilds tensors as
numpy arrays and refuses every class it does not know (as torch's own `weights_only=True` loading does).

Any file may be hostile, so each size it declares is checked against what it really holds before anything
is read or allocated: members must be stored uncompressed (as torch writes them) and fit in the file, a
storage must hold exactly its declared elements, and a tensor must lie inside its storage.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np

# What reading a damaged or hostile file can raise (zipfile, pickle, pickletools, numpy, the checks here);
# callers turn these into one line. Base classes: ValueError covers UnicodeDecodeError, LookupError KeyError
# and IndexError, ArithmeticError OverflowError.
READ_ERRORS = (
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    LookupError,
    AttributeError,
    ArithmeticError,
    MemoryError,
    RecursionError,
    NotImplementedError,
)


class StorageType(NamedTuple):
    """A torch storage class named in the pickle: an inert marker that a pickle can neither call nor change.

    (A tuple: BUILD cannot set its fields, as it could a dataclass's, frozen or not.)
    """

    name: str
    dtype: np.dtype  # how its elements lie in the zip (little-endian)


STORAGE_TYPES = {
    name: StorageType(name, np.dtype(code))
    for name, code in {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "BFloat16Storage": "<u2",  # numpy has no bfloat16: read the bits, widen to float32 (see _read_storage)
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}
SIMPLE_NAME = re.compile(r"\w+", re.ASCII)  # storage keys: torch writes "0", "1", ...; never a path


def _fail(message: str) -> NoReturn:
    raise pickle.UnpicklingError(message)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and value >= 0


class _Unpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str, file_size: int) -> None:
        data = _read_member(archive, f"{prefix}data.pkl", file_size)
        # The C unpickler allocates a bytes or bytearray argument's declared length before reading it, so ten
        # bytes could ask for exabytes. pickletools reads each argument only as far as it is there: walking
        # the opcodes once first refuses a pickle whose lengths lie, and unknown opcodes.
        for _ in pickletools.genops(data):
            pass
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.file_size = archive, prefix, file_size
        self.names = set(archive.namelist())
        self.storages: dict[str, tuple[StorageType, int, np.ndarray]] = {}  # key -> (type, numel, array)
        # Storage elements not yet copied into a tensor. A pickle can rebuild many views of one storage for a
        # few bytes each; this budget keeps all tensors together no larger than the storages in the file.
        # Identical views are copied once and shared (so the arrays are to be read, not written).
        self.unclaimed = 0
        self.tensors: dict[tuple, np.ndarray] = {}  # (storage id, offset, size, stride) -> its copy

    def find_class(self, module: str, name: str) -> Any:
        # Bound methods, not module functions: BUILD could set a function's __defaults__, never a method's.
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch", "Size"): tuple,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("collections", "Counter"): collections.Counter,  # MultiStepLR's milestones
            ("collections", "defaultdict"): collections.defaultdict,
        }
        if module == "torch" and name in STORAGE_TYPES:
            return STORAGE_TYPES[name]
        if (module, name) not in allowed:
            _fail(f"unexpected object {module}.{name}")
        return allowed[module, name]

    def persistent_load(self, pid: Any) -> np.ndarray:
        # torch writes ('storage', torch.FloatStorage, key, location, numel); isinstance before any comparison,
        # so no hostile object's __eq__ runs
        if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[0], str) and pid[0] == "storage"):
            _fail(f"unexpected persistent id {str(pid)[:60]}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, StorageType):
            _fail(f"unknown storage type {str(kind)[:40]}")
        if not (isinstance(key, str) and SIMPLE_NAME.fullmatch(key)) or not _is_count(numel):
            _fail(f"bad storage key {str(key)[:40]} or element count {str(numel)[:40]}")
        if key not in self.storages:
            self.storages[key] = (kind, numel, self._read_storage(kind, key, numel))
            self.unclaimed += numel
        if self.storages[key][:2] != (kind, numel):
            _fail(f"storage {key} is declared twice with different types or sizes")
        return self.storages[key][2]

    def _read_storage(self, kind: StorageType, key: str, numel: int) -> np.ndarray:
        name = f"{self.prefix}data/{key}"
        expected = numel * kind.dtype.itemsize
        if name not in self.names:
            _fail(f"storage {key} is missing")
        if self.archive.getinfo(name).file_size != expected:
            _fail(f"storage {key} does not hold {numel} {kind.name} elements")
        array = np.frombuffer(_read_member(self.archive, name, self.file_size), dtype=kind.dtype)
        if kind.name == "BFloat16Storage":  # bfloat16 is the high half of a float32: shift it back up there
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array  # read-only; tensors are copied out of it

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> np.ndarray:
        if not any(storage is array for _, _, array in self.storages.values()):
            _fail("a tensor is rebuilt from something that is not a storage")
        if not (
            _is_count(offset)
            and isinstance(size, tuple)
            and isinstance(stride, tuple)
            and len(size) == len(stride)
            and all(map(_is_count, size + stride))
        ):
            _fail(f"bad tensor offset, size or stride: {str((offset, size, stride))[:80]}")
        view = (id(storage), offset, size, stride)
        if view not in self.tensors:  # torch may save one view as several tensor objects: copy it once
            self.tensors[view] = self._copy(storage, offset, size, stride)
        return self.tensors[view]

    def _copy(self, storage: np.ndarray, offset: int, size: tuple, stride: tuple) -> np.ndarray:
        numel = math.prod(size)
        # the last element the view reaches, offset + sum((size_i - 1) * stride_i), must be inside the storage
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if numel > storage.size or numel and last >= storage.size:
            _fail(f"a tensor of size {size} and stride {stride} at {offset} lies outside its storage of {storage.size}")
        self.unclaimed -= numel
        if self.unclaimed < 0:
            _fail("the tensors hold more elements than their storages (overlapping views)")
        if not numel:
            return np.zeros(size, dtype=storage.dtype)
        item = storage.itemsize
        return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride]).copy()

    def _rebuild_parameter(self, data: Any, *_: Any) -> Any:
        return data


def _read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A member's bytes, read only if stored uncompressed and no larger than `limit` (the file's size)."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        _fail(f"compressed member {name}: torch writes checkpoints uncompressed")
    if info.file_size != info.compress_size or info.file_size > limit:
        _fail(f"member {name} claims {info.file_size} bytes, more than it can hold")
    return archive.read(info)


def read_checkpoint(path: str | Path) -> Any:
    """The checkpoint's contents (a dict, if torch wrote it), every tensor as a numpy array (any device).

    Raises one of READ_ERRORS for a file it cannot read safely.
    """
    # a hostile pickle's odd strings make Python warn (e.g. invalid escapes); the one error line says enough
    with warnings.catch_warnings(), zipfile.ZipFile(path) as archive:
        warnings.simplefilter("ignore")
        # torch's layout: NAME/data.pkl, NAME/byteorder, NAME/data/0, ...
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            _fail("no data.pkl inside: not a torch checkpoint")
        prefix = pickles[0].removesuffix("data.pkl")
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and _read_member(archive, byteorder, 16) != b"little":
            _fail("big-endian checkpoints are not supported")
        return _Unpickler(archive, prefix, os.path.getsize(path)).load()
