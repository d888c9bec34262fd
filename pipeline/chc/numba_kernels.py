"""numba's on-disk cache for umap-learn's and pynndescent's kernels.

Both libraries leave most of their ~500 numba kernels uncached (``cache=False``, the default,
or dispatchers built by ``numba.njit(f)`` at import), so every process that fits a UMAP
compiles them again: ~18 s of a 100k-caption `topics` run on 2 cores, whatever
``NUMBA_CACHE_DIR`` holds (README "Speed"). ``cache_kernels()`` turns numba's own cache on for
them. The cached machine code is what numba would compile again (its index is keyed by the
source file, the signature and the CPU), so results are bit for bit those of an uncached run
(tests/test_numba_kernels.py).

Not cached: a compilation whose arguments include a jitted function (pynndescent passes its
distance that way). numba keys those by the function object, which is never the same in
another process, so each run would compile anyway and append one more copy to the cache.
"""

from __future__ import annotations

import functools
import sys

LIBRARIES = ("umap", "pynndescent")


def cache_kernels(libraries: tuple[str, ...] = LIBRARIES) -> int:
    """Turn on numba's on-disk cache for the uncached kernels of the imported modules of
    ``libraries``; returns how many were turned on (0 the second time: idempotent)."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    cache_class = _cache_class()
    enabled = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in libraries:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                value._cache = cache_class(value.py_func)
                enabled += 1
    return enabled


@functools.cache
def _cache_class():
    from numba.core import types
    from numba.core.caching import FunctionCache

    def takes_function(sig) -> bool:  # sig: a Signature or a tuple of argument types
        arguments = getattr(sig, "args", sig)
        return any(isinstance(t, (types.Dispatcher, types.FunctionType)) for t in arguments)

    class CrossProcessCache(FunctionCache):
        """numba's ``FunctionCache`` minus the signatures no other process can hit."""

        def load_overload(self, sig, target_context):
            return None if takes_function(sig) else super().load_overload(sig, target_context)

        def save_overload(self, sig, data):
            if not takes_function(sig):
                super().save_overload(sig, data)

    return CrossProcessCache
