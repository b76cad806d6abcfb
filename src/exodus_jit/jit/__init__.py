"""Build system: compiles any torch extension on first use and caches it per toolchain.

It knows nothing of neurons; `exodus_jit.ops` describes its kernels with `ExtensionSpec`.
"""

from .builder import ExtensionSpec, cache_key, default_max_jobs, key_fields, prepare
from .cache import CacheEntry, cache_root, list_entries
from .errors import ALL_DIAGNOSES, Diagnosis, ExodusBuildError

__all__ = [
    "ALL_DIAGNOSES",
    "CacheEntry",
    "Diagnosis",
    "ExodusBuildError",
    "ExtensionSpec",
    "cache_key",
    "cache_root",
    "default_max_jobs",
    "key_fields",
    "list_entries",
    "prepare",
]
