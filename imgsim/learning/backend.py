"""Which Keras backend runs the model: chosen once, before Keras is imported.

KERAS_BACKEND wins when set (tensorflow, jax or torch). Otherwise the first one installed of
TensorFlow, JAX and PyTorch, in that order: TensorFlow was the fastest on a 2-core CPU
(docs/results.md, "Keras backends and GPU"), and a GPU machine that has only JAX or PyTorch
still trains without TensorFlow. Nothing here imports Keras or a backend unless asked to.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

from imgsim.core.errors import ImgsimError

BACKENDS = ("tensorflow", "jax", "torch")
INSTALL = {"tensorflow": "pip install 'imgsim[cpu]' (or 'imgsim[gpu]')", "jax": "pip install 'imgsim[jax]'",
           "torch": "pip install torch"}


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def choose() -> str:
    """The backend Keras will use (setting KERAS_BACKEND when unset); ImgsimError names what is wrong, in one line."""
    if "keras" in sys.modules:  # imported already (by the caller): its backend is fixed
        return sys.modules["keras"].backend.backend()
    wanted = os.environ.get("KERAS_BACKEND", "").strip().lower()
    if wanted:
        if wanted not in BACKENDS:
            raise ImgsimError(f"KERAS_BACKEND={wanted!r} is not a backend imgsim runs on; use one of {', '.join(BACKENDS)}")
        if not installed(wanted):
            raise ImgsimError(f"KERAS_BACKEND={wanted} but {wanted} is not installed; {INSTALL[wanted]}, "
                              "or unset KERAS_BACKEND")
    else:
        wanted = next((name for name in BACKENDS if installed(name)), "")
        if not wanted:
            raise ImgsimError("no Keras backend is installed: pip install 'imgsim[cpu]' (TensorFlow), "
                              "'imgsim[jax]' or torch")
    os.environ["KERAS_BACKEND"] = wanted
    if wanted == "tensorflow":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own info and warning lines
        # TensorFlow's pooling allocator on the CPU too: its default frees each step's large tensors (a 128 px
        # batch's activations, tens of MB) to the system and maps them again, page fault by page fault. A
        # 48-step default training on 2 cores: fit 172.5 -> 80.2 s, system CPU 76 -> 17 s (docs/results.md).
        os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "1")
    return wanted


# JAX's own variables win over these (a person's JAX_COMPILATION_CACHE_DIR, or one of the others set to turn it off)
JAX_CACHE = {"jax_compilation_cache_dir": "JAX_COMPILATION_CACHE_DIR",
             "jax_persistent_cache_min_compile_time_secs": "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
             "jax_compilation_cache_max_size": "JAX_COMPILATION_CACHE_MAX_SIZE"}
JAX_CACHE_MAX_BYTES = 2**30  # least recently used programs go first beyond it


def use_compilation_cache() -> None:
    """Keep JAX's compiled programs on disk for the next process (under cache_home()/jax).

    Under JAX every process compiles each weight initialiser of a model it builds or loads, and its
    steps, for XLA: loading even the tiny test model took 11.4 s on 2 cores, 0.8 s with these programs
    read from the cache. JAX keeps only programs that took a second or more to compile by default;
    an initialiser takes about 0.7 s, so every program is kept here, the cache bounded at 1 GiB.
    """
    import jax

    from imgsim.core.config import cache_home

    folder = str(cache_home() / "jax")
    try:
        folder.encode("utf-8")
    except UnicodeEncodeError:  # a data folder named in another encoding: XLA's C++ cannot open it, so no cache
        return
    wanted = {"jax_compilation_cache_dir": folder,
              "jax_persistent_cache_min_compile_time_secs": 0.0,
              "jax_compilation_cache_max_size": JAX_CACHE_MAX_BYTES}
    for option, value in wanted.items():
        if JAX_CACHE[option] not in os.environ:
            jax.config.update(option, value)


def import_keras(quiet: bool = False):
    """Choose the backend and import Keras with it.

    quiet=True keeps the lines TensorFlow's native code prints while it loads (oneDNN, CPU
    features: written before its logging starts, so TF_CPP_MIN_LOG_LEVEL cannot hold them) off
    the terminal, by pointing file descriptor 2 at /dev/null for this call alone. Only an entry
    point that has not started threads should ask for it (the CLI does): the descriptor is the
    process's, so another thread's error lines would be lost meanwhile.
    """
    name = choose()
    if name == "jax" and "keras" not in sys.modules:
        use_compilation_cache()
    if not quiet or name != "tensorflow" or "tensorflow" in sys.modules:
        with tensorflow_without_jax(name):
            import keras

        keras_without_tensorflow(name)
        return keras
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with tensorflow_without_jax(name):
            import keras

        keras.ops.convert_to_numpy(keras.ops.zeros(1))  # the first op logs too
        return keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensorflow_without_jax(backend: str):
    """TensorFlow's own start imports JAX where it is installed (tf.lite's util, for converting JAX functions,
    which imgsim never does): 1.1-1.5 of the 8.4-10.3 CPU s `import keras` took under TensorFlow here. Blocked
    while TensorFlow loads, as the backend; any later `import jax` in the process works as usual."""
    return import_blocked("jax") if backend == "tensorflow" and "tensorflow" not in sys.modules else contextlib.nullcontext()


def keras_without_tensorflow(backend: str) -> None:
    """Under JAX or PyTorch, Keras still imports TensorFlow where it is installed, to seed it
    (keras.utils.set_random_seed) and to look for TensorFlow's types in what it saves: 13.5 s of a tiny JAX
    training's 84 s on 2 cores here, for nothing the backend uses. Keras asks whether TensorFlow is available
    once a process (its lazy module caches the answer); asked here with TensorFlow blocked, so Keras works as
    on a machine without it. A Keras without that module is left as it is."""
    if backend == "tensorflow" or "tensorflow" in sys.modules:
        return
    try:
        from keras.src.utils.module_utils import tensorflow
    except ImportError:
        return
    with import_blocked("tensorflow"):
        getattr(tensorflow, "available", None)


@contextlib.contextmanager
def import_blocked(name: str):
    """Inside the block, `import name` raises ImportError (a module not imported yet: what a package does
    when an optional dependency is missing); after it the module imports as usual, unless it was imported
    before (then nothing is blocked)."""
    blocked = name not in sys.modules and sys.modules.setdefault(name, None) is None
    try:
        yield
    finally:
        if blocked and sys.modules.get(name, ...) is None:
            del sys.modules[name]


def versions() -> dict:
    """The backend and its version, as recorded in a version's manifest."""
    keras = import_keras()
    name = keras.backend.backend()
    module = importlib.import_module(name)
    return {"keras_backend": name, name: module.__version__, "keras": keras.__version__}


def gpu_available() -> bool:
    """Whether the backend in use has a GPU."""
    name = import_keras().backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if name == "jax":
        import jax

        return jax.default_backend() == "gpu"
    import torch

    return torch.cuda.is_available()
