"""K-means quantizer that turns encoder frames (HuBERT layer features) into discrete unit ids.

SpeechGPT's units are the nearest of ~1000 centroids fitted on HuBERT features. This module fits such centroids
with faiss, predicts ids with torch (CPU or GPU, float32 or bfloat16), stores them in a pickle-free format
(``kmeans.safetensors`` + ``kmeans.json``), and imports the scikit-learn/joblib pickles that SpeechGPT ships
without running arbitrary code from them.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import json
import logging
import math
import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CENTROIDS_FILENAME = "kmeans.safetensors"
META_FILENAME = "kmeans.json"
CENTROIDS_TENSOR = "centroids"
MIN_POINTS_PER_CENTROID = 39
"""Below this many frames per centroid faiss considers the fit under-determined (its own warning threshold)."""
DEFAULT_CHUNK_ROWS = 8192
"""Rows per distance block in `predict`: bounds memory to chunk_rows * k floats (32 MiB for k=1000)."""


def centroid_fingerprint(centroids: np.ndarray) -> str:
    """First 16 hex chars of sha256 over the float32 C-order bytes: names a codebook, so that unit ids made with
    one set of centroids are never silently mixed with ids from another."""
    data = np.ascontiguousarray(centroids, dtype=np.float32)
    return hashlib.sha256(data.tobytes()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class KMeansModel:
    """Centroids plus the metadata that says which encoder they quantize and where they came from.

    ``meta`` always holds ``k``, ``dim`` and ``fingerprint``, computed from ``centroids`` (a passed value that
    disagrees is an error), plus ``encoder`` and ``source`` ("fit" or "sklearn:<file>"). ``eq=False`` because
    comparing numpy arrays with ``==`` has no single truth value; compare fingerprints instead.
    """

    centroids: np.ndarray
    meta: dict[str, Any]
    _centroids_t: torch.Tensor = field(init=False, repr=False)
    _sq_norms_t: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        centroids = np.array(self.centroids, dtype=np.float32, order="C", copy=True)
        if centroids.ndim != 2 or centroids.shape[0] < 1 or centroids.shape[1] < 1:
            raise ValueError(f"centroids must have shape (k, dim) with k, dim >= 1, got {centroids.shape}")
        if not np.isfinite(centroids).all():
            raise ValueError("centroids contain NaN or infinity")
        computed = {"k": centroids.shape[0], "dim": centroids.shape[1], "fingerprint": centroid_fingerprint(centroids)}
        for key, value in computed.items():
            if key in self.meta and self.meta[key] != value:
                raise ValueError(f"meta[{key!r}]={self.meta[key]!r} disagrees with the centroids ({value!r})")
        centroids_t = torch.from_numpy(centroids.copy())
        centroids.setflags(write=False)
        object.__setattr__(self, "centroids", centroids)
        object.__setattr__(self, "meta", {**self.meta, **computed})
        object.__setattr__(self, "_centroids_t", centroids_t)
        object.__setattr__(self, "_sq_norms_t", (centroids_t.double() ** 2).sum(dim=1).float())

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def predict(
        self, features: torch.Tensor, *, dtype: torch.dtype = torch.float32, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> torch.Tensor:
        """Nearest centroid (squared L2) for each row of (T, dim) `features`, as int64 ids on their device.

        Uses ``||c||^2 - 2 x.c`` (``||x||^2`` is the same for every centroid of a row) with the matmul in
        `dtype` (float32, or bfloat16 for speed on GPUs) and the norms added in float32. Rows go in chunks so
        memory stays at chunk_rows * k. Ties go to the lowest id (torch.argmin returns the first minimum).
        """
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must have shape (T, {self.dim}), got {tuple(features.shape)}")
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        device = features.device
        centroids_t = self._centroids_t.to(device=device, dtype=dtype).T
        sq_norms = self._sq_norms_t.to(device=device)
        ids = torch.empty(features.shape[0], dtype=torch.int64, device=device)
        with torch.no_grad():
            for start in range(0, features.shape[0], chunk_rows):
                rows = features[start : start + chunk_rows].to(dtype)
                distances = sq_norms - 2.0 * (rows @ centroids_t).float()
                ids[start : start + rows.shape[0]] = distances.argmin(dim=1)
        return ids

    def predict_numpy(self, features: np.ndarray, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
        """`predict` for (T, dim) numpy features (float32 arithmetic on the CPU); returns int64 ids."""
        rows = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        return self.predict(rows, chunk_rows=chunk_rows).numpy()

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Writes ``kmeans.safetensors`` and ``kmeans.json`` into `folder`, each atomically, so a crash or a
        concurrent reader never sees a half-written file (a stale pair is caught by the fingerprint check)."""
        from safetensors.numpy import save as safetensors_bytes

        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        _atomic_write(target / CENTROIDS_FILENAME, safetensors_bytes({CENTROIDS_TENSOR: self.centroids}))
        meta_text = json.dumps(self.meta, indent=2, sort_keys=True) + "\n"
        _atomic_write(target / META_FILENAME, meta_text.encode("utf-8"))
        logger.info("saved k-means k=%d dim=%d fingerprint=%s to %s", self.k, self.dim, self.fingerprint, target)
        return target

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> KMeansModel:
        """Reads a folder written by `save`, refusing centroids whose shape or fingerprint disagree with the JSON."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        meta_path, centroids_path = Path(folder) / META_FILENAME, Path(folder) / CENTROIDS_FILENAME
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            tensors = load_file(centroids_path)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"k-means file missing: {exc.filename}") from exc
        except (json.JSONDecodeError, SafetensorError) as exc:
            raise ValueError(f"cannot read k-means files in {folder}: {exc}") from exc
        if not isinstance(meta, dict) or not {"k", "dim", "fingerprint"} <= meta.keys():
            raise ValueError(f"{meta_path} must be an object with k, dim and fingerprint")
        if CENTROIDS_TENSOR not in tensors:
            raise ValueError(f"{centroids_path} has no tensor {CENTROIDS_TENSOR!r} (found {sorted(tensors)})")
        centroids = tensors[CENTROIDS_TENSOR]
        if centroids.dtype != np.float32 or centroids.shape != (meta["k"], meta["dim"]):
            raise ValueError(
                f"{centroids_path} holds {centroids.dtype} {centroids.shape}, but {meta_path} says "
                f"float32 ({meta['k']}, {meta['dim']})"
            )
        actual = centroid_fingerprint(centroids)
        if actual != meta["fingerprint"]:
            raise ValueError(
                f"fingerprint mismatch: {centroids_path} hashes to {actual}, {meta_path} says {meta['fingerprint']}"
            )
        return cls(centroids=centroids, meta=meta)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then os.replace: readers see the old file or the new one."""
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _sample_frames(features: np.ndarray, max_frames: int | None, seed: int) -> np.ndarray:
    """Draws `max_frames` rows (sorted, without replacement) with default_rng(seed): the frame budget."""
    if max_frames is None or features.shape[0] <= max_frames:
        return features
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    rows = np.sort(np.random.default_rng(seed).choice(features.shape[0], size=max_frames, replace=False))
    return features[rows]


