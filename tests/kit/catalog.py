"""The fake package universe the tests install from.

Every release is a tiny pure-Python wheel, but its *metadata* copies the real
TensorFlow ecosystem's dependency shape (Requires-Python, version caps,
extras such as ``and-cuda`` and ``tensorflow_cpu``), so uv meets the same
conflicts it meets on PyPI.  Each package is importable and has
``__version__``.  A few modules model real-world run-time behaviour:

* ``tensorflow`` / ``tensorflow-cpu`` (identical files, both install the import
  package ``tensorflow``): ``constant``, ``reduce_sum``, ``config.list_physical_devices``
  (GPUs come from the ``FAKE_TF_GPUS`` env var), a lazy ``tf.keras`` that is
  Keras 2 before 2.16 and, from 2.16 on, ``keras`` (Keras 3) unless
  ``TF_USE_LEGACY_KERAS`` is ``1``/``true``, in which case it is ``tf_keras``.
  Importing it imports nothing else.
* ``scipy 1.11.4`` was "compiled against NumPy 1.x": importing it with NumPy 2.x
  installed raises ``ImportError: numpy.core.multiarray failed to import``, which
  is what really happens after ``pip install -U numpy`` in an old environment.
  A NumPy outside the release's declared range but of the same major version
  only warns (as real SciPy does).
* ``tensorflow-text`` is a compiled op library: importing it imports
  ``tensorflow`` and fails unless TensorFlow's major.minor matches its own.

Compiled projects (tensorflow*, numpy, scipy, pandas, h5py, ml-dtypes,
tensorflow-text) get one platform wheel per CPython minor the real release has
wheels for, tagged as on PyPI: ``cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64``
(see :func:`cp`), so uv's interpreter/ABI/glibc selection is exercised; pure
projects are one ``py3-none-any`` wheel.

Build it all with :func:`build_catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .wheels import build_wheel, normalize_name, wheel_filename

__all__ = [
    "Release",
    "CATALOG",
    "TF_VERSIONS",
    "MANYLINUX",
    "build_catalog",
    "cp",
    "releases",
    "versions",
    "latest",
    "tf_modules",
]

#: Platform tag of the compiled wheels: what PyPI's TensorFlow/NumPy x86_64 Linux wheels carry.
MANYLINUX = "manylinux_2_17_x86_64.manylinux2014_x86_64"


@dataclass(frozen=True)
class Release:
    """One wheel of the fake universe (arguments of :func:`~tests.kit.wheels.build_wheel`)."""

    name: str
    version: str
    requires: tuple[str, ...] = ()
    requires_python: str | None = None
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    modules: Mapping[str, str] | None = None
    entry_points: Mapping[str, str] | None = None
    #: One wheel per tag; compiled projects have one per CPython minor (see :func:`cp`).
    tags: tuple[str, ...] = ("py3-none-any",)

    @property
    def tag(self) -> str:
        """All the release's wheel tags in one string: ``"cp311" in release.tag`` asks "is there a 3.11 wheel?"."""
        return " ".join(self.tags)

    @property
    def filenames(self) -> list[str]:
        """The wheels' file names, e.g. ``tensorflow-2.15.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl``."""
        return [wheel_filename(self.name, self.version, tag) for tag in self.tags]

    def build(self, dest_dir: str | Path) -> list[Path]:
        """Write every wheel of the release into ``dest_dir``; return their paths."""
        return [
            build_wheel(
                dest_dir,
                self.name,
                self.version,
                requires=self.requires,
                requires_python=self.requires_python,
                extras=self.extras,
                modules=self.modules,
                entry_points=self.entry_points,
                tag=tag,
            )
            for tag in self.tags
        ]


def cp(first: int, last: int) -> tuple[str, ...]:
    """Wheel tags for CPython 3.<first>..3.<last>, one per minor, as on PyPI.

    ``cp(9, 10)`` -> ``("cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64", "cp310-cp310-...")``.
    Real TensorFlow, NumPy, SciPy ... ship one compiled wheel per CPython minor, so a
    release simply does not exist for other Pythons.  uv ignores the *upper* bound of
    ``Requires-Python`` (``<3.12`` is treated as absent), so without these tags
    TF 2.15.1 would happily install on Python 3.12 in the fake world but not the real one.
    The wheels hold only Python files, so they install on any glibc x86_64 Linux
    (the tests' machine); uv picks them by interpreter, ABI and glibc like real ones.
    """
    return tuple(f"cp3{m}-cp3{m}-{MANYLINUX}" for m in range(first, last + 1))


# --------------------------------------------------------------------------- module sources


def _simple(import_path: str, project: str, version: str, body: str = "") -> dict[str, str]:
    """One package ``import_path`` (dots allowed: ``google.protobuf``) with ``__version__``."""
    rel = import_path.replace(".", "/") + "/__init__.py"
    src = f'"""Fake {project} {version} (tfrebuild test kit)."""\n__version__ = "{version}"\n' + body
    return {rel: src}


