"""Load one saved model, run one batch, keep or compare its answers: run by the env's own interpreter.

tfrebuild runs this file with the interpreter of the env being checked (``python -I -B _models.py JOBS``), so it
uses the standard library, NumPy and TensorFlow only, and no syntax newer than Python 3.8. ``JOBS`` is a JSON file
holding a list of models, run in turn in this one process (TensorFlow is imported once); each is an object
(:func:`rebuild.core.models_run.run_batch`):

* ``mode``: ``reference`` (load, make or read the inputs, run, write the inputs and the outputs),
  ``compare`` (load, run the kept inputs, compare with the kept outputs) or ``load`` (load and run the kept
  inputs, or inputs made from the signature, compare nothing);
* ``path``, ``loader`` (``keras``, ``saved_model``, ``tfsmlayer``, ``tflite``), ``inputs`` (a ``.npy``/``.npz``
  file, or ""), ``folder`` (the model's work folder: inputs and outputs are written only there), ``tag``
  (the name of this run's outputs), ``rtol``, ``atol``, ``imports``, ``extra_path`` (a folder put first on
  ``sys.path``: the tf-keras of the Keras 2 retry), ``seed``, ``batch``.

``JOBS`` may instead be an object (the new env's one process, :class:`rebuild.core.models_run.Checked`): ``check``
(TensorFlow's smoke check: TensorFlow's version is written to the file ``answer`` once it is imported), then the
list of models is read from the file ``go`` once it appears (within ``wait`` seconds) and run, and only then does
TensorFlow compute (the answer goes to the file ``computed``): the models find its runtime as fresh as in a new
process. Each step ends the process when it runs past its ``timeout`` (faulthandler).

Nothing is written inside the env or beside the model. For each model one line on stdout, ``MARK`` then a JSON
object: ``index`` (its place in the list), ``ok``, ``stage`` (where it stopped), ``error`` (the error's innermost
line), ``load_seconds``, ``outputs`` (each with its name, shape, dtype and, when compared, ``max_abs``/``max_rel``/
``ok``), ``keras`` and ``tensorflow``.

Arrays are NumPy arrays kept in ``.npz`` files. Where NumPy is not usable (the test kit's fake TensorFlow has
none), they are nested lists kept in ``.json`` files, compared the same way.
"""

import faulthandler
import json
import os
import sys
import time
import traceback

UNKNOWN_DIM = 16


def _numpy():
    try:
        import numpy
    except Exception:
        return None
    if all(hasattr(numpy, name) for name in ("asarray", "savez", "load", "random", "ndarray")):
        return numpy
    return None


class Failed(Exception):
    def __init__(self, stage, error, trace=""):
        Exception.__init__(self, error)
        self.stage, self.error, self.trace = stage, error, trace


