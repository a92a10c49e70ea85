"""Projects that own an environment: a uv project, Poetry, requirement files, conda.

* :mod:`.detect` finds the manager of an env and what its next run would do to an upgrade;
* :mod:`.requirement` moves a TensorFlow requirement to a new version in the user's own style;
* :mod:`.files` keeps each generation's project files (``pyproject.toml``, ``uv.lock`` ...) in the
  store, notices hand edits, writes and restores them;
* :mod:`.uvproject` drives a uv project through uv itself (``uv lock``, ``uv sync``);
* :mod:`.requirements` drives a ``requirements.in`` and its compiled ``requirements.txt`` (``uv pip
  compile`` with the header's command, ``uv pip sync``);
* :mod:`.poetryproject` drives a Poetry project through the user's own ``poetry`` (``poetry lock``, ``poetry sync``).

The transaction's part of it is :mod:`rebuild.core.projectstep` (this package sits below ``core``).
"""