_TF_INIT = '''\
"""Fake TensorFlow {version} (tfrebuild test kit).

``tensorflow`` and ``tensorflow-cpu`` ship this same file.  Importing it imports
nothing from other distributions; ``tf.keras`` is resolved lazily.
"""
import os as _os

from tensorflow import config  # noqa: F401  (tf.config is a module, as in real TF)

__version__ = "{version}"
VERSION = __version__
__git_version__ = "v{version}-0-gfake"

# TF >= 2.16 ships Keras 3 as tf.keras unless TF_USE_LEGACY_KERAS selects tf_keras.
_KERAS_3_ERA = {keras3}


class Tensor(object):
    """A tiny eager tensor wrapping a number or a (nested) list of numbers."""

    def __init__(self, value):
        self._value = value

    def numpy(self):
        return self._value

    def __float__(self):
        return float(self._value)

    def __int__(self):
        return int(self._value)

    def __eq__(self, other):
        other = other.numpy() if isinstance(other, Tensor) else other
        return self._value == other

    def __hash__(self):
        return id(self)

    def __repr__(self):
        return "<tf.Tensor: numpy=%r>" % (self._value,)


def _flatten(value):
    if isinstance(value, Tensor):
        value = value.numpy()
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            out.extend(_flatten(item))
        return out
    return [value]


def constant(value, dtype=None, shape=None, name=None):
    """Wrap ``value`` (number or nested list) in a :class:`Tensor`."""
    return Tensor(value.numpy() if isinstance(value, Tensor) else value)


def reduce_sum(input_tensor, axis=None, keepdims=False, name=None):
    """Sum of all elements, as a scalar :class:`Tensor` (``float()`` works on it)."""
    return Tensor(sum(_flatten(input_tensor)))


def _keras_module_name():
    if not _KERAS_3_ERA:
        return "keras"
    legacy = _os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower()
    return "tf_keras" if legacy in ("1", "true") else "keras"


class saved_model(object):  # noqa: N801 - mirrors tf.saved_model
    @staticmethod
    def load(export_dir, tags=None, options=None):
        from tensorflow import _fakemodel

        return _fakemodel.saved_model_load(export_dir)


def load_op_library(library_filename):
    """As real TF: load a custom op library (a .so); one built for another TensorFlow minor fails to load.

    The kit's op libraries are text files naming the TensorFlow minor they were "built" for."""
    with open(library_filename, "rb") as fh:
        text = fh.read().decode("utf-8", "replace")
    built = text.split("built for tensorflow ", 1)[-1].split()[0] if "built for tensorflow " in text else "?"
    if built != ".".join(__version__.split(".")[:2]):
        raise NotImplementedError(
            "unable to open file: %s, from paths: [%r]\\ncaused by: [%r: undefined symbol: "
            "_ZN10tensorflow15TensorShapeBaseINS_11TensorShapeEEC2EN4absl12lts_202308024SpanIKlEE]"
            % (_os.path.basename(library_filename), library_filename, library_filename))
    return type("OpModule", (), {{"OP_LIST": []}})()


def __getattr__(name):
    # As real TF >= 2.16: ``tf.keras`` is resolved on first use; with TF_USE_LEGACY_KERAS it is tf_keras's
    # API module ``tf_keras.api._v2.keras``, which has no ``__version__`` (tf.keras.__version__ fails).
    if name == "keras":
        import importlib

        module = _keras_module_name()
        return importlib.import_module("tf_keras.api._v2.keras" if module == "tf_keras" else module)
    raise AttributeError("module 'tensorflow' has no attribute %r" % (name,))
'''

_TF_CONFIG = '''\
"""Fake ``tf.config``: devices come from the FAKE_TF_GPUS environment variable."""
import collections as _collections
import os as _os

PhysicalDevice = _collections.namedtuple("PhysicalDevice", ["name", "device_type"])


def _gpu_count():
    try:
        return max(0, int(_os.environ.get("FAKE_TF_GPUS", "0").strip() or 0))
    except ValueError:
        return 0


def list_physical_devices(device_type=None, kind=None):
    """Like real TF: one CPU, plus ``$FAKE_TF_GPUS`` GPUs.  ``"GPU"`` -> only the GPUs."""
    wanted = device_type if device_type is not None else kind
    devices = [PhysicalDevice("/physical_device:CPU:0", "CPU")]
    devices += [PhysicalDevice("/physical_device:GPU:%d" % i, "GPU") for i in range(_gpu_count())]
    if wanted is None:
        return devices
    return [d for d in devices if d.device_type == str(wanted).upper()]


def list_logical_devices(device_type=None):
    return list_physical_devices(device_type)


class experimental(object):  # noqa: N801 - mirrors tf.config.experimental
    list_physical_devices = staticmethod(list_physical_devices)

    @staticmethod
    def set_memory_growth(device, enable):
        return None
'''

_TF_CLI = '''\
"""Console scripts of the fake TensorFlow (saved_model_cli, tf_upgrade_v2)."""
import sys

import tensorflow


def saved_model_cli():
    print("saved_model_cli (fake tensorflow %s)" % tensorflow.__version__)
    return 0


def tf_upgrade_v2():
    print("tf_upgrade_v2 (fake tensorflow %s)" % tensorflow.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(saved_model_cli())
'''