def fit_kmeans(
    features: np.ndarray,
    k: int,
    *,
    seed: int,
    niter: int = 50,
    encoder: str,
    max_frames: int | None = None,
    nredo: int = 1,
) -> KMeansModel:
    """Fits k centroids to (N, dim) frames with faiss (plain L2 k-means, not spherical).

    The same features, k, seed, niter and max_frames give bit-identical centroids: faiss seeds its initial
    centroids from `seed`, and its centroid update and BLAS distance blocks sum in a fixed order whatever the
    OpenMP thread count (checked for 1-16 threads), so threads are left as configured. faiss's own
    subsampling (max 256 points per centroid) is switched off so that `max_frames` is the only frame budget.
    Lloyd's iterations from random initial centroids can stop in a local minimum; `nredo` > 1 runs that many
    seeded restarts and keeps the lowest objective (like scikit-learn's n_init).
    """
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, dim), got {features.shape}")
    if k < 1 or niter < 1 or nredo < 1:
        raise ValueError(f"k, niter and nredo must be >= 1, got k={k}, niter={niter}, nredo={nredo}")
    train = np.ascontiguousarray(_sample_frames(features, max_frames, seed), dtype=np.float32)
    n_frames, dim = train.shape
    if n_frames < k:
        raise ValueError(f"k-means with k={k} needs at least {k} frames, got {n_frames}")
    if n_frames < MIN_POINTS_PER_CENTROID * k:
        logger.warning(
            "only %d frames for k=%d (%.1f per centroid; faiss wants >= %d): centroids will be noisy",
            *(n_frames, k, n_frames / k, MIN_POINTS_PER_CENTROID),
        )
    import faiss

    no_subsampling = math.ceil(n_frames / k) + 1
    kmeans = faiss.Kmeans(dim, k, niter=niter, nredo=nredo, seed=seed, spherical=False, verbose=False)
    kmeans.cp.min_points_per_centroid, kmeans.cp.max_points_per_centroid = 1, no_subsampling
    started = time.perf_counter()
    objective = float(kmeans.train(train))
    elapsed = time.perf_counter() - started
    logger.info("fit k-means k=%d on %d x %d frames in %.2fs (objective %.4g)", k, n_frames, dim, elapsed, objective)
    meta = {"encoder": encoder, "source": "fit", "n_frames": n_frames, "max_frames": max_frames}
    meta |= {"seed": seed, "niter": niter, "nredo": nredo}
    return KMeansModel(centroids=np.asarray(kmeans.centroids), meta=meta)


