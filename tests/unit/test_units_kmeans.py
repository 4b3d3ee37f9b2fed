from __future__ import annotations

import collections
import json
import logging
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from speechgpt.units.kmeans import (
    CENTROIDS_FILENAME,
    META_FILENAME,
    KMeansModel,
    fit_kmeans,
    load_sklearn_kmeans,
)

ENCODER = "hubert:/models/hubert_base@L6"


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """Three gaussian blobs (std 1) whose centres lie ~20 apart in 8 dimensions, with their true labels."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 20
    frames = np.concatenate([centre + rng.normal(size=(300, 8)) for centre in centres]).astype(np.float32)
    return frames, np.repeat(np.arange(3), 300)


@pytest.fixture(scope="module")
def fitted(blobs: tuple[np.ndarray, np.ndarray]) -> KMeansModel:
    return fit_kmeans(blobs[0], 3, seed=0, niter=20, nredo=4, encoder=ENCODER)


def test_fit_finds_the_blobs(fitted: KMeansModel, blobs: tuple[np.ndarray, np.ndarray]) -> None:
    frames, labels = blobs
    ids = fitted.predict_numpy(frames)
    blob_ids = [set(ids[labels == blob].tolist()) for blob in range(3)]
    assert all(len(found) == 1 for found in blob_ids)
    assert len(set.union(*blob_ids)) == 3
    assert fitted.meta["source"] == "fit" and fitted.meta["encoder"] == ENCODER
    assert (fitted.k, fitted.dim, fitted.meta["n_frames"], fitted.meta["seed"]) == (3, 8, 900, 0)
    assert fitted.centroids.dtype == np.float32 and len(fitted.fingerprint) == 16


def test_same_seed_is_bit_identical(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    first, second, other = (fit_kmeans(blobs[0], 5, seed=seed, niter=10, encoder=ENCODER) for seed in (7, 7, 8))
    assert np.array_equal(first.centroids, second.centroids)
    assert first.fingerprint == second.fingerprint
    assert other.meta["seed"] == 8  # a different seed may or may not give other centroids


def test_max_frames_budget(blobs: tuple[np.ndarray, np.ndarray]) -> None:
    budgeted = fit_kmeans(blobs[0], 3, seed=1, niter=5, encoder=ENCODER, max_frames=200)
    again = fit_kmeans(blobs[0], 3, seed=1, niter=5, encoder=ENCODER, max_frames=200)
    assert budgeted.meta["n_frames"] == 200 and budgeted.meta["max_frames"] == 200
    assert budgeted.fingerprint == again.fingerprint
    roomy = fit_kmeans(blobs[0], 3, seed=1, niter=5, encoder=ENCODER, max_frames=10_000)
    assert roomy.meta["n_frames"] == 900


def test_too_few_frames(caplog: pytest.LogCaptureFixture) -> None:
    frames = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="k=60 needs at least 60 frames, got 50"):
        fit_kmeans(frames, 60, seed=0, encoder=ENCODER)
    with pytest.raises(ValueError, match="got 20"):
        fit_kmeans(frames, 30, seed=0, encoder=ENCODER, max_frames=20)
    with caplog.at_level(logging.WARNING, logger="speechgpt.units.kmeans"):
        fit_kmeans(frames, 10, seed=0, niter=2, encoder=ENCODER)
    assert "only 50 frames for k=10" in caplog.text


def test_save_load_round_trip(fitted: KMeansModel, tmp_path: Path) -> None:
    fitted.save(tmp_path / "km")
    loaded = KMeansModel.load(tmp_path / "km")
    assert np.array_equal(loaded.centroids, fitted.centroids)
    assert loaded.meta == fitted.meta
    assert set(os.listdir(tmp_path / "km")) == {CENTROIDS_FILENAME, META_FILENAME}  # no temp files left
    text = (tmp_path / "km" / META_FILENAME).read_text()
    assert text == json.dumps(fitted.meta, indent=2, sort_keys=True) + "\n"


def _tamper_json(folder: Path, **changes: object) -> None:
    path = folder / META_FILENAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_load_detects_tampering(fitted: KMeansModel, tmp_path: Path) -> None:
    fitted.save(tmp_path)
    _tamper_json(tmp_path, fingerprint="0" * 16)
    with pytest.raises(ValueError, match=f"fingerprint mismatch: .*{CENTROIDS_FILENAME}.*{META_FILENAME}"):
        KMeansModel.load(tmp_path)
    _tamper_json(tmp_path, fingerprint=fitted.fingerprint, k=4)
    with pytest.raises(ValueError, match=f"{CENTROIDS_FILENAME} holds float32 \\(3, 8\\)"):
        KMeansModel.load(tmp_path)
    (tmp_path / META_FILENAME).unlink()
    with pytest.raises(FileNotFoundError, match=META_FILENAME):
        KMeansModel.load(tmp_path)


def test_meta_cannot_contradict_centroids() -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        KMeansModel(centroids=np.eye(3, dtype=np.float32), meta={"encoder": ENCODER, "fingerprint": "abc"})


def test_predict_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    model = KMeansModel(centroids=rng.normal(size=(64, 24)).astype(np.float32), meta={"encoder": ENCODER})
    frames = rng.normal(size=(3000, 24)).astype(np.float32)
    squared = ((frames[:, None, :].astype(np.float64) - model.centroids[None].astype(np.float64)) ** 2).sum(-1)
    expected = squared.argmin(axis=1)
    ids = model.predict(torch.from_numpy(frames), chunk_rows=97)
    assert ids.dtype == torch.int64
    assert np.array_equal(ids.numpy(), expected)
    assert np.array_equal(model.predict_numpy(frames), expected)


def test_predict_bfloat16_on_separated_data() -> None:
    rng = np.random.default_rng(4)
    centroids = (rng.normal(size=(50, 32)) * 10).astype(np.float32)
    truth = rng.integers(0, 50, size=2000)
    frames = torch.from_numpy(centroids[truth] + rng.normal(size=(2000, 32)).astype(np.float32))
    model = KMeansModel(centroids=centroids, meta={"encoder": ENCODER})
    for features in (frames, frames.bfloat16()):
        ids = model.predict(features, dtype=torch.bfloat16).numpy()
        assert (ids == truth).mean() >= 0.95


def test_ties_go_to_the_lowest_id() -> None:
    centroids = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    model = KMeansModel(centroids=centroids, meta={"encoder": ENCODER})
    frames = np.array([[1.0, 0.0], [0.5, 0.5], [2.0, 0.0]], dtype=np.float32)
    assert model.predict_numpy(frames).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match=r"shape \(T, 2\)"):
        model.predict(torch.zeros(4, 3))


@pytest.fixture(scope="module")
def sklearn_km(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, np.ndarray, Path]:
    """A genuine SpeechGPT-style km file: scikit-learn KMeans dumped with joblib (plain, compressed, protocol 2)."""
    from sklearn.cluster import KMeans

    frames = np.random.default_rng(5).normal(size=(500, 16)).astype(np.float32)
    km = KMeans(n_clusters=8, n_init=1, random_state=0).fit(frames)
    folder = tmp_path_factory.mktemp("sklearn")
    joblib.dump(km, folder / "km.bin")
    joblib.dump(km, folder / "km_z3.bin", compress=3)
    joblib.dump(km, folder / "km_p2.bin", protocol=2)  # how Python-2-era files spell bytes: _codecs.encode
    return km, frames, folder


@pytest.mark.parametrize("name", ["km.bin", "km_z3.bin", "km_p2.bin"])
def test_load_sklearn_kmeans(sklearn_km: tuple[object, np.ndarray, Path], name: str) -> None:
    km, frames, folder = sklearn_km
    model = load_sklearn_kmeans(folder / name, trust=True, encoder=ENCODER)
    assert np.array_equal(model.centroids, km.cluster_centers_.astype(np.float32))  # type: ignore[attr-defined]
    assert np.array_equal(model.predict_numpy(frames), km.predict(frames))  # type: ignore[attr-defined]
    assert model.meta["source"] == f"sklearn:{name}" and model.meta["sklearn_class"] == "KMeans"


def test_sklearn_needs_trust(sklearn_km: tuple[object, np.ndarray, Path]) -> None:
    with pytest.raises(ValueError, match="trust=True"):
        load_sklearn_kmeans(sklearn_km[2] / "km.bin", trust=False, encoder=ENCODER)


class _RunsShell:
    """Unpickling this calls os.system: what a malicious km file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_refuses_code_execution(sklearn_km: tuple[object, np.ndarray, Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    km = sklearn_km[0]
    payloads = {
        "bare.bin": (_RunsShell(marker), r"\.system"),
        "in_state.bin": (_with_attribute(km, collections.OrderedDict(x=_RunsShell(marker))), "OrderedDict"),
        "object_array.bin": (_with_attribute(km, np.array([_RunsShell(marker)], dtype=object)), r"\.system"),
    }
    for name, (payload, refused) in payloads.items():
        joblib.dump(payload, tmp_path / name, compress=3 if name == "in_state.bin" else 0)
        with pytest.raises(pickle.UnpicklingError, match=refused):
            load_sklearn_kmeans(tmp_path / name, trust=True, encoder=ENCODER)
    assert not marker.exists()


def _with_attribute(km: object, value: object) -> object:
    """A copy of a fitted KMeans carrying one extra attribute (pickled along with its state)."""
    clone = pickle.loads(pickle.dumps(km))
    clone.extra = value
    return clone