def innermost(exc):
    """The error's innermost line: ``ValueError: File format not supported ...`` (first line of its message)."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    head = lines[0] if lines else type(exc).__name__
    return head[:600]


def short_trace(exc):
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return "".join(traceback.format_list(frames))[-1500:]


def step(stage, fn, *args):
    try:
        return fn(*args)
    except Failed:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure of the user's model is reported, not raised
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise Failed(stage, innermost(exc), short_trace(exc)) from exc


# --- arrays: NumPy where usable, else nested lists --------------------------------------------------------

NP = None


def as_array(value):
    if hasattr(value, "numpy"):
        value = value.numpy()
    if NP is not None:
        return NP.asarray(value)
    return value


def shape_of(value):
    if NP is not None:
        return list(value.shape)
    shape = []
    while isinstance(value, (list, tuple)):
        shape.append(len(value))
        value = value[0] if value else 0
    return shape


def dtype_of(value, declared=""):
    if NP is not None:
        return str(value.dtype)
    return declared or "float32"


def flat(value):
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            out.extend(flat(item))
        return out
    return [value]


def save_arrays(base, names, arrays, dtypes=None):
    """``base``.npz (or .json without NumPy) holding ``arrays`` in order; returns the file name."""
    if NP is not None:
        path = base + ".npz"
        with open(path, "wb") as fh:
            NP.savez(fh, **dict(("a%d" % i, a) for i, a in enumerate(arrays)))
    else:
        path = base + ".json"
        with open(path, "w") as fh:
            json.dump({"names": names, "dtypes": dtypes or ["float32"] * len(arrays), "arrays": arrays}, fh)
    return os.path.basename(path)


def load_arrays(base):
    if os.path.exists(base + ".npz"):
        if NP is None:
            raise Failed("inputs", "%s.npz needs NumPy, which this env cannot import" % base)
        with NP.load(base + ".npz", allow_pickle=False) as data:
            return [data["a%d" % i] for i in range(len(data.files))]
    with open(base + ".json") as fh:
        return json.load(fh)["arrays"]


def user_inputs(path, specs):
    """A ``.npy`` (one input) or ``.npz`` (one array per input: by name where the names match, else in order)."""
    if NP is None:
        raise Failed("inputs", "reading %s needs NumPy, which this env cannot import" % path)
    if path.endswith(".npy"):
        return [NP.load(path, allow_pickle=False)]
    with NP.load(path, allow_pickle=False) as data:
        names = list(data.files)
        wanted = [s["name"] for s in specs]
        if wanted and set(wanted) <= set(names):
            return [data[n] for n in wanted]
        return [data[n] for n in names]


def generated_inputs(specs, seed, batch):
    """Seeded inputs from the signature: normal floats, 0/1 integers and booleans; batch ``batch``, other
    unknown dimensions UNKNOWN_DIM."""
    out = []
    for i, spec in enumerate(specs):
        shape = [
            batch if n == 0 and (d is None or d < 0) else (UNKNOWN_DIM if d is None or d < 0 else d)
            for n, d in enumerate(spec["shape"])
        ]
        dtype = spec["dtype"]
        if dtype in ("string", "object") or dtype.startswith(("str", "<U", "|S")):
            raise Failed(
                "inputs",
                "input %r is %s: inputs cannot be made up for it; give them with `inputs` (a .npy/"
                ".npz file) in [[smoke.models]]" % (spec["name"], dtype),
            )
        if NP is not None:
            rng = NP.random.RandomState(seed + i)
            if dtype.startswith(("float", "bfloat", "complex")):
                arr = rng.standard_normal(shape).astype(dtype if dtype != "bfloat16" else "float32")
            elif dtype == "bool":
                arr = rng.randint(0, 2, size=shape).astype(bool)
            else:
                arr = rng.randint(0, 2, size=shape).astype(dtype)
            out.append(arr)
        else:
            import random

            rng = random.Random(seed + i)

            def fill(dims):
                if not dims:
                    return round(rng.gauss(0.0, 1.0), 6) if dtype.startswith("float") else rng.randint(0, 1)
                return [fill(dims[1:]) for _ in range(dims[0])]

            out.append(fill(shape))
    return out


def dtype_name(dtype):
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    if NP is not None:
        try:
            return str(NP.dtype(dtype))
        except TypeError:
            pass
    return str(dtype)


def dims(shape):
    try:
        return [None if d is None else int(d) for d in (shape.as_list() if hasattr(shape, "as_list") else shape)]
    except (TypeError, ValueError):
        return []


# --- loaders ---------------------------------------------------------------------------------------------


def keras_info(tf):
    try:
        module = tf.keras.layers.Dense.__module__.split(".")[0]
        import importlib

        return "%s %s" % (module, getattr(importlib.import_module(module), "__version__", "?"))
    except Exception as exc:  # noqa: BLE001
        return "? (%s)" % innermost(exc)


class Runner(object):
    """One loaded model: its input specs and a way to run one batch."""

    def __init__(self, tf, loader, path):
        self.tf, self.loader, self.path = tf, loader, path
        self.model = None
        self.specs = []
        if loader == "keras":
            kwargs = {"compile": False}
            if keras_info(tf).startswith("keras 3"):  # Keras 3: no Lambda layer's code is deserialized (its
                kwargs["safe_mode"] = True  # default for .keras; said here, not assumed)
            self.model = tf.keras.models.load_model(path, **kwargs)
            inputs = getattr(self.model, "inputs", None) or []
            for n, t in enumerate(inputs):
                self.specs.append(
                    {
                        "name": str(getattr(t, "name", "") or "input_%d" % n).split(":")[0],
                        "shape": dims(t.shape),
                        "dtype": dtype_name(t.dtype),
                    }
                )
        elif loader in ("saved_model", "tfsmlayer"):
            obj = tf.saved_model.load(path)
            sigs = getattr(obj, "signatures", {}) or {}
            if "serving_default" in sigs:
                self.fn = sigs["serving_default"]
            elif len(sigs):
                self.fn = sigs[sorted(sigs.keys())[0]]
            else:
                raise ValueError("the SavedModel at %s has no signature to call (save it with signatures=...)" % path)
            kwargs = self.fn.structured_input_signature[1]
            for name in sorted(kwargs):
                self.specs.append(
                    {"name": name, "shape": dims(kwargs[name].shape), "dtype": dtype_name(kwargs[name].dtype)}
                )
            if loader == "tfsmlayer":
                import keras

                self.model = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
        elif loader == "tflite":
            self.model = tf.lite.Interpreter(model_path=path)
            for d in self.model.get_input_details():
                sig = d.get("shape_signature")
                shape = list(sig) if sig is not None and len(sig) else list(d["shape"])
                self.specs.append(
                    {
                        "name": d["name"],
                        "shape": [None if int(x) < 0 else int(x) for x in shape],
                        "dtype": dtype_name(d["dtype"]),
                        "index": int(d["index"]),
                        "fixed": list(int(x) for x in d["shape"]),
                    }
                )
        else:
            raise ValueError("unknown loader %r" % loader)

    def ordered(self, names, arrays):
        """The arrays in this model's input order: by name where every name matches, else by position."""
        mine = [s["name"] for s in self.specs]
        if mine and set(mine) <= set(names) and len(names) == len(arrays):
            return [arrays[names.index(n)] for n in mine]
        if mine and len(mine) != len(arrays):
            raise ValueError(
                "the model takes %d input(s) (%s), the inputs hold %d" % (len(mine), ", ".join(mine), len(arrays))
            )
        return list(arrays)

    def run(self, names, arrays):
        tf = self.tf
        arrays = self.ordered(names, arrays)
        if self.loader == "keras":
            x = [tf.constant(a) for a in arrays]
            return self.model(x[0] if len(x) == 1 else x, training=False)
        if self.loader == "saved_model":
            return self.fn(**dict((s["name"], tf.constant(a)) for s, a in zip(self.specs, arrays)))
        if self.loader == "tfsmlayer":
            x = [tf.constant(a) for a in arrays]
            try:
                return self.model(x[0] if len(x) == 1 else x)
            except TypeError:
                return self.model(dict((s["name"], t) for s, t in zip(self.specs, x)))
        return self.run_tflite(arrays)

    def run_tflite(self, arrays):
        interp = self.model
        for spec, arr in zip(self.specs, arrays):
            if list(spec["fixed"]) != shape_of(arr):
                interp.resize_tensor_input(spec["index"], shape_of(arr))
        interp.allocate_tensors()
        for spec, arr in zip(self.specs, arrays):
            interp.set_tensor(spec["index"], arr)
        interp.invoke()
        details = sorted(interp.get_output_details(), key=lambda d: d["index"])
        return dict((d["name"], interp.get_tensor(d["index"]).copy()) for d in details)