class _PickledKMeans:
    """Stand-in for sklearn.cluster.KMeans: keeps the pickled attribute dict, so scikit-learn need not be
    installed and none of its code runs."""

    sklearn_class = "KMeans"
    state: dict[str, Any]

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.sklearn_class} state is {type(state).__name__}, expected a dict")
        self.state = state


class _PickledMiniBatchKMeans(_PickledKMeans):
    sklearn_class = "MiniBatchKMeans"


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles spell bytes as _codecs.encode(text, "latin1"); only that codec is let through."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Everything a joblib-dumped (MiniBatch)KMeans may name; resolved here, so find_class never imports."""
    from joblib.numpy_pickle import NumpyArrayWrapper

    multiarray = importlib.import_module("numpy._core.multiarray")
    numeric = importlib.import_module("numpy._core.numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("joblib.numpy_pickle", "NumpyArrayWrapper"): NumpyArrayWrapper,
        ("_codecs", "encode"): _encode_latin1,
    }
    for module in ("sklearn.cluster._kmeans", "sklearn.cluster.k_means_", "sklearn.cluster"):
        allowed[(module, "KMeans")] = _PickledKMeans
        allowed[(module, "MiniBatchKMeans")] = _PickledMiniBatchKMeans
    for module in ("numpy.core", "numpy._core"):  # numpy 1.x pickles say numpy.core, numpy 2.x numpy._core
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    for name in ("complex", "set", "frozenset", "bytearray"):  # plain data types older protocols name
        allowed[("builtins", name)] = getattr(builtins, name)
    return allowed


def _restricted_unpickle(path: Path) -> Any:
    """joblib.load with an allow-list: joblib's NumpyUnpickler (which reads its array wrappers) whose find_class
    refuses every global not in `_allowed_globals`. Pre-0.10 joblib files are refused: their companion .npy
    files are read with allow_pickle=True, which would bypass the allow-list."""
    from joblib.numpy_pickle import NumpyUnpickler
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    allowed = _allowed_globals()

    class RestrictedUnpickler(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            found = allowed.get((module, name))
            if found is None:
                raise pickle.UnpicklingError(f"{path}: refusing to load {module}.{name} (not a k-means part)")
            return found

    with path.open("rb") as raw, _validate_fileobject_and_memmap(raw, str(path)) as (fileobj, _):
        if isinstance(fileobj, str):
            raise pickle.UnpicklingError(f"{path} is a pre-0.10 joblib file; re-save it with a recent joblib")
        return RestrictedUnpickler(str(path), fileobj, ensure_native_byte_order=True).load()


def load_sklearn_kmeans(path: str | os.PathLike[str], *, trust: bool, encoder: str) -> KMeansModel:
    """Imports the centroids of a scikit-learn (MiniBatch)KMeans pickled with joblib (SpeechGPT's km1000 file).

    Pickles can run code when loaded, so this refuses unless `trust` is True; even then only the globals a
    k-means model needs are allowed (pickle.UnpicklingError names any other).
    """
    source = Path(path)
    if not trust:
        raise ValueError(
            f"{source} is a pickle, and unpickling can execute arbitrary code. Pass trust=True only for a file "
            "from a source you trust (loading is then still restricted to the classes a k-means model needs)."
        )
    loaded = _restricted_unpickle(source)
    if not isinstance(loaded, _PickledKMeans):
        raise ValueError(f"{source} holds {type(loaded).__name__}, not a scikit-learn KMeans")
    centers = getattr(loaded, "state", {}).get("cluster_centers_")
    if not isinstance(centers, np.ndarray) or centers.ndim != 2:
        raise ValueError(f"{source}: the {loaded.sklearn_class} has no 2-D cluster_centers_ (was it fitted?)")
    meta = {
        "encoder": encoder,
        "source": f"sklearn:{source.name}",
        "sklearn_class": loaded.sklearn_class,
        "sklearn_version": str(loaded.state.get("_sklearn_version", "unknown")),
    }
    logger.info("imported %s with %d centroids of dim %d from %s", loaded.sklearn_class, *centers.shape, source)
    return KMeansModel(centroids=centers.astype(np.float32), meta=meta)