_TF_FAKEMODEL = '''\
"""Fake saved models (tfrebuild test kit): a JSON document holding a linear model ``y = x W + b``.

``{"fake_model": 1, "weights": [[...]], "bias": [...]}`` in a ``.h5``/``.keras`` file, or as ``saved_model.pb`` of a
SavedModel folder (with ``keras_metadata.pb`` when "Keras 2 made it"). Optional keys make it depend on the
TensorFlow that loads it: ``min_tf``/``max_tf`` ("2.18": refused below/above that minor, as a model using an op
another release lacks), ``drift`` ({"2.20": 0.5}: every output moves by 0.5 from TF 2.20 on, as numerics change
between releases), ``crash_tf`` (the process dies loading it from that minor on), ``input_name``; ``touch`` (a
path: loading it writes that file, as a Keras-2 Lambda layer's bytecode or a SavedModel's file ops could) and
``sleep`` (seconds loading takes; with ``sleep_tf``, from that minor on only: a model that hangs in the new release).
"""
import json
import os

import tensorflow as _tf


def _minor(text):
    return tuple(int(p) for p in str(text).split(".")[:2])


class Spec(object):
    def __init__(self, shape, dtype, name=""):
        self.shape, self.dtype, self.name = shape, dtype, name


class Model(object):
    def __init__(self, doc, path):
        now = _minor(_tf.__version__)
        if doc.get("min_tf") and now < _minor(doc["min_tf"]):
            raise ValueError("Unable to load %s: op FakeGelu%s is not registered in TensorFlow %s"
                             % (path, doc["min_tf"], _tf.__version__))
        if doc.get("max_tf") and now > _minor(doc["max_tf"]):
            raise ValueError("Unable to load %s: op FakeLegacyOp was removed after TensorFlow %s (this is %s)"
                             % (path, doc["max_tf"], _tf.__version__))
        if doc.get("crash_tf") and now >= _minor(doc["crash_tf"]):  # a native crash ends the whole process
            import sys

            sys.stderr.write("Fatal Python error: Segmentation fault (fake, loading %s)\\n" % path)
            sys.stderr.flush()
            os._exit(139)
        if doc.get("touch"):  # the payload: code the model runs when loaded
            with open(doc["touch"], "w") as fh:
                fh.write("loaded by pid %d\\n" % os.getpid())
        if doc.get("sleep") and now >= _minor(doc.get("sleep_tf") or "0.0"):
            import time

            time.sleep(float(doc["sleep"]))
        self.doc = doc
        self.inputs = [Spec([None, len(doc["weights"])], "float32", doc.get("input_name", "x"))]
        self.drift = sum(amount for since, amount in (doc.get("drift") or {}).items() if now >= _minor(since))

    def __call__(self, x, training=False):
        rows = x.numpy() if hasattr(x, "numpy") else x
        w, b = self.doc["weights"], self.doc["bias"]
        return _tf.Tensor([[sum(r[j] * w[j][k] for j in range(len(w))) + b[k] + self.drift for k in range(len(b))]
                           for r in rows])

    def predict(self, x, verbose="auto", **kwargs):
        return self(x).numpy()


def read(path):
    path = str(path)
    with open(os.path.join(path, "saved_model.pb") if os.path.isdir(path) else path) as fh:
        return json.load(fh)


class _Signature(object):
    def __init__(self, model):
        self.model = model
        self.structured_input_signature = ((), {model.inputs[0].name: model.inputs[0]})

    def __call__(self, **kwargs):
        (x,) = kwargs.values()
        return {"output_0": self.model(x)}


class _Loaded(object):
    def __init__(self, model):
        self.signatures = {"serving_default": _Signature(model)}


def saved_model_load(path):
    path = str(path)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise OSError("SavedModel file does not exist at: %s/{saved_model.pbtxt|saved_model.pb}" % path)
    return _Loaded(Model(read(path), path))
'''


def tf_modules(version: str) -> dict[str, str]:
    major, minor = (int(p) for p in version.split(".")[:2])
    keras3 = (major, minor) >= (2, 16)
    return {
        "tensorflow/__init__.py": _TF_INIT.format(version=version, keras3=keras3),
        "tensorflow/config/__init__.py": _TF_CONFIG,
        "tensorflow/_cli.py": _TF_CLI,
        "tensorflow/_fakemodel.py": _TF_FAKEMODEL,
    }


_KERAS_ENGINE = '''\
"""Fake Keras engine: Sequential, Dense, compile, fit, predict, save and load (a JSON file as ".h5")."""
import json as _json

VERSION = "{version}"
# Keras 3 saves only .keras/.h5 files; Keras 2 also writes a SavedModel folder for any other path.
SAVE_SUFFIXES = {suffixes!r}


class Layer(object):
    def __init__(self, units=1, activation=None, input_shape=None, **kwargs):
        self.units, self.activation, self.input_shape = units, activation, input_shape

    def get_config(self):
        return {{"units": self.units, "activation": self.activation, "input_shape": self.input_shape}}


class Dense(Layer):
    pass


class History(object):
    def __init__(self, epochs):
        self.history = {{"loss": [1.0 / (i + 1) for i in range(epochs)]}}


class Sequential(object):
    def __init__(self, layers=None, name=None):
        self.layers = list(layers or [])
        self.compiled = False

    def add(self, layer):
        self.layers.append(layer)

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        self.compiled = True

    def fit(self, x=None, y=None, epochs=1, batch_size=None, verbose="auto", **kwargs):
        if not self.compiled:
            raise RuntimeError("You must compile your model before training/testing.")
        return History(epochs)

    def predict(self, x, verbose="auto", **kwargs):
        rows = x.numpy() if hasattr(x, "numpy") else x
        return [[0.0] * self.layers[-1].units for _ in rows]

    def save(self, filepath, **kwargs):
        path = str(filepath)
        if SAVE_SUFFIXES and not path.endswith(SAVE_SUFFIXES):
            raise ValueError("Invalid filepath extension for saving: %s" % path)
        with open(path, "w") as f:
            _json.dump({{"keras": VERSION, "layers": [layer.get_config() for layer in self.layers]}}, f)


class TFSMLayer(Layer):
    """Keras 3's way to call a TensorFlow SavedModel (its serving signature) as a layer."""

    def __init__(self, filepath, call_endpoint="serving_default", **kwargs):
        import tensorflow as _tf

        self._fn = _tf.saved_model.load(filepath).signatures[call_endpoint]

    def __call__(self, inputs, **kwargs):
        name = list(self._fn.structured_input_signature[1])[0]
        return self._fn(**{{name: inputs}})


def load_model(filepath, **kwargs):
    import os as _os

    path = str(filepath)
    if _os.path.isdir(path):  # a SavedModel folder: Keras 2 reads it, Keras 3 refuses it (as the real ones do)
        if SAVE_SUFFIXES:
            raise ValueError("File format not supported: filepath=%s. Keras 3 only supports V3 `.keras` files and "
                             "legacy H5 format files (`.h5` extension). Note that the legacy SavedModel format is not "
                             "supported by `load_model()` in Keras 3. In order to reload a TensorFlow SavedModel as an "
                             "inference-only layer in Keras 3, use `keras.layers.TFSMLayer(%s, "
                             "call_endpoint='serving_default')`" % (path, path))
        from tensorflow import _fakemodel

        return _fakemodel.Model(_fakemodel.read(path), path)
    with open(path) as f:
        doc = _json.load(f)
    if "fake_model" in doc:
        from tensorflow import _fakemodel

        return _fakemodel.Model(doc, path)
    model = Sequential([Dense(**config) for config in doc["layers"]])
    model.compiled = True
    return model
'''


