"""Saving and loading the rows a replay buffer holds (not its capacity), checked on the way back in.

A save writes, per leaf of the storage, one raw file with the filled rows along the storage's first
dim, and ``manifest.json`` with each file's dtype, shape, byte count and CRC-32, the storage's fill
(``len``), write cursor and shape, and the writer's and sampler's state (``state.pt``). The cost of
a save grows with the data, not with ``replay.size``. It is generic over the storage shape
(``ndim=1`` or ``(capacity / envs, envs)``) and over memmap or in-memory storages.

Rows are rewritten whole, not appended: the loop writes fresh latents back into old rows.
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDictBase

from ..durable import CheckpointError

__all__ = ["save_replay", "load_replay", "save_replay_rows", "load_replay_rows", "replay_feature_spec"]

MANIFEST = "manifest.json"
STATE = "state.pt"
FORMAT = 1


def _filled_rows(storage) -> int:
    """Rows along the storage's first dim that hold data (all of them once it has wrapped)."""
    if not storage.initialized:
        return 0
    shape = storage._storage.shape
    width = shape[1:storage.ndim].numel()
    return min(shape[0], -(-len(storage) // width))


def _file_name(key) -> str:
    return (".".join(key) if isinstance(key, tuple) else key) + ".bin"


def _as_bytes(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def save_replay_rows(replay, directory: str | os.PathLike) -> dict:
    """Writes the replay's filled rows into ``directory`` (created); returns the manifest. No fsync: the
    caller syncs the checkpoint it belongs to."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    storage = replay.storage
    rows = _filled_rows(storage)
    manifest = {"format": FORMAT, "len": len(storage), "rows": rows, "ndim": storage.ndim,
                "storage_shape": list(storage._storage.shape) if storage.initialized else None, "entries": {}}
    if rows:
        data = storage._storage[:rows]
        for key, tensor in data.items(include_nested=True, leaves_only=True):
            raw = _as_bytes(tensor)
            name = _file_name(key)
            raw.tofile(directory / name)
            manifest["entries"][name] = {"key": list(key) if isinstance(key, tuple) else [key],
                                         "dtype": str(tensor.dtype).removeprefix("torch."),
                                         "shape": list(tensor.shape), "nbytes": int(raw.nbytes),
                                         "crc32": zlib.crc32(raw)}
    torch.save({"last_cursor": getattr(storage, "_last_cursor", None), "writer": replay._writer.state_dict(),
                "sampler": replay._sampler.state_dict()}, directory / STATE)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def replay_feature_spec(reference, batch_dims: int | None = None) -> dict:
    """``{key: (feature shape, dtype)}`` from a TensorDict or a TorchRL ``Composite`` spec whose first
    ``batch_dims`` dims (default: its batch dims) are batch dims; :func:`load_replay_rows` checks against it."""
    if batch_dims is None:
        batch_dims = len(reference.shape)
    out = {}
    for key in reference.keys(include_nested=True, leaves_only=True):
        leaf = reference[key]
        out[key if isinstance(key, tuple) else (key,)] = (tuple(leaf.shape[batch_dims:]), leaf.dtype)
    return out


def _read_entry(path: Path, entry: dict) -> torch.Tensor:
    if not path.is_file():
        raise CheckpointError(f"replay file {path} is missing (listed in {MANIFEST})")
    size = path.stat().st_size
    if size != entry["nbytes"]:
        raise CheckpointError(f"replay file {path} has {size} bytes, expected {entry['nbytes']} "
                              f"({entry['dtype']} {entry['shape']}): it is truncated or was overwritten")
    raw = np.fromfile(path, dtype=np.uint8)
    if zlib.crc32(raw) != entry["crc32"]:
        raise CheckpointError(f"replay file {path} fails its checksum (CRC-32): its content is damaged")
    dtype = getattr(torch, entry["dtype"])
    return torch.from_numpy(raw).view(dtype).reshape(entry["shape"])


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the replay in {directory} is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is damaged ({err})") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown replay format {manifest.get('format')!r} (expected {FORMAT})")
    return manifest


def _check_counts(manifest: dict, directory: Path, expected_len: int | None, storage) -> None:
    if expected_len is not None:
        capacity = storage.max_size if manifest["storage_shape"] is None else int(np.prod(manifest["storage_shape"]))
        if manifest["len"] != min(expected_len, capacity):
            raise CheckpointError(f"replay in {directory} holds {manifest['len']} rows but the checkpoint's counters "
                                  f"say {min(expected_len, capacity)} (env steps {expected_len}, capacity {capacity})")
    if manifest["storage_shape"] is None:
        return
    saved = torch.Size(manifest["storage_shape"])
    if storage.ndim != manifest["ndim"] or (storage.initialized and storage._storage.shape != saved):
        now = tuple(storage._storage.shape) if storage.initialized else f"ndim={storage.ndim}"
        raise CheckpointError(f"replay in {directory} was saved from a storage of shape {tuple(saved)} "
                              f"(ndim={manifest['ndim']}); this run's storage is {now}: replay.size or run.envs differ")


def _check_features(tensors: dict, manifest: dict, directory: Path, spec: dict | None) -> None:
    rows, ndim = manifest["rows"], manifest["ndim"]
    batch = (rows, *manifest["storage_shape"][1:ndim])
    for name, tensor in tensors.items():
        if tuple(tensor.shape[:ndim]) != batch:
            raise CheckpointError(f"replay file {directory / name}: batch shape {tuple(tensor.shape[:ndim])}, "
                                  f"expected {batch}")
    if spec is None:
        return
    spec = {key if isinstance(key, tuple) else (key,): value for key, value in spec.items()}
    by_key = {tuple(manifest["entries"][n]["key"]): (n, t) for n, t in tensors.items()}
    if by_key and not set(spec) & set(by_key):
        raise CheckpointError(f"replay in {directory} shares no key with the expected spec "
                              f"(saved {sorted(by_key)}, expected {sorted(spec)})")
    for key, (shape, dtype) in spec.items():
        if key in by_key:
            name, tensor = by_key[key]
            got = (tuple(tensor.shape[ndim:]), tensor.dtype)
            if got != (tuple(shape), dtype):
                raise CheckpointError(f"replay file {directory / name} holds {got[1]} {got[0]} per row, "
                                      f"expected {dtype} {tuple(shape)} for {key}")


def load_replay_rows(replay, directory: str | os.PathLike, *, expected_len: int | None = None,
                     spec: dict | None = None) -> int:
    """Restores what :func:`save_replay_rows` wrote; returns the rows restored (``len(replay)``).

    Everything is checked before the buffer is touched: the manifest, each file's size and checksum,
    ``expected_len`` (the env steps the checkpoint counted; the replay must hold ``min(steps, capacity)``),
    the storage shape, and, given ``spec`` (:func:`replay_feature_spec`), each key's per-row shape and dtype.
    Raises :class:`CheckpointError` naming the file and what was expected.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    storage = replay.storage
    _check_counts(manifest, directory, expected_len, storage)
    tensors = {name: _read_entry(directory / name, entry) for name, entry in manifest["entries"].items()}
    if tensors:
        _check_features(tensors, manifest, directory, spec)
    try:
        extra = torch.load(directory / STATE, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise CheckpointError(f"replay state {directory / STATE} cannot be read ({type(err).__name__}: {err})") from None
    if manifest["rows"]:
        from tensordict import TensorDict

        rows = TensorDict({tuple(manifest["entries"][n]["key"]): t for n, t in tensors.items()},
                          batch_size=tensors[next(iter(tensors))].shape[:manifest["ndim"]])
        if not storage.initialized:
            storage._init(rows[0])
        _check_counts(manifest, directory, None, storage)  # the shape this run's capacity gives
        target = storage._storage
        if isinstance(target, TensorDictBase):
            target[: manifest["rows"]].update_(rows)
        storage._len = manifest["len"]
        if extra["last_cursor"] is not None:  # the sampler reads the data end from it
            setter = getattr(storage, "_set_last_cursor", None)
            setter(extra["last_cursor"]) if setter else setattr(storage, "_last_cursor", extra["last_cursor"])
        if hasattr(storage, "_bump_mutation_revision"):  # samplers cache per revision
            storage._bump_mutation_revision()
    replay._writer.load_state_dict(extra["writer"])
    replay._sampler.load_state_dict(extra["sampler"])
    return len(replay)


def _members(replay) -> list | None:
    """The per-stream buffers of an ensemble replay (``replay_buffer.StreamReplay``), else None."""
    return list(replay._rbs) if hasattr(replay, "_rbs") else None


def save_replay(replay, directory: str | os.PathLike) -> dict:
    """:func:`save_replay_rows` for one buffer, or for each stream of an ensemble in ``stream_<i>/`` beside
    a manifest of the whole (``len``: rows summed over streams)."""
    members = _members(replay)
    if members is None:
        return save_replay_rows(replay, directory)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lens = [save_replay_rows(m, directory / f"stream_{i}")["len"] for i, m in enumerate(members)]
    manifest = {"format": FORMAT, "len": sum(lens), "streams": len(members)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def load_replay(replay, directory: str | os.PathLike, *, expected_len: int | None = None,
                spec=None) -> int:
    """:func:`load_replay_rows` for one buffer or every stream of an ensemble; streams step together, so
    each must hold ``expected_len / streams`` env steps. ``spec``: a :func:`replay_feature_spec` dict, or
    the TensorDict (or TorchRL spec) it is read from, its batch dims leading."""
    if spec is not None and not isinstance(spec, dict):
        spec = replay_feature_spec(spec)
    members = _members(replay)
    if members is None:
        return load_replay_rows(replay, directory, expected_len=expected_len, spec=spec)
    directory = Path(directory)
    manifest = _read_manifest(directory)
    if manifest.get("streams") != len(members):
        raise CheckpointError(f"replay in {directory} holds {manifest.get('streams')} streams, this run has "
                              f"{len(members)} (run.envs differs)")
    if expected_len is not None and expected_len % len(members):
        raise CheckpointError(f"checkpoint counts {expected_len} env steps, not a multiple of the "
                              f"{len(members)} streams in {directory}")
    per_stream = None if expected_len is None else expected_len // len(members)
    for i, member in enumerate(members):
        load_replay_rows(member, directory / f"stream_{i}", expected_len=per_stream, spec=spec)
    return len(replay)
