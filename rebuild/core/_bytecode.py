"""Compile an env's site-packages to checked hash-based pycs, sharing them through a content-addressed cache.

Run by the env's own interpreter (stdlib only, Python 3.7+): ``python -I -S _bytecode.py CACHE SITE...``.
For every ``.py`` file under the site folders, the pyc is keyed by the SHA-256 of the source bytes and the
interpreter's magic number. A pyc already in CACHE is hard-linked into ``__pycache__``; a missing one is
compiled, written to CACHE atomically, then linked (all of it in worker processes). The pycs are PEP 552 *checked*
hash-based pycs: at import, Python hashes the source and recompiles (in memory) when it does not match,
so a pyc can never stand for other source. Cache files are never written in place (Python replaces a pyc
by renaming a new file over it), so an env cannot change what another env links to. Prints one JSON line.
"""

import hashlib
import importlib.util
import json
import marshal
import os
import sys
import tempfile

MAGIC = importlib.util.MAGIC_NUMBER
FLAGS = (0b11).to_bytes(4, "little")  # hash-based, checked


def sources(roots):
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def pyc_bytes(path, data):
    code = compile(data, path, "exec", dont_inherit=True)
    return MAGIC + FLAGS + importlib.util.source_hash(data) + marshal.dumps(code)


def store(folder, key, blob):
    """Write ``blob`` as ``folder/key.pyc`` atomically; the path (an existing entry wins a race)."""
    dest = os.path.join(folder, key[:2], key + ".pyc")
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return dest


def place(cached, target, blob=None):
    """Hard-link ``cached`` to ``target`` (copy ``blob`` when linking is not possible)."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.unlink(target)
    try:
        if cached is None:
            raise OSError
        os.link(cached, target)
        return True
    except OSError:
        if blob is None:
            with open(cached, "rb") as fh:
                blob = fh.read()
        with open(target, "wb") as fh:
            fh.write(blob)
        return False


def one(job):
    """One source: its pyc linked from the cache when the cache has it, else compiled (and put in the cache).
    Returns (linked, compiled, copied, failed), each 0 or 1."""
    path, folder = job
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return 0, 0, 0, 1
    key = hashlib.sha256(data).hexdigest()
    target = importlib.util.cache_from_source(path)
    cached = os.path.join(folder, key[:2], key + ".pyc") if folder else None
    if cached and os.path.isfile(cached):
        try:
            place(cached, target)
            return 1, 0, 0, 0
        except OSError:
            pass
    try:
        blob = pyc_bytes(path, data)
    except (SyntaxError, ValueError, OSError, RecursionError, MemoryError):
        return 0, 0, 0, 1
    stored = None
    if folder is not None:
        try:
            stored = store(folder, key, blob)
        except OSError:
            stored = None
    return 0, 1, 1 - int(place(stored, target, blob)), 0


def main(argv):
    cache, roots = argv[0], argv[1:]
    folder = None
    if cache:
        folder = os.path.join(cache, MAGIC.hex() + "-" + sys.implementation.cache_tag)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError:
            folder = None
    # every source is read, hashed, and linked or compiled in the workers (nothing serial before them: with an
    # empty cache, every source is compiled, and a first pass hashing them all would only delay the pool)
    jobs = [(path, folder) for path in sources(roots)]
    workers = max(1, min(os.cpu_count() or 1, len(jobs) // 50 or 1))
    if workers > 1:
        import concurrent.futures

        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(one, jobs, chunksize=64))
    else:
        results = [one(job) for job in jobs]
    linked, compiled, copied, failed = (sum(r[i] for r in results) for i in range(4))
    print(
        json.dumps(
            {
                "files": len(jobs),
                "linked": linked,
                "compiled": compiled,
                "copied": copied,
                "failed": failed,
                "cache": folder or "",
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