def named_outputs(result):
    """A model's answer as ``[(name, array)]``: a dict by sorted key, a list or tuple in order, else one output."""
    if isinstance(result, dict):
        return [(str(k), as_array(result[k])) for k in sorted(result)]
    if (
        isinstance(result, (list, tuple))
        and result
        and all(hasattr(r, "numpy") or (NP is not None and isinstance(r, NP.ndarray)) for r in result)
    ):
        return [("output_%d" % i, as_array(r)) for i, r in enumerate(result)]
    return [("output_0", as_array(result))]


# --- comparing ---------------------------------------------------------------------------------------------


def compare(ref, got, rtol, atol):
    """``(ok, max_abs, max_rel, problem)`` of one output: every element within ``atol + rtol * |ref|``."""
    if shape_of(ref) != shape_of(got):
        return False, None, None, "shape %s, expected %s" % (shape_of(got), shape_of(ref))
    if NP is not None:
        r, g = NP.asarray(ref), NP.asarray(got)
        if r.size == 0:
            return True, 0.0, 0.0, ""
        if r.dtype.kind not in "fcbiu" or g.dtype.kind not in "fcbiu":
            same = bool(NP.all(r == g))
            return same, None, None, "" if same else "values differ (dtype %s)" % r.dtype
        r64, g64 = r.astype("float64"), g.astype("float64")
        nan_r, nan_g = NP.isnan(r64), NP.isnan(g64)
        if bool(NP.any(nan_r != nan_g)):
            return (
                False,
                None,
                None,
                "NaN at %d place(s) where the reference has a number, or the reverse" % int(NP.sum(nan_r != nan_g)),
            )
        diff = NP.where(nan_r, 0.0, NP.abs(r64 - g64))
        scale = NP.abs(NP.where(nan_r, 0.0, r64))
        max_abs = float(NP.max(diff))
        rel = NP.where(scale > 0, diff / NP.where(scale > 0, scale, 1.0), NP.where(diff > 0, NP.inf, 0.0))
        max_rel = float(NP.max(rel))
        exact = r.dtype.kind in "biu"
        ok = bool(NP.all(diff == 0)) if exact else bool(NP.all(diff <= atol + rtol * scale))
        return ok, max_abs, max_rel, ""
    rf, gf = flat(ref), flat(got)
    max_abs = max_rel = 0.0
    ok = True
    for a, b in zip(rf, gf):
        if a != a or b != b:
            if (a != a) != (b != b):
                return False, None, None, "NaN where the reference has a number, or the reverse"
            continue
        d = abs(float(a) - float(b))
        max_abs = max(max_abs, d)
        max_rel = max(max_rel, d / abs(float(a)) if a else (float("inf") if d else 0.0))
        ok = ok and d <= atol + rtol * abs(float(a))
    return ok, max_abs, max_rel, ""