def keras_modules(import_name: str, project: str, version: str) -> dict[str, str]:
    """A fake Keras: ``layers.Dense`` and ``Sequential`` are defined in ``<import_name>.src.engine``, as real
    Keras classes live in ``keras.src...`` / ``tf_keras.src...``; tf_keras also has the API module TensorFlow
    hands out as ``tf.keras`` (``tf_keras.api._v2.keras``, no ``__version__``)."""
    suffixes = (".keras", ".h5") if int(version.split(".")[0]) >= 3 else ()
    engine = f"from {import_name}.src.engine import"
    api = f"{engine} Sequential, load_model  # noqa: F401\nfrom {import_name} import layers, models  # noqa: F401\n"
    out = _simple(import_name, project, version, api)
    out.update(
        {
            f"{import_name}/src/__init__.py": "",
            f"{import_name}/src/engine.py": _KERAS_ENGINE.format(version=version, suffixes=suffixes),
            f"{import_name}/layers/__init__.py": f"{engine} Dense, Layer, TFSMLayer  # noqa: F401\n",
            f"{import_name}/models/__init__.py": f"{engine} Sequential, load_model  # noqa: F401\n",
        }
    )
    if import_name == "tf_keras":
        out.update(
            {
                "tf_keras/api/__init__.py": "",
                "tf_keras/api/_v2/__init__.py": "",
                "tf_keras/api/_v2/keras/__init__.py": api,
            }
        )
    return out


_NUMPY_ABI_CHECK = '''
def _check_numpy():
    """Model a compiled extension: NumPy newer than the major it was built with dies."""
    import warnings

    import numpy

    def parse(text):
        out = []
        for part in text.split(".")[:3]:
            digits = ""
            for ch in part:
                if not ch.isdigit():
                    break
                digits += ch
            out.append(int(digits or 0))
        return tuple(out + [0] * (3 - len(out)))

    have = parse(numpy.__version__)
    if have[0] > _BUILT_AGAINST_NUMPY_MAJOR:
        raise ImportError(
            "\\nA module that was compiled using NumPy %d.x cannot be run in\\n"
            "NumPy %s as it may crash. To support both 1.x and 2.x\\n"
            "versions of NumPy, modules must be compiled with NumPy 2.0.\\n\\n"
            "numpy.core.multiarray failed to import"
            % (_BUILT_AGAINST_NUMPY_MAJOR, numpy.__version__)
        )
    if not (parse(_NUMPY_MIN) <= have < parse(_NUMPY_CAP)):
        warnings.warn(
            "A NumPy version >=%s and <%s is required for this version of SciPy "
            "(detected version %s)" % (_NUMPY_MIN, _NUMPY_CAP, numpy.__version__),
            UserWarning,
        )


_check_numpy()
'''


def _scipy_modules(version: str, numpy_min: str, numpy_cap: str, built_major: int) -> dict[str, str]:
    body = (
        f'_NUMPY_MIN = "{numpy_min}"\n_NUMPY_CAP = "{numpy_cap}"\n'
        f"_BUILT_AGAINST_NUMPY_MAJOR = {built_major}\n" + _NUMPY_ABI_CHECK
    )
    return _simple("scipy", "scipy", version, body)


_TFTEXT_CHECK = """
import tensorflow as _tf

if ".".join(_tf.__version__.split(".")[:2]) != "{mm}":
    raise ImportError(
        "tensorflow_text {version} was built for TensorFlow {mm}, found %s: "
        "_regex_split_ops.so: undefined symbol: _ZN10tensorflow8OpKernel11TraceStringEv"
        % _tf.__version__
    )
"""


def _tftext_modules(version: str) -> dict[str, str]:
    mm = ".".join(version.split(".")[:2])
    return _simple("tensorflow_text", "tensorflow-text", version, _TFTEXT_CHECK.format(mm=mm, version=version))


_TENSORBOARD_MAIN = '''\
"""Console script of the fake TensorBoard."""
import sys

import tensorboard


def run_main():
    print("TensorBoard %s (fake)" % tensorboard.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(run_main())
'''

# --------------------------------------------------------------------------- the releases

#: TensorFlow versions in the catalog, oldest first.
TF_VERSIONS = ("2.15.1", "2.16.1", "2.18.0", "2.20.0", "2.21.0")

