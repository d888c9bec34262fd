"""Frozen image features, computed once per (backbone, image, view) and kept on disk.

The reference trainers run the frozen image encoder on every image at every step; with a
frozen encoder that work is wasted. Every stage asks this module instead, and each image is
encoded at most once per backbone and preprocessing:

* ``view=None`` is the test preprocessing (resize + centre crop);
* ``view=v`` is the v-th augmented training view (random crop + flip), drawn from a generator
  seeded by (aug_seed, the image's bytes, v), so view v of an image is the same in every run,
  stage and clone, wherever the files live.

The store is one SQLite file per (backbone, preprocessing): rows are written as batches
finish, so an interrupted stage resumes where it stopped, and sharing between stages is free.
An image is identified by its resolved path, size and modification time (hashing every file's
bytes would cost a full read of the dataset on each run).
"""

from __future__ import annotations

import hashlib
import sqlite3
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .backbones import Backbone
from .decode import open_rgb
from .errors import UserError

DEFAULT_CACHE_DIR = Path(".cache/features")


class ImageDecodeError(UserError):
    """An image that cannot be read; names the file."""


def image_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def load_rgb(path: Path) -> Image.Image:
    try:
        return open_rgb(path)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageDecodeError(f"{path}: cannot decode image ({error})") from None


class DecodedImages:
    """Preprocessed image tensors kept in this process's memory, up to ``max_mb`` (the least
    recently used go first; 0 keeps nothing).

    A visual prompt re-encodes its images at every step and every test, so without this the
    same test images are decoded and resized again for every seed and run, and the same
    training views every epoch: about a tenth of a visual row's time on 2 cores. The tensors
    are the ones decoding would give, bit for bit (tests/test_decoded_images.py). One instance
    serves one backbone's preprocessing: it is keyed by (path, view, aug_seed) only.
    """

    def __init__(self, max_mb: int = 0) -> None:
        self.max_bytes = int(max_mb) * 2**20
        self.items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable, decode: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        tensor = decode()
        size = tensor.numel() * tensor.element_size()
        if size <= self.max_bytes:
            self.items[key] = tensor
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self.items.popitem(last=False)
                self.bytes -= dropped.numel() * dropped.element_size()
        return tensor


class ImageFiles(Dataset):
    """Decoded, preprocessed images; ``view=v`` gives the same augmented crop in every run.
    ``memo``: a :class:`DecodedImages` to read from and fill (only useful without worker
    processes, which would each fill a copy)."""

    def __init__(
        self,
        paths: Sequence[Path],
        transform,
        view: int | None,
        aug_seed: int,
        memo: DecodedImages | None = None,
    ):
        self.paths, self.transform, self.view, self.aug_seed = paths, transform, view, aug_seed
        self.memo = memo

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        if self.memo is None:
            return self.decode(index)
        key = (str(self.paths[index]), self.view, self.aug_seed)
        return self.memo.get(key, lambda: self.decode(index))

    def decode(self, index: int):
        path = self.paths[index]
        image = load_rgb(path)
        if self.view is None:
            return self.transform(image)
        # torchvision's random transforms draw from the global generator: fork it so the
        # crop of (image, view) is fixed and the caller's random state is left untouched.
        # The seed comes from the image's bytes, not its path, so a clone in another folder
        # (or another machine) draws the same crops.
        content = zlib.crc32(path.read_bytes())
        seed = zlib.crc32(f"{self.aug_seed}|{content}|{self.view}".encode())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image)


class FeatureStore:
    """SQLite map from image key to a float32 feature vector, for one backbone + preprocessing."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(path)
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS features (key TEXT PRIMARY KEY, vector BLOB NOT NULL)"
        )

    def missing(self, keys: Sequence[str]) -> list[int]:
        have: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key FROM features WHERE key IN ({marks})"
            rows = self.connection.execute(query, chunk)
            have.update(row[0] for row in rows)
        return [i for i, key in enumerate(keys) if key not in have]

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(k, v.astype(np.float32).tobytes()) for k, v in zip(keys, vectors, strict=True)]
        with self.connection:
            self.connection.executemany("INSERT OR REPLACE INTO features VALUES (?, ?)", rows)

    def get(self, keys: Sequence[str]) -> np.ndarray:
        vectors = []
        for key in keys:
            row = self.connection.execute(
                "SELECT vector FROM features WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                raise KeyError(key)
            vectors.append(np.frombuffer(row[0], dtype=np.float32))
        return np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)

    def close(self) -> None:
        self.connection.close()


def _store_path(cache_dir: Path, backbone: Backbone, view: int | None, aug_seed: int) -> Path:
    preprocessing = "test" if view is None else f"train-view{view}-seed{aug_seed}"
    tag = hashlib.sha1(f"{backbone.name}|{preprocessing}".encode()).hexdigest()[:16]
    return cache_dir / f"{tag}.sqlite"


def encode_fixed_batch(backbone: Backbone, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``backbone.encode_image(batch)`` on the CPU, run at exactly ``batch_size`` rows.

    Kernels pick their blocking by shape, so a row's last bits depend on the batch's size
    (not on the other rows' values). A short batch is padded with zero images to the full
    size, so an image's stored feature is the same whichever images happened to be missing
    from the cache with it, or where an interrupted run resumed.
    """
    rows = len(batch)
    if rows < batch_size:
        padding = batch.new_zeros((batch_size - rows, *batch.shape[1:]))
        batch = torch.cat([batch, padding])
    return backbone.encode_image(batch)[:rows].float().cpu()


@torch.no_grad()
def image_features(
    backbone: Backbone,
    paths: Sequence[Path],
    view: int | None = None,
    aug_seed: int = 0,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "encoding images",
) -> torch.Tensor:
    """[N, embed_dim] float32 features of ``paths`` (in order), encoding only what is new.

    Batches run on ``backbone.device`` at ``batch_size`` rows each (see
    :func:`encode_fixed_batch`), so ``batch_size`` is part of the result; the features are
    stored, and returned, on the CPU.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise ImageDecodeError(f"{path}: image file is missing")
    keys = [image_key(p) for p in paths]
    store = FeatureStore(_store_path(Path(cache_dir), backbone, view, aug_seed))
    try:
        todo = store.missing(keys)
        if todo:
            transform = backbone.image_transform(train=view is not None)
            files = ImageFiles([paths[i] for i in todo], transform, view, aug_seed)
            # Pinned host memory lets the copy to the GPU overlap the next batch's decoding.
            on_cuda = backbone.device.type == "cuda"
            loader = DataLoader(
                files, batch_size=batch_size, num_workers=num_workers, pin_memory=on_cuda
            )
            done = 0
            with tqdm(total=len(todo), desc=desc, unit="img") as bar:
                for batch in loader:
                    batch = batch.to(backbone.device, non_blocking=on_cuda)
                    features = encode_fixed_batch(backbone, batch, batch_size)
                    batch_keys = [keys[i] for i in todo[done : done + len(batch)]]
                    store.put(batch_keys, features.numpy())
                    done += len(batch)
                    bar.update(len(batch))
        return torch.from_numpy(store.get(keys).copy())
    finally:
        store.close()