def finite(x):
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else x


# --- main --------------------------------------------------------------------------------------------------


def run_one(spec):
    """One model: its answer (a dict, never raises but for an interrupt)."""
    global NP
    mode, folder, tag = spec["mode"], spec["folder"], spec.get("tag", spec["mode"])
    out = {
        "ok": False,
        "stage": "import",
        "error": "",
        "trace": "",
        "load_seconds": None,
        "run_seconds": None,
        "loader": spec["loader"],
        "tag": tag,
        "outputs": [],
        "inputs": [],
        "keras": "",
        "tensorflow": "",
    }
    try:
        if spec.get("extra_path"):
            sys.path.insert(0, spec["extra_path"])
        tf = step("import", lambda: __import__("tensorflow"))
        out["tensorflow"] = str(getattr(tf, "__version__", "?"))
        NP = _numpy()
        for name in spec.get("imports") or []:
            step("import", __import__, name)
        if spec["loader"] in ("keras", "tfsmlayer"):
            out["keras"] = keras_info(tf)
        out["stage"] = "load"
        start = time.monotonic()
        runner = step("load", Runner, tf, spec["loader"], spec["path"])
        out["load_seconds"] = round(time.monotonic() - start, 3)
        out["stage"] = "inputs"
        base = os.path.join(folder, "inputs")
        if mode == "reference":
            if spec.get("inputs"):
                arrays = step("inputs", user_inputs, spec["inputs"], runner.specs)
            else:
                if not runner.specs:
                    raise Failed(
                        "inputs",
                        "the model does not state its inputs (a subclassed model?): give them with "
                        "`inputs` (a .npy/.npz file) in [[smoke.models]]",
                    )
                arrays = step(
                    "inputs", generated_inputs, runner.specs, int(spec.get("seed", 0)), int(spec.get("batch", 8))
                )
            names = (
                [s["name"] for s in runner.specs]
                if len(runner.specs) == len(arrays)
                else ["input_%d" % i for i in range(len(arrays))]
            )
            step("inputs", save_arrays, base, names, arrays, [s["dtype"] for s in runner.specs])
            with open(os.path.join(folder, "inputs-names.json"), "w") as fh:
                json.dump(names, fh)
        elif mode == "load" and not os.path.exists(os.path.join(folder, "inputs-names.json")):
            arrays = step("inputs", generated_inputs, runner.specs, int(spec.get("seed", 0)), int(spec.get("batch", 8)))
            names = [s["name"] for s in runner.specs]
        else:
            with open(os.path.join(folder, "inputs-names.json")) as fh:
                names = json.load(fh)
            arrays = step("inputs", load_arrays, base)
        out["inputs"] = [{"name": n, "shape": shape_of(a)} for n, a in zip(names, arrays)]
        out["stage"] = "run"
        start = time.monotonic()
        result = step("run", runner.run, names, arrays)
        outputs = step("run", named_outputs, result)
        out["run_seconds"] = round(time.monotonic() - start, 3)
        got = [a for _, a in outputs]
        step("run", save_arrays, os.path.join(folder, tag), [n for n, _ in outputs], got)
        out["stage"] = "compare"
        rows = [{"name": n, "shape": shape_of(a), "dtype": dtype_of(a)} for n, a in outputs]
        if mode == "compare":
            with open(os.path.join(folder, "reference-meta.json")) as fh:
                ref_names = json.load(fh)["outputs"]
            refs = load_arrays(os.path.join(folder, "reference"))
            if len(refs) != len(got):
                raise Failed(
                    "compare",
                    "%d output(s) (%s), the reference has %d (%s)"
                    % (len(got), ", ".join(n for n, _ in outputs), len(refs), ", ".join(r["name"] for r in ref_names)),
                )
            by_name = [r["name"] for r in ref_names]
            same_names = sorted(by_name) == sorted(n for n, _ in outputs)
            for i, (row, (name, arr)) in enumerate(zip(rows, outputs)):
                ref = refs[by_name.index(name)] if same_names else refs[i]
                ok, max_abs, max_rel, problem = compare(ref, arr, float(spec["rtol"]), float(spec["atol"]))
                row.update(
                    ok=ok,
                    max_abs=finite(max_abs),
                    max_rel=finite(max_rel) if max_rel != float("inf") else None,
                    problem=problem,
                    infinite_rel=max_rel == float("inf"),
                )
            out["ok"] = all(r["ok"] for r in rows)
            if not out["ok"]:
                out["error"] = "; ".join(
                    "%s: %s"
                    % (
                        r["name"],
                        r["problem"]
                        or "max abs diff %.3g, max rel diff %s"
                        % (r["max_abs"], "inf" if r.get("infinite_rel") else "%.3g" % (r["max_rel"] or 0.0)),
                    )
                    for r in rows
                    if not r["ok"]
                )
        else:
            out["ok"] = True
        out["outputs"] = rows
        if mode == "reference":
            with open(os.path.join(folder, "reference-meta.json"), "w") as fh:
                json.dump(
                    {
                        "outputs": rows,
                        "load_seconds": out["load_seconds"],
                        "keras": out["keras"],
                        "tensorflow": out["tensorflow"],
                    },
                    fh,
                )
        out["stage"] = "done"
    except Failed as exc:
        out["stage"], out["error"], out["trace"] = exc.stage, exc.error, exc.trace
    except Exception as exc:  # noqa: BLE001
        out["error"], out["trace"] = innermost(exc), short_trace(exc)
    return out