# Real Requires-Dist / Requires-Python shapes (trimmed to packages in the kit).
_TF_SHAPES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "2.15.1": (
        ">=3.9,<3.12",
        (
            "absl-py>=1.0.0",
            "numpy>=1.23.5,<2.0.0",
            "keras>=2.15.0,<2.16",
            "protobuf>=3.20.3,<5.0.0dev,!=4.21.0,!=4.21.1,!=4.21.2,!=4.21.3,!=4.21.4,!=4.21.5",
            "tensorboard>=2.15,<2.16",
            "tensorflow-estimator>=2.15.0,<2.16",
            "ml-dtypes~=0.3.1",
        ),
        ("nvidia-cuda-runtime-cu12==12.2.140", "nvidia-cudnn-cu12==8.9.4.25"),
    ),
    "2.16.1": (
        ">=3.9,<3.13",
        (
            "absl-py>=1.0.0",
            "numpy>=1.23.5,<2.0.0",
            "keras>=3.0.0",
            "protobuf>=3.20.3,<5.0.0dev,!=4.21.0,!=4.21.1,!=4.21.2,!=4.21.3,!=4.21.4,!=4.21.5",
            "tensorboard>=2.16,<2.17",
            "ml-dtypes~=0.3.1",
        ),
        ("nvidia-cuda-runtime-cu12==12.3.101", "nvidia-cudnn-cu12==8.9.7.29"),
    ),
    "2.18.0": (
        ">=3.9,<3.13",
        (
            "absl-py>=1.0.0",
            "numpy>=1.26.0,<2.1.0",
            "keras>=3.5.0",
            "protobuf>=3.20.3,<6.0.0dev,!=4.21.0,!=4.21.1,!=4.21.2,!=4.21.3,!=4.21.4,!=4.21.5",
            "tensorboard>=2.18,<2.19",
            "ml-dtypes>=0.4.0,<0.5.0",
        ),
        ("nvidia-cuda-runtime-cu12==12.5.82", "nvidia-cudnn-cu12==9.3.0.75"),
    ),
    "2.20.0": (
        ">=3.9,<3.14",
        (
            "absl-py>=1.0.0",
            "numpy>=1.26.0",
            "keras>=3.10.0",
            "protobuf>=5.28.0",
            "tensorboard~=2.20.0",
            "ml-dtypes>=0.5.1,<1.0.0",
        ),
        ("nvidia-cuda-runtime-cu12>=12.5.82,<13.0", "nvidia-cudnn-cu12>=9.3.0.75,<10.0"),
    ),
    "2.21.0": (
        ">=3.10,<3.14",
        (
            "absl-py>=1.0.0",
            "numpy>=1.26.0",
            "keras>=3.12.0",
            "protobuf>=6.31.1,<8.0.0",
            "h5py>=3.11.0,<3.15",
            "ml-dtypes>=0.5.1,<1.0.0",
        ),
        ("nvidia-cuda-runtime-cu12>=12.5.82,<13.0", "nvidia-cudnn-cu12>=9.3.0.75,<10.0"),
    ),
}

#: CPython minors each TF release has wheels for (3.<first> .. 3.<last>).
_TF_CPYTHON = {"2.15.1": (9, 11), "2.16.1": (9, 12), "2.18.0": (9, 12), "2.20.0": (9, 13), "2.21.0": (10, 13)}

_TF_ENTRY_POINTS = {
    "saved_model_cli": "tensorflow._cli:saved_model_cli",
    "tf_upgrade_v2": "tensorflow._cli:tf_upgrade_v2",
}


def _tensorflow_releases() -> list[Release]:
    out = []
    for version in TF_VERSIONS:
        py, reqs, cuda = _TF_SHAPES[version]
        for project in ("tensorflow", "tensorflow-cpu"):
            out.append(
                Release(
                    project,
                    version,
                    requires=reqs,
                    requires_python=py,
                    extras={"and-cuda": cuda},
                    modules=tf_modules(version),
                    entry_points=_TF_ENTRY_POINTS,
                    tags=cp(*_TF_CPYTHON[version]),
                )
            )
    return out


def _r(name: str, version: str, requires: Iterable[str] = (), requires_python: str | None = None, **kw) -> Release:
    return Release(name, version, tuple(requires), requires_python, **kw)


