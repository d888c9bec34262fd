"""numba's on-disk cache for library kernels (pipeline/chc/numba_kernels.py): a second process
loads what the first compiled and computes the same bits; a kernel that takes a jitted
function as an argument is never written to the cache (it could never be read back)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

LIBRARY = """
import numba
import numpy as np


@numba.njit(fastmath=True)
def weighted_sum(x):
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i] * np.float32(1.0001) ** i
    return total


@numba.njit()
def square(v):
    return v * v


@numba.njit()
def apply(function, x):
    return function(x[0]) + function(x[-1])
"""

RUN = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import fakelib
from pipeline.chc.numba_kernels import cache_kernels
enabled = cache_kernels(("fakelib",))
again = cache_kernels(("fakelib",))
x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
out = dict(
    enabled=enabled,
    again=again,
    sum=float(fakelib.weighted_sum(x)),
    apply=float(fakelib.apply(fakelib.square, x)),
    hits=sum(fakelib.weighted_sum.stats.cache_hits.values()),
)
print(json.dumps(out))
"""


def run(library: Path, cache: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    repo = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(library), repo],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_cache_and_computes_the_same_bits(tmp_path):
    library, cache = tmp_path / "lib", tmp_path / "numba"
    library.mkdir()
    (library / "fakelib.py").write_text(textwrap.dedent(LIBRARY))
    first = run(library, cache)
    assert first["enabled"] == 3 and first["again"] == 0  # idempotent
    assert first["hits"] == 0
    second = run(library, cache)
    assert second["hits"] == 1  # loaded, not compiled
    assert second["sum"] == first["sum"] and second["apply"] == first["apply"]
    saved = sorted(p.name for p in cache.rglob("*.nbi"))
    assert any("weighted_sum" in name for name in saved)
    assert any("square" in name for name in saved)  # its own signature is plain
    # apply(function, x) is keyed by the function object: never stored, so no pile-up
    assert not any("apply" in name for name in saved)