MARK = "@@tfrebuild-model@@ "


def timer(seconds):
    """End this process after ``seconds`` (faulthandler's watchdog thread fires even while the main thread is stuck in
    compiled code; it prints ``Timeout (h:mm:ss)!``, which the parent reads as this step's timeout)."""
    if seconds:
        faulthandler.dump_traceback_later(float(seconds), exit=True)


def tf_answer(check, key, compute):
    """TensorFlow's smoke check "tensorflow imports and computes", written to the file ``check[key]``. First half
    (``compute`` false, key "answer"): imported, its version written at once (the parent reads it while the other
    checks run); no op runs yet, so the models' imports and loads after it find TensorFlow's runtime as fresh as in
    the current env's reference run (``tf.config`` can still be set). Second half (key "computed"), after the
    models: an op runs."""
    timer(check.get("timeout"))
    try:
        import tensorflow as tf

        got = {"version": tf.__version__}
        if compute:
            got["total"] = float(tf.reduce_sum(tf.constant([1.0, 2.0])))
    except Exception:  # noqa: BLE001 - the check's answer
        got = {"error": traceback.format_exc()}
    faulthandler.cancel_dump_traceback_later()
    write_answer(check[key], got)
    return "error" not in got


def write_answer(path, got):
    with open(path + ".tmp", "w") as fh:
        json.dump(got, fh)
    os.rename(path + ".tmp", path)


def wait_go(path, seconds):
    """The model jobs, once the parent writes them (after the current env's reference run), or None."""
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as fh:
                return json.load(fh)
        time.sleep(0.02)
    return None


def main():
    """Every model of the jobs file in turn (TensorFlow is imported once); one marked JSON line per model. A jobs file
    that is an object (:func:`rebuild.core.models_run.Checked`) runs TensorFlow's import check first, then waits for
    the model jobs in the file it names."""
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    check = None
    if isinstance(jobs, dict):
        check = jobs["check"]
        if not tf_answer(check, "answer", compute=False):
            return
        jobs = wait_go(jobs["go"], jobs["wait"])
        if jobs is None:
            tf_answer(check, "computed", compute=True)
            sys.exit("no model jobs came (the current env's reference run did not finish)")
        sys.stdout.write("\n" + MARK + "go\n")  # the parent knows that a crash from here on is a model's
        sys.stdout.flush()
    for index, spec in enumerate(jobs):
        timer(spec.get("timeout"))
        out = run_one(spec)
        faulthandler.cancel_dump_traceback_later()
        out["index"] = index
        sys.stdout.flush()
        sys.stdout.write("\n" + MARK + json.dumps(out) + "\n")
        sys.stdout.flush()
    if check is not None:
        tf_answer(check, "computed", compute=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # every answer is written: TensorFlow's teardown (seconds on a busy machine) is no one's wait