def _other_releases() -> list[Release]:
    rel: list[Release] = []
    # numpy (Requires-Python as on PyPI)
    for v, py, tags in [
        ("1.23.5", ">=3.8", cp(8, 11)),
        ("1.24.3", ">=3.8", cp(8, 11)),
        ("1.26.4", ">=3.9", cp(9, 12)),
        ("2.0.2", ">=3.9", cp(9, 13)),
        ("2.1.3", ">=3.10", cp(10, 13)),
        ("2.4.0", ">=3.11", cp(11, 14)),
    ]:
        rel.append(_r("numpy", v, (), py, modules=_simple("numpy", "numpy", v), tags=tags))
    # scipy: 1.11.4 built against NumPy 1.x (dies under 2.x); 1.14.1 built against 2.0.
    rel.append(
        _r(
            "scipy",
            "1.11.4",
            ["numpy>=1.21.6,<1.28.0"],
            ">=3.9,<3.13",
            modules=_scipy_modules("1.11.4", "1.21.6", "1.28.0", built_major=1),
            tags=cp(9, 12),
        )
    )
    rel.append(
        _r(
            "scipy",
            "1.14.1",
            ["numpy>=1.23.5,<2.3"],
            ">=3.10",
            modules=_scipy_modules("1.14.1", "1.23.5", "2.3", built_major=2),
            tags=cp(10, 13),
        )
    )
    # pandas
    rel.append(
        _r(
            "pandas",
            "2.1.4",
            ["numpy>=1.23.2", "python-dateutil>=2.8.2"],
            ">=3.9",
            modules=_simple("pandas", "pandas", "2.1.4"),
            tags=cp(9, 12),
        )
    )
    rel.append(
        _r(
            "pandas",
            "2.2.3",
            ["numpy>=1.26.0", "python-dateutil>=2.8.2"],
            ">=3.9",
            modules=_simple("pandas", "pandas", "2.2.3"),
            tags=cp(9, 13),
        )
    )
    rel.append(
        _r(
            "python-dateutil",
            "2.9.0",
            ["six>=1.5"],
            "!=3.0.*,!=3.1.*,!=3.2.*,>=2.7",
            modules=_simple("dateutil", "python-dateutil", "2.9.0"),
        )
    )
    rel.append(
        _r(
            "six",
            "1.17.0",
            (),
            "!=3.0.*,!=3.1.*,!=3.2.*,>=2.7",
            modules={"six.py": '"""Fake six 1.17.0."""\n__version__ = "1.17.0"\n'},
        )
    )
    # keras: 2.15 has no deps; Keras 3 needs numpy, h5py, ml-dtypes, absl-py (loosely)
    rel.append(_r("keras", "2.15.0", (), ">=3.9", modules=keras_modules("keras", "keras", "2.15.0")))
    for v, py in [("3.5.0", ">=3.9"), ("3.10.0", ">=3.9"), ("3.12.0", ">=3.10")]:
        rel.append(
            _r("keras", v, ["absl-py", "numpy", "h5py", "ml-dtypes"], py, modules=keras_modules("keras", "keras", v))
        )
    # tf-keras (Keras 2 for TF >= 2.16); note: it requires `tensorflow`, never `tensorflow-cpu`
    for v, tf_range, py in [
        ("2.15.1", ">=2.15,<2.16", ">=3.9"),
        ("2.16.0", ">=2.16,<2.17", ">=3.9"),
        ("2.18.0", ">=2.18,<2.19", ">=3.9"),
        ("2.21.0", ">=2.21,<2.22", ">=3.10"),
    ]:
        rel.append(_r("tf-keras", v, [f"tensorflow{tf_range}"], py, modules=keras_modules("tf_keras", "tf-keras", v)))
    # tensorflow-text: requires `tensorflow` (off Apple silicon) and offers a tensorflow_cpu extra
    for v, lo, hi, py, tags in [
        ("2.15.0", "2.15.0", "2.16", ">=3.9", cp(9, 11)),
        ("2.18.1", "2.18.0", "2.19", ">=3.9", cp(9, 12)),
        ("2.21.1", "2.21.0", "2.22", ">=3.10", cp(10, 13)),
    ]:
        rel.append(
            _r(
                "tensorflow-text",
                v,
                [f'tensorflow>={lo},<{hi} ; platform_machine != "arm64" or platform_system != "Darwin"'],
                py,
                extras={"tensorflow_cpu": (f"tensorflow-cpu>={lo},<{hi}",)},
                modules=_tftext_modules(v),
                tags=tags,
            )
        )
    rel += _companion_releases()
    # protobuf (import package google.protobuf, a namespace `google`)
    for v, py in [("4.25.3", ">=3.8"), ("5.28.3", ">=3.8"), ("6.31.1", ">=3.9")]:
        rel.append(_r("protobuf", v, (), py, modules=_simple("google.protobuf", "protobuf", v)))
    # tensorboard
    for v in ("2.15.2", "2.16.2", "2.18.0", "2.20.0"):
        mods = _simple("tensorboard", "tensorboard", v)
        mods["tensorboard/main.py"] = _TENSORBOARD_MAIN
        rel.append(
            _r(
                "tensorboard",
                v,
                ["absl-py>=0.4", "numpy>=1.12.0", "protobuf>=3.19.6,!=4.24.0"],
                ">=3.9",
                modules=mods,
                entry_points={"tensorboard": "tensorboard.main:run_main"},
            )
        )
    rel.append(
        _r(
            "tensorflow-estimator",
            "2.15.0",
            (),
            ">=3.7",
            modules=_simple("tensorflow_estimator", "tensorflow-estimator", "2.15.0"),
        )
    )
    # ml-dtypes
    for v, np_req, tags in [
        ("0.3.2", "numpy>1.20", cp(9, 12)),
        ("0.4.1", "numpy>=1.21", cp(9, 13)),
        ("0.5.1", "numpy>=1.21", cp(9, 13)),
    ]:
        rel.append(_r("ml-dtypes", v, [np_req], ">=3.9", modules=_simple("ml_dtypes", "ml-dtypes", v), tags=tags))
    # h5py
    rel.append(
        _r("h5py", "3.11.0", ["numpy>=1.17.3"], ">=3.8", modules=_simple("h5py", "h5py", "3.11.0"), tags=cp(8, 12))
    )
    rel.append(
        _r("h5py", "3.14.0", ["numpy>=1.19.3"], ">=3.9", modules=_simple("h5py", "h5py", "3.14.0"), tags=cp(9, 13))
    )
    rel.append(_r("absl-py", "2.1.0", (), ">=3.7", modules=_simple("absl", "absl-py", "2.1.0")))
    # Placeholder `wheel` so `uv venv --seed` (pip + setuptools + wheel below Python 3.12) works
    # offline; the real pip/setuptools wheels are copied in by tests.kit.venvs.copy_seed_wheels.
    rel.append(_r("wheel", "0.45.1", (), ">=3.8", modules=_simple("wheel", "wheel", "0.45.1")))
    # CUDA runtime pieces pulled in by tensorflow[and-cuda] (namespace package `nvidia`)
    for v in ("12.2.140", "12.3.101", "12.5.82"):
        rel.append(
            _r(
                "nvidia-cuda-runtime-cu12",
                v,
                (),
                ">=3",
                modules=_simple("nvidia.cuda_runtime", "nvidia-cuda-runtime-cu12", v),
            )
        )
    for v in ("8.9.4.25", "8.9.7.29", "9.3.0.75"):
        rel.append(_r("nvidia-cudnn-cu12", v, (), ">=3", modules=_simple("nvidia.cudnn", "nvidia-cudnn-cu12", v)))
    rel += _true_words_releases()
    return rel


# The shapes issue 21's tests need (what tfrebuild says must be true):
#
# * ``fivedeep``: importing it goes five modules deep (fivedeep -> .a -> .b -> .c -> .d) and the last one fails
#   under TensorFlow >= 2.16 (as a package using Keras 2 internals does), so the check output must name
#   ``fivedeep/d.py`` and its line, not the import machinery.
# * ``tensorflow-forests``: a companion pinned to one TensorFlow release that lags TensorFlow, as
#   tensorflow-decision-forests does (1.11.0 -> tensorflow==2.18.0, 1.12.0 -> tensorflow==2.19.0 on PyPI);
#   here 1.11.0 pins 2.18.0 and 1.12.0 pins 2.20.0, and nothing accepts 2.21.0.
# * ``opencv-python``: a compiled package whose Requires-Dist on numpy has no upper bound, but 4.8.1.78 was
#   built for NumPy 1 and dies at import under NumPy 2 (as the real one does: "numpy.core.multiarray failed
#   to import"); 4.10.0.84 is the first release built for NumPy 2 (rebuild/knowledge/data/numpy2.toml).
_FIVEDEEP_D = """
import tensorflow as _tf

_major, _minor = (int(p) for p in _tf.__version__.split(".")[:2])
if (_major, _minor) >= (2, 16):
    raise ImportError("cannot import name 'base_layer_utils' from 'keras.engine' (Keras 3 has no keras.engine)")
"""


def _opencv_modules(version: str, built_major: int) -> dict[str, str]:
    body = f'_NUMPY_MIN = "1.21.2"\n_NUMPY_CAP = "99"\n_BUILT_AGAINST_NUMPY_MAJOR = {built_major}\n' + _NUMPY_ABI_CHECK
    return _simple("cv2", "opencv-python", version, body)


def _true_words_releases() -> list[Release]:
    rel = [
        _r(
            "fivedeep",
            "1.0.0",
            ["tensorflow-cpu>=2.15"],
            ">=3.9",
            modules={
                "fivedeep/__init__.py": '"""Fake fivedeep 1.0.0."""\n__version__ = "1.0.0"\nfrom fivedeep import a  # noqa\n',
                "fivedeep/a.py": "from fivedeep import b  # noqa: F401\n",
                "fivedeep/b.py": "from fivedeep import c  # noqa: F401\n",
                "fivedeep/c.py": "from fivedeep import d  # noqa: F401\n",
                "fivedeep/d.py": _FIVEDEEP_D,
            },
        )
    ]
    for v, tf in [("1.8.1", "~=2.15.0"), ("1.11.0", "==2.18.0"), ("1.12.0", "==2.20.0")]:
        rel.append(
            _r(
                "tensorflow-forests",
                v,
                [f"tensorflow{tf}"],
                ">=3.9",
                modules=_simple("tensorflow_forests", "tensorflow-forests", v),
            )
        )
    for v, major, tags in [("4.8.1.78", 1, cp(9, 12)), ("4.10.0.84", 2, cp(9, 13))]:
        rel.append(
            _r(
                "opencv-python",
                v,
                [
                    'numpy>=1.21.2; python_version >= "3.10"',
                    'numpy>=1.23.5; python_version >= "3.11"',
                    'numpy>=1.17.3; python_version >= "3.8"',
                ],
                ">=3.6",
                modules=_opencv_modules(v, major),
                tags=tags,
            )
        )
    return rel


_OPLIB = "\x7fELF (tfrebuild test kit) NEEDED libtensorflow_framework.so.2; built for tensorflow {mm}\n"

_KERAS2_ONLY = """
import tensorflow as _tf

if getattr(_tf.keras, "__version__", "2").startswith("3"):
    raise ImportError("cannot import name 'keras_tensor' from 'keras.src.engine' (Keras 2 internals; "
                      "tf.keras is Keras %s)" % _tf.keras.__version__)
"""

_NEEDS_TF_KERAS = """
import tensorflow as _tf

if _tf.__version__.split(".")[:2] >= ["2", "16"]:
    import tf_keras  # noqa: F401  (as tensorflow-probability >= 0.24 does)
"""

_PROTOBUF_MISMATCH = """
raise ImportError("google.protobuf.runtime_version.VersionError: Detected mismatched Protobuf Gencode/Runtime "
                  "major versions when loading protodep/model.proto: gencode 5.28.3 runtime 4.25.3")
"""


def _companion_releases() -> list[Release]:
    """Fake companions with each way of binding to TensorFlow (issue 20)."""
    rel: list[Release] = []
    # end of life below TF 2.16, Keras 2 internals at import (as tensorflow-addons 0.23.0)
    rel.append(
        _r(
            "tensorflow-addons",
            "0.23.0",
            (),
            ">=3.9",
            extras={"tensorflow": ("tensorflow<2.16,>=2.13",), "tensorflow-cpu": ("tensorflow-cpu<2.16,>=2.13",)},
            modules=_simple("tensorflow_addons", "tensorflow-addons", "0.23.0", _KERAS2_ONLY),
        )
    )
    # Keras-2-only; 0.8.0 requires tf-keras and uses it
    rel.append(
        _r(
            "tensorflow-model-optimization",
            "0.7.5",
            (),
            ">=3.9",
            modules=_simple("tensorflow_model_optimization", "tensorflow-model-optimization", "0.7.5", _KERAS2_ONLY),
        )
    )
    rel.append(
        _r(
            "tensorflow-model-optimization",
            "0.8.0",
            ["tf-keras>=2.14.1"],
            ">=3.9",
            modules=_simple("tensorflow_model_optimization", "tensorflow-model-optimization", "0.8.0", _KERAS2_ONLY),
        )
    )
    # Keras-2-only, and not in the companion table: only its failing check shows it
    rel.append(
        _r("kerasthing", "1.0.0", (), ">=3.9", modules=_simple("kerasthing", "kerasthing", "1.0.0", _KERAS2_ONLY))
    )
    # paired by release notes only (no TensorFlow requirement); needs tf-keras from TF 2.16
    for v in ("0.23.0", "0.24.0", "0.25.0"):
        rel.append(
            _r(
                "tensorflow-probability",
                v,
                (),
                ">=3.9",
                modules=_simple("tensorflow_probability", "tensorflow-probability", v, _NEEDS_TF_KERAS),
            )
        )
    # an op library built for one TensorFlow minor; its metadata says nothing about TensorFlow and its import does
    # not load the library (as tensorflow-io and tensorflow-text load theirs on first use)
    for v, mm in (("1.0.0", "2.15"), ("1.1.0", "2.18")):
        mods = _simple("tfops_demo", "tfops-demo", v)
        mods["tfops_demo/_demo_ops.so"] = _OPLIB.format(mm=mm)
        rel.append(_r("tfops-demo", v, (), ">=3.9", modules=mods))
    # a requested package whose newer release holds TensorFlow back: a plain resolution moves it backwards
    rel.append(_r("modelzoo", "1.0.0", (), ">=3.9", modules=_simple("modelzoo", "modelzoo", "1.0.0")))
    rel.append(
        _r("modelzoo", "2.0.0", ["tensorflow-cpu<2.16"], ">=3.9", modules=_simple("modelzoo", "modelzoo", "2.0.0"))
    )
    # runs on Python <= 3.11 only although its metadata says nothing (typing_extensions 4.5.0 on 3.12)
    rel.append(
        _r(
            "typing-extensions",
            "4.5.0",
            (),
            ">=3.7",
            modules={
                "typing_extensions.py": (
                    '"""Fake typing_extensions 4.5.0."""\nimport sys\n__version__ = "4.5.0"\nif sys.version_info >= (3, 12):\n'
                    "    raise TypeError(\"type 'typing.TypeVar' is not an acceptable base type\")\n"
                )
            },
        )
    )
    rel.append(
        _r(
            "typing-extensions",
            "4.12.2",
            (),
            ">=3.8",
            modules={"typing_extensions.py": ('"""Fake typing_extensions 4.12.2."""\n__version__ = "4.12.2"\n')},
        )
    )
    # as tf-models-official: pinned to TF's minor; its newer release needs a new major of a dependency (pyyaml 6),
    # and an old release pins nothing (2.7.2): capping that dependency below its next major moves it backwards
    rel.append(_r("modelgarden", "1.0.0", (), ">=3.9", modules=_simple("modelgarden", "modelgarden", "1.0.0")))
    rel.append(
        _r(
            "modelgarden",
            "2.15.0",
            ["tensorflow-cpu~=2.15.0", "yamlish>=5"],
            ">=3.9",
            modules=_simple("modelgarden", "modelgarden", "2.15.0"),
        )
    )
    rel.append(
        _r(
            "modelgarden",
            "2.21.0",
            ["tensorflow-cpu~=2.21.0", "yamlish>=6"],
            ">=3.10",
            modules=_simple("modelgarden", "modelgarden", "2.21.0"),
        )
    )
    for v in ("5.4.1", "6.0.2"):
        rel.append(_r("yamlish", v, (), ">=3.8", modules=_simple("yamlish", "yamlish", v)))
    # already broken: a protobuf gencode/runtime mismatch at import, in every env
    rel.append(
        _r("protodep", "1.0.0", (), ">=3.9", modules=_simple("protodep", "protodep", "1.0.0", _PROTOBUF_MISMATCH))
    )
    return rel


#: Every release in the fake universe.
CATALOG: tuple[Release, ...] = tuple(_tensorflow_releases() + _other_releases())


def releases(name: str | None = None) -> list[Release]:
    """All releases, or those of one project (name compared PEP 503-normalised)."""
    if name is None:
        return list(CATALOG)
    want = normalize_name(name)
    return [r for r in CATALOG if normalize_name(r.name) == want]


def _vkey(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def versions(name: str) -> list[str]:
    """Versions of ``name`` in the catalog, oldest first."""
    return sorted((r.version for r in releases(name)), key=_vkey)


def latest(name: str) -> str:
    """Newest version of ``name`` in the catalog."""
    return versions(name)[-1]


def build_catalog(dest_dir: str | Path, *, names: Iterable[str] | None = None) -> Path:
    """Build every catalog wheel (or only projects in ``names``) into ``dest_dir``; return it.

    The folder is a flat ``--find-links`` directory.  Bytes are deterministic,
    so rebuilding into the same folder is harmless.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = None if names is None else {normalize_name(n) for n in names}
    for release in CATALOG:
        if wanted is None or normalize_name(release.name) in wanted:
            release.build(dest)
    return dest
