# -*- coding: utf-8 -*-
"""Standalone environment probe for tfrebuild.

This file is executed by the *target* environment's own interpreter, e.g.::

    <env-python> -I -S /path/to/_probe.py [--deep]

and prints exactly one JSON document on stdout, then exits 0.

Constraints (do not break them when editing):

* standard library only, and only cheap modules (no importlib.metadata,
  no packaging, no argparse);
* plain Python 3.6 syntax (no f-strings, walrus, ``match``, positional-only
  parameters, subscripted builtins in annotations, ...) so that any CPython
  3.6-3.13 can at least compile and run it;
* it must work under ``-I -S``: ``site`` has not run, so a venv's
  ``sys.prefix`` still points at the base installation (site.venv() is what
  normally switches it) and neither site-packages nor the user site are on
  ``sys.path``.  Everything is therefore computed here, the way a normal
  start would compute it.
"""

import os
import re
import sys

PROBE_VERSION = 1

ENVIRON_KEYS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_PATH",
    "CUDNN_PATH",
    "CUDA_VISIBLE_DEVICES",
    "TF_USE_LEGACY_KERAS",
    "TF_CPP_MIN_LOG_LEVEL",
    "XLA_FLAGS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_FIND_LINKS",
)

LOCATION_ORDER = {"env": 0, "user": 1, "system": 2}
MAX_MISSING = 20

_WARNINGS = []


def warn(msg):
    _WARNINGS.append(msg)


def _exc(e):
    return "%s: %s" % (type(e).__name__, e)


# ---------------------------------------------------------------------------
# venv detection (mirrors site.venv(), which -S skipped)
# ---------------------------------------------------------------------------


def _read_pyvenv_cfg(path):
    cfg = {}
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if "=" in line:
                key, _, value = line.partition("=")
                key = key.strip()
                if key:
                    cfg[key] = value.strip()
    return cfg


def detect_venv():
    """Return (venv_prefix or None, cfg_path or None, cfg dict)."""
    executable = sys.executable or ""
    if sys.platform == "darwin" and "__PYVENV_LAUNCHER__" in os.environ:
        executable = os.environ["__PYVENV_LAUNCHER__"]
    if not executable:
        return None, None, {}
    exe_dir = os.path.dirname(os.path.abspath(executable))
    site_prefix = os.path.dirname(exe_dir)
    for cand in (os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(site_prefix, "pyvenv.cfg")):
        if os.path.isfile(cand):
            try:
                cfg = _read_pyvenv_cfg(cand)
            except Exception as e:  # unreadable: still a venv marker
                warn("cannot read %s: %s" % (cand, _exc(e)))
                cfg = {}
            return site_prefix, cand, cfg
    return None, None, {}


def _cfg_get(cfg, key):
    for k, v in cfg.items():
        if k.strip().lower() == key:
            return v
    return None


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def canonicalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _norm(path):
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def _real(path):
    try:
        return os.path.normcase(os.path.realpath(path))
    except Exception:
        return _norm(path)


def _dedup_existing(paths):
    out = []
    seen = set()
    for p in paths:
        if not p:
            continue
        p = os.path.abspath(p)
        if not os.path.isdir(p):
            continue
        key = _real(p)
        if key in seen:
            continue
        seen.add(key)
        out.append(p)
    return out


def _read_text(path):
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        return f.read()


def _module_name(filename):
    """Module name for a top-level file, or None if it is not importable code."""
    if filename.endswith(".py"):
        stem = filename[:-3]
    elif filename.endswith(".so") or filename.endswith(".pyd"):
        stem = filename.split(".", 1)[0]
    else:
        return None
    if stem and stem.isidentifier():
        return stem
    return None


# ---------------------------------------------------------------------------
# interpreter / platform
# ---------------------------------------------------------------------------


def interpreter_info(sysconfig, prefix, exec_prefix):
    get = sysconfig.get_config_var
    abiflags = getattr(sys, "abiflags", None)
    if abiflags is None:
        abiflags = get("ABIFLAGS") or ""
    info = {
        "executable": sys.executable,
        "version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "version_info": list(sys.version_info),
        "implementation": sys.implementation.name,
        "prefix": prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "exec_prefix": exec_prefix,
        "abiflags": abiflags,
        "soabi": get("SOABI"),
        "ext_suffix": get("EXT_SUFFIX"),
        "pointer_bits": 64 if sys.maxsize > 2**32 else 32,
        "gil_disabled": bool(get("Py_GIL_DISABLED")),
    }
    return info


def _musl():
    """Return (found, version) using the musl loader, cheaply."""
    loaders = []
    for d in ("/lib", "/usr/lib"):
        try:
            for n in os.listdir(d):
                if n.startswith("ld-musl-") and ".so" in n:
                    loaders.append(os.path.join(d, n))
        except OSError:
            pass
    if not loaders:
        return False, ""
    version = ""
    try:
        import subprocess

        proc = subprocess.Popen([loaders[0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=2)
        for line in (err + out).decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line.lower().startswith("version"):
                version = line.split(None, 1)[1].strip() if " " in line else ""
                break
    except Exception as e:
        warn("musl version detection failed: %s" % _exc(e))
    return True, version


def platform_info(sysconfig):
    import platform

    info = {
        "system": "",
        "machine": "",
        "release": "",
        "sysconfig_platform": "",
        "libc": "",
        "libc_version": "",
        "mac_ver": "",
    }
    try:
        info["system"] = platform.system()
        info["machine"] = platform.machine()
        info["release"] = platform.release()
    except Exception as e:
        warn("platform.uname failed: %s" % _exc(e))
    try:
        info["sysconfig_platform"] = sysconfig.get_platform()
    except Exception as e:
        warn("sysconfig.get_platform failed: %s" % _exc(e))
    if sys.platform == "darwin":
        try:
            info["mac_ver"] = platform.mac_ver()[0] or ""
        except Exception as e:
            warn("platform.mac_ver failed: %s" % _exc(e))
    if sys.platform.startswith("linux"):
        libc, ver = "", ""
        try:
            s = os.confstr("CS_GNU_LIBC_VERSION")
            if s:
                parts = s.split()
                libc = parts[0]
                ver = parts[1] if len(parts) > 1 else ""
        except (AttributeError, ValueError, OSError):
            pass
        if not libc:
            found, mver = _musl()
            if found:
                libc, ver = "musl", mver
        if not libc:
            try:
                lib, lver = platform.libc_ver()
                libc, ver = lib or "", lver or ""
            except Exception as e:
                warn("platform.libc_ver failed: %s" % _exc(e))
        info["libc"] = libc
        info["libc_version"] = ver
    return info


# ---------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------


def _sysconfig_site_paths(sysconfig, scheme=None, vars=None):
    try:
        if scheme is None:
            paths = sysconfig.get_paths(vars=vars)
        else:
            paths = sysconfig.get_paths(scheme, vars=vars)
        return [paths.get("purelib"), paths.get("platlib")]
    except Exception as e:
        warn("sysconfig.get_paths(%r) failed: %s" % (scheme, _exc(e)))
        return []


def _site_getsitepackages(site, prefixes):
    try:
        return list(site.getsitepackages(prefixes))
    except Exception as e:
        warn("site.getsitepackages failed: %s" % _exc(e))
        return []


def _user_base_from_environ():
    env_base = os.environ.get("PYTHONUSERBASE")
    if env_base:
        return env_base
    if os.name == "nt":
        base = os.environ.get("APPDATA") or "~"
        return os.path.expanduser(os.path.join(base, "Python"))
    framework = getattr(sys, "_framework", None)
    if sys.platform == "darwin" and framework:
        return os.path.expanduser(os.path.join("~", "Library", framework, "%d.%d" % sys.version_info[:2]))
    return os.path.expanduser(os.path.join("~", ".local"))


def _user_site_from_base(sysconfig, base):
    ver = "%d%d" % sys.version_info[:2] if os.name == "nt" else "%d.%d" % sys.version_info[:2]
    if os.name == "nt":
        return os.path.join(base, "Python" + ver, "site-packages")
    framework = getattr(sys, "_framework", None)
    if sys.platform == "darwin" and framework:
        return os.path.join(base, "lib", "python", "site-packages")
    suffix = ""
    try:
        if sysconfig.get_config_var("Py_GIL_DISABLED"):
            suffix = "t"
    except Exception:
        pass
    return os.path.join(base, "lib", "python" + ver + suffix, "site-packages")


def user_site_path(site, sysconfig):
    computed = None
    try:
        computed = site.getusersitepackages()
    except Exception as e:
        warn("site.getusersitepackages failed: %s" % _exc(e))
    env_base = os.environ.get("PYTHONUSERBASE")
    if computed and env_base:
        # Some builds ignore PYTHONUSERBASE when the environment is ignored
        # (-I / -E); a normal start would honour it, so we do too.
        if not _norm(computed).startswith(_norm(env_base) + os.sep):
            computed = None
    if not computed:
        try:
            computed = _user_site_from_base(sysconfig, _user_base_from_environ())
        except Exception as e:
            warn("cannot compute user site: %s" % _exc(e))
            computed = None
    return computed


def user_site_enabled(is_venv, include_system):
    """Would a normal start (no -I/-s) put the user site on sys.path?"""
    if os.environ.get("PYTHONNOUSERSITE"):
        return False
    if is_venv and not include_system:
        return False
    try:
        if hasattr(os, "geteuid") and hasattr(os, "getuid"):
            if os.geteuid() != os.getuid():
                return False
        if hasattr(os, "getegid") and hasattr(os, "getgid"):
            if os.getegid() != os.getgid():
                return False
    except Exception:
        pass
    return True


# ---------------------------------------------------------------------------
# metadata parsing
# ---------------------------------------------------------------------------

_HEADER_PARSER = []


def _header_parser():
    if not _HEADER_PARSER:
        from email.parser import HeaderParser

        _HEADER_PARSER.append(HeaderParser())
    return _HEADER_PARSER[0]


def read_headers(path):
    """Parse the RFC 822 header block of METADATA / PKG-INFO.

    Only the header block is read (the long description body is skipped).
    Returns (message, strict_utf8_ok).
    """
    chunks = []
    with open(path, "rb") as f:
        for line in f:
            if line in (b"\n", b"\r\n", b"\r"):
                break
            chunks.append(line)
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
        ok = True
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        ok = False
    fast = _simple_headers(text)
    return (fast if fast is not None else _header_parser().parsestr(text)), ok


#: One header field: its name (printable ASCII but the colon, RFC 5322), the rest of its line and its continuation
#: lines (starting with a space or a tab), each line ended by \r\n, \r or \n (the last one may end the text).
_FIELDS = re.compile(r"([!-9;-~]+):([^\r\n]*(?:\r\n|\r|\n|\Z)(?:[ \t][^\r\n]*(?:\r\n|\r|\n|\Z))*)")
_ODD_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


class _Headers(object):
    """The header block as ``email``'s compat32 parser returns it, for the plain blocks every installer writes
    (importing and running ``email.parser`` is most of a small probe's time); anything unusual goes to it."""

    def __init__(self, fields):
        self._fields = {}  # lower-case name -> [the rest of its lines, raw], in order
        for name, rest in fields:
            self._fields.setdefault(name.lower(), []).append(rest)

    def get(self, key, default=None):
        found = self._fields.get(key.lower())
        return _field_value(found[0]) if found else default

    def get_all(self, key, default=None):
        found = self._fields.get(key.lower())
        return [_field_value(rest) for rest in found] if found else default


def _field_value(rest):
    """A field's value as email reads it: the blanks after the colon and the final line break left out."""
    return rest.lstrip(" \t").rstrip("\r\n")


def _simple_headers(text):
    """``_Headers`` for a block of ``Name: value`` lines and indented continuations; ``None`` for anything else
    (a line that is neither, a ``From `` line, unusual line breaks): the email parser reads those."""
    if any(ch in text for ch in _ODD_BREAKS):
        return None
    fields = []
    pos, end = 0, len(text)
    while pos < end:  # field after field from the start: linear (an unanchored search retries inside a long token)
        m = _FIELDS.match(text, pos)
        if m is None or m.end() == pos:
            return None  # something that is not a field (each is its name, a colon and the rest)
        fields.append(m.groups())
        pos = m.end()
    return _Headers(fields)


def _hget(msg, key):
    v = msg.get(key)
    if v is None:
        return None
    return str(v).strip()


def _hget_all(msg, key):
    vals = msg.get_all(key) or []
    return [str(v).strip() for v in vals]


def parse_requires_txt(text):
    """Convert setuptools requires.txt into Requires-Dist style strings."""
    out = []
    marker = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            extra, _, cond = section.partition(":")
            extra = extra.strip()
            cond = cond.strip()
            parts = []
            if cond:
                parts.append("(%s)" % cond if extra else cond)
            if extra:
                parts.append('extra == "%s"' % extra)
            marker = " and ".join(parts) if parts else None
            continue
        if marker:
            req, sep, own = line.partition(";")
            if sep and own.strip():
                out.append("%s; (%s) and %s" % (req.strip(), own.strip(), marker))
            else:
                out.append("%s; %s" % (req.strip(), marker))
        else:
            out.append(line)
    return out


def read_record(path):
    """The path column of a RECORD file, in order (cheap, no csv module)."""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")  # text mode: \r\n and \r already read as \n
    if '"' not in "".join(lines):
        return [p for p in (line.rsplit(",", 2)[0] for line in lines if line) if p]
    out = []
    for line in lines:
        if not line:
            continue
        p = line.rsplit(",", 2)[0]
        if len(p) >= 2 and p[0] == '"' and p[-1] == '"':
            p = p[1:-1].replace('""', '"')
        if p:
            out.append(p)
    return out


def _wheel_tags(path):
    """The ``Tag:`` lines of a dist-info's WHEEL file (empty when there is none)."""
    try:
        text = _read_text(path)
    except Exception:
        return []
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def top_level_from_paths(paths):
    """Importable top-level names from site-dir-relative paths."""
    paths = list(paths)
    dirs = set()
    mods = set()
    # the usual path ("pkg/mod.py", "mod.py"): its first component is all that counts, so each is looked at once
    odd = [p for p in paths if "\\" in p or p[:1] in ("", ".", "/")]
    plain = [p for p in paths if not ("\\" in p or p[:1] in ("", ".", "/"))] if odd else paths
    heads = set(p.split("/", 1)[0] for p in plain if "/" in p)
    for head in heads:
        if not head.isidentifier() or head == "__pycache__":
            continue  # foo-1.0.dist-info, foo-1.0.data, ..
        if head in ("bin", "Scripts") and head + "/__init__.py" not in plain:
            continue
        dirs.add(head)
    for p in set(p for p in plain if "/" not in p):
        name = _module_name(p)
        if name:
            mods.add(name)
    for p in odd:
        p = p.replace("\\", "/")
        while p.startswith("./"):
            p = p[2:]
        if not p or p.startswith("/") or p.startswith("../") or p == "..":
            continue
        head, sep, rest = p.partition("/")
        if sep:
            if not head.isidentifier() or head == "__pycache__":
                continue
            if head in ("bin", "Scripts"):
                if rest == "__init__.py":
                    dirs.add(head)
                continue
            dirs.add(head)
        else:
            name = _module_name(head)
            if name:
                mods.add(name)
    return sorted(dirs | mods)


# ---------------------------------------------------------------------------
# scanning
# ---------------------------------------------------------------------------


class Scanner(object):
    def __init__(self, deep):
        self.deep = deep
        self.distributions = []
        self.debris = []
        self.claimed_names = set()
        self.claimed_paths = set()
        self.env_dirs = []  # normalized env site dirs (for --deep)

    # -- claims (used by the orphan check) --------------------------------
    def _claim_abs(self, abspath):
        n = os.path.normcase(os.path.normpath(abspath))
        for d in self.env_dirs:
            if n.startswith(d + os.sep):
                first = n[len(d) + 1 :].split(os.sep, 1)[0]
                self.claimed_paths.add(os.path.join(d, first))
                return

    def _debris(self, kind, path, site_dir, location, **extra):
        d = {"kind": kind, "path": path, "site_dir": site_dir, "location": location}
        d.update(extra)
        self.debris.append(d)

    def scan_dir(self, site_dir, location, order):
        try:
            entries = sorted(os.listdir(site_dir))
        except OSError as e:
            warn("cannot list %s: %s" % (site_dir, _exc(e)))
            return
        for name in entries:
            path = os.path.join(site_dir, name)
            try:
                if name.startswith("~"):
                    self._debris("tilde-folder", path, site_dir, location)
                    continue
                low = name.lower()
                if low.endswith(".dist-info"):
                    if os.path.isdir(path):
                        self._dist_info(path, site_dir, location, order)
                    else:
                        warn("%s is not a directory; ignored" % path)
                elif low.endswith(".egg-info"):
                    self._egg_info(path, site_dir, location, order)
            except Exception as e:
                warn("failed to inspect %s: %s" % (path, _exc(e)))

    def _load_headers(self, meta_path, dist_path, site_dir, location):
        try:
            msg, ok = read_headers(meta_path)
        except Exception as e:
            self._debris(
                "bad-metadata",
                dist_path,
                site_dir,
                location,
                detail="cannot read %s: %s" % (os.path.basename(meta_path), _exc(e)),
            )
            return None
        if not ok:
            self._debris(
                "bad-metadata",
                dist_path,
                site_dir,
                location,
                detail="%s is not valid UTF-8" % os.path.basename(meta_path),
            )
        name = _hget(msg, "Name")
        version = _hget(msg, "Version")
        if not name or version is None:
            if ok:
                self._debris(
                    "bad-metadata",
                    dist_path,
                    site_dir,
                    location,
                    detail="%s lacks Name or Version" % os.path.basename(meta_path),
                )
            return None
        return msg

    def _base_record(self, msg, path, site_dir, location, order):
        name = _hget(msg, "Name")
        rp = _hget(msg, "Requires-Python")
        return {
            "name": name,
            "canonical": canonicalize(name),
            "version": _hget(msg, "Version"),
            "location": location,
            "dist_info": path,
            "site_dir": site_dir,
            "installer": None,
            "requested": False,
            "requires": _hget_all(msg, "Requires-Dist"),
            "requires_python": rp if rp else None,
            "provides_extra": _hget_all(msg, "Provides-Extra"),
            "direct_url": None,
            "top_level": [],
            "_order": order,
        }

    def _read_top_level_txt(self, path):
        names = []
        for line in _read_text(path).splitlines():
            line = line.strip()
            if line and line not in names:
                names.append(line)
        return sorted(names)

    def _finish_files(self, rel_paths, base_dir, site_dir, location):
        """Shared RECORD / installed-files.txt handling.

        rel_paths: paths relative to base_dir (verbatim from the file).
        """
        site_rel = []
        missing = []
        count = 0
        deep = self.deep
        claim = deep and location == "env"
        firsts = set()
        same = base_dir == site_dir
        site_n = os.path.normcase(os.path.normpath(site_dir))
        join = os.path.join
        exists = os.path.exists
        for p in rel_paths:
            if same and ".." not in p and not os.path.isabs(p):
                # fast path: plain path inside the scanned folder
                site_rel.append(p)
                if not deep:
                    continue
                full = join(base_dir, p)
                if claim:
                    firsts.add(p.replace("\\", "/").split("/", 1)[0])
            else:
                full = os.path.normpath(join(base_dir, p))
                if not same:
                    n = os.path.normcase(full)
                    if n.startswith(site_n + os.sep):
                        site_rel.append(n[len(site_n) + 1 :].replace(os.sep, "/"))
                if not deep:
                    continue
                if claim:
                    self._claim_abs(full)
            if full.endswith(".pyc"):
                continue  # bytecode caches may legitimately be absent
            if not exists(full):
                count += 1
                if len(missing) < MAX_MISSING:
                    missing.append(p)
        for first in firsts:
            if first:
                self.claimed_paths.add(join(site_n, os.path.normcase(first)))
        return site_rel, missing, count

    def _new_record(self, meta, path, site_dir, location, order):
        """The record of a metadata folder; None (debris noted) when its metadata is missing or unusable."""
        if not os.path.lexists(meta):
            self._debris("no-metadata", path, site_dir, location)
            return None
        msg = self._load_headers(meta, path, site_dir, location)
        if msg is None:
            return None
        return self._base_record(msg, path, site_dir, location, order)

    def _missing_unknown(self, rec):
        """--deep: which installed files are missing cannot be told."""
        if self.deep:
            rec["record_missing"] = None
            rec["record_missing_count"] = None

    def _top_level(self, rec, path):
        """Fill rec["top_level"] from top_level.txt; False when there is none or it cannot be read."""
        top_txt = os.path.join(path, "top_level.txt")
        if not os.path.isfile(top_txt):
            return False
        try:
            rec["top_level"] = self._read_top_level_txt(top_txt)
        except Exception as e:
            warn("%s: cannot read top_level.txt: %s" % (path, _exc(e)))
            return False
        return True

    def _use_files(self, rec, site_rel, has_top):
        """Top-level names from the installed files: the record's when top_level.txt gave none, else claimed."""
        derived = top_level_from_paths(site_rel)
        if not has_top:
            rec["top_level"] = derived
        else:
            self.claimed_names.update(derived)

    def _add(self, rec):
        self.claimed_names.update(rec["top_level"])
        self.distributions.append(rec)

    def _dist_info(self, path, site_dir, location, order):
        rec = self._new_record(os.path.join(path, "METADATA"), path, site_dir, location, order)
        if rec is None:
            return
        try:
            inst = os.path.join(path, "INSTALLER")
            if os.path.isfile(inst):
                rec["installer"] = _read_text(inst).strip()
        except Exception as e:
            warn("%s: cannot read INSTALLER: %s" % (path, _exc(e)))
        rec["requested"] = os.path.exists(os.path.join(path, "REQUESTED"))
        du = os.path.join(path, "direct_url.json")
        if os.path.isfile(du):
            try:
                import json

                rec["direct_url"] = json.loads(_read_text(du))
            except Exception as e:
                warn("%s: bad direct_url.json: %s" % (path, _exc(e)))
        if any(r[:5].lower() == "numpy" and not r[5:6].isalnum() for r in rec["requires"]):
            # whether it is compiled (against one NumPy ABI): the wheel's tags, for doctor's NumPy checks
            rec["wheel_tags"] = _wheel_tags(os.path.join(path, "WHEEL"))
        has_top = self._top_level(rec, path)
        record = os.path.join(path, "RECORD")
        if self.deep or not has_top:
            if os.path.isfile(record):
                try:
                    if self.deep:
                        paths = list(read_record(record))
                        site_rel, missing, count = self._finish_files(paths, site_dir, site_dir, location)
                        rec["record_missing"] = missing
                        rec["record_missing_count"] = count
                    else:
                        site_rel = read_record(record)
                    self._use_files(rec, site_rel, has_top)
                except Exception as e:
                    warn("%s: cannot read RECORD: %s" % (path, _exc(e)))
                    self._missing_unknown(rec)
            else:
                self._missing_unknown(rec)
                warn("%s: no RECORD file" % path)
        self._add(rec)

    def _egg_info(self, path, site_dir, location, order):
        is_dir = os.path.isdir(path)
        meta = os.path.join(path, "PKG-INFO") if is_dir else path
        rec = self._new_record(meta, path, site_dir, location, order)
        if rec is None:
            return
        self._missing_unknown(rec)
        if not is_dir:
            self._add(rec)
            return
        req = os.path.join(path, "requires.txt")
        if os.path.isfile(req):
            try:
                rec["requires"] = parse_requires_txt(_read_text(req))
            except Exception as e:
                warn("%s: cannot read requires.txt: %s" % (path, _exc(e)))
        has_top = self._top_level(rec, path)
        files = os.path.join(path, "installed-files.txt")
        if (self.deep or not has_top) and os.path.isfile(files):
            try:
                paths = [line.strip() for line in _read_text(files).splitlines() if line.strip()]
                site_rel, missing, count = self._finish_files(paths, path, site_dir, location)
                if self.deep:
                    rec["record_missing"] = missing
                    rec["record_missing_count"] = count
                self._use_files(rec, site_rel, has_top)
            except Exception as e:
                warn("%s: cannot read installed-files.txt: %s" % (path, _exc(e)))
        self._add(rec)

    # -- orphans ------------------------------------------------------------
    def find_orphans(self, site_dir, location):
        """Top-level modules and the user's own .pth files in ``site_dir`` that no distribution installed.

        Deep scans know every RECORD's entries already; a plain scan confirms its few candidates (names no
        top_level.txt or read RECORD claims) against the RECORDs of the folder, read only then."""
        try:
            entries = sorted(os.listdir(site_dir))
        except OSError:
            return
        d_norm = os.path.normcase(os.path.normpath(site_dir))
        found = []
        for name in entries:
            try:
                low = name.lower()
                path = os.path.join(site_dir, name)
                if low.endswith(".pth") and not name.startswith(("_virtualenv", "~", ".")) and os.path.isfile(path):
                    found.append(("own-pth", name, path, name))
                    continue
                if (
                    name.startswith("~")
                    or name.startswith(".")
                    or name == "__pycache__"
                    or low.endswith(".pth")
                    or low.endswith(".dist-info")
                    or low.endswith(".egg-info")
                    or low.endswith(".egg-link")
                    or name == "_distutils_hack"
                    or name.startswith("_virtualenv")
                ):
                    continue
                if os.path.isdir(path):
                    if not os.path.isfile(os.path.join(path, "__init__.py")):
                        continue
                    mod = name
                else:
                    mod = _module_name(name)
                    if mod is None:
                        continue
                if mod in self.claimed_names:
                    continue
                found.append(("orphan-top-level", mod, path, name))
            except Exception as e:
                warn("orphan check failed for %s: %s" % (name, _exc(e)))
        found = [f for f in found if os.path.join(d_norm, os.path.normcase(f[3])) not in self.claimed_paths]
        if found and not self.deep:
            firsts = self._record_firsts(site_dir, set(os.path.normcase(f[3]) for f in found))
            found = [f for f in found if os.path.normcase(f[3]) not in firsts]
        for kind, mod, path, _name in found:
            self.debris.append(
                {
                    "kind": kind,
                    "path": path,
                    "name": mod,
                    "site_dir": site_dir,
                    "location": location,
                }
            )

    def _record_firsts(self, site_dir, wanted=None):
        """The first path component of the files the RECORDs (and installed-files.txt) of ``site_dir`` name
        (``wanted``: the names asked about; only listings whose text holds one are read through, and reading stops
        once every one of them is found)."""
        firsts = set()
        try:
            metas = [n for n in os.listdir(site_dir) if n.lower().endswith((".dist-info", ".egg-info"))]
        except OSError:
            return firsts
        # A listing names a file only if the name is in its text (where names are compared as written; a RECORD's
        # quoting doubles a '"'): a listing without a name still asked about is skipped unparsed (transformers' 1 MB).
        literal = wanted is not None and os.path.normcase("A/") == "A/"
        if wanted:
            metas.sort(key=lambda meta: not _likely_owner(meta, wanted))  # the likely owners first; stable
        for meta in metas:
            for listing in ("RECORD", "installed-files.txt"):
                path = os.path.join(site_dir, meta, listing)
                if not os.path.isfile(path):
                    continue
                base = site_dir if listing == "RECORD" else os.path.join(site_dir, meta)
                try:
                    if literal:
                        text = _read_text(path)
                        if not any(w in text or w.replace('"', '""') in text for w in wanted - firsts):
                            continue
                    for p in read_record(path) if listing == "RECORD" else _read_text(path).splitlines():
                        p = p.strip()
                        if (
                            listing == "RECORD"
                            and p
                            and not p.startswith(("/", "."))
                            and "\\" not in p
                            and "/." not in p
                            and ":" not in p
                        ):
                            # the usual line ("pkg/mod.py"): its first component, without normalising the path
                            firsts.add(os.path.normcase(p.split("/", 1)[0]))
                            continue
                        full = os.path.normpath(os.path.join(base, p))
                        rel = os.path.relpath(full, site_dir)
                        if not rel.startswith(".."):
                            firsts.add(os.path.normcase(rel.replace("\\", "/").split("/", 1)[0]))
                except Exception as e:
                    warn("%s: cannot read %s: %s" % (meta, listing, _exc(e)))
            if wanted is not None and wanted <= firsts:
                break
        return firsts


#: Files whose owner the name does not tell: setuptools installs distutils-precedence.pth into every env it is in.
_OWNERS = {"distutils-precedence.pth": "setuptools"}


def _likely_owner(meta, wanted):
    """Whether the metadata folder ``meta`` likely installed one of ``wanted`` (named after it: ``foo-1.0-nspkg.pth``,
    ``__editable__.foo-1.0.pth``; or a known owner): only the order in which listings are read depends on it."""
    project = meta.split("-", 1)[0].lower()
    return any(project in w.lower().replace("-", "_") or _OWNERS.get(w) == project for w in wanted)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def _parse_args(argv):
    """``--deep`` or not; anything else is reported and ignored."""
    deep = False
    for a in argv:
        if a == "--deep":
            deep = True
        else:
            warn("ignored unknown argument %r" % (a,))
    return deep


def enter_venv():
    """Do what site.venv() does at a normal start (which -S skipped).

    Must run before sysconfig is imported, since sysconfig captures sys.prefix
    at import time. Returns a dict: cfg, cfg_path, is_venv, include_system,
    base_prefix, base_exec_prefix.
    """
    venv_prefix, cfg_path, cfg = None, None, {}
    try:
        venv_prefix, cfg_path, cfg = detect_venv()
    except Exception as e:
        warn("venv detection failed: %s" % _exc(e))
    if venv_prefix is not None and sys.prefix != venv_prefix:
        sys.prefix = venv_prefix
        sys.exec_prefix = venv_prefix
    base_prefix = getattr(sys, "base_prefix", sys.prefix)
    include_system = False
    if cfg_path:
        v = _cfg_get(cfg, "include-system-site-packages")
        include_system = bool(v) and v.strip().lower() == "true"
    return {
        "cfg": cfg,
        "cfg_path": cfg_path,
        "is_venv": bool(cfg_path) or sys.prefix != base_prefix,
        "include_system": include_system,
        "base_prefix": base_prefix,
        "base_exec_prefix": getattr(sys, "base_exec_prefix", sys.exec_prefix),
    }


def env_kind(venv, conda):
    """conda, uv, virtualenv, venv, system or unknown."""
    try:
        if conda:
            return "conda"
        if venv["cfg_path"]:
            keys = set(k.strip().lower() for k in venv["cfg"])
            if "uv" in keys:
                return "uv"
            if "virtualenv" in keys:
                return "virtualenv"
            return "venv"
        if venv["is_venv"]:
            return "unknown"  # prefix differs but no pyvenv.cfg (old virtualenv?)
        return "system"
    except Exception as e:
        warn("env kind detection failed: %s" % _exc(e))
        return "unknown"


def stdlib_info(sysconfig, is_venv):
    """(stdlib path or None, whether it is marked EXTERNALLY-MANAGED)."""
    stdlib = None
    try:
        stdlib = sysconfig.get_path("stdlib")
    except Exception as e:
        warn("sysconfig stdlib path failed: %s" % _exc(e))
    externally_managed = False
    if stdlib and not is_venv:
        # PEP 668: the marker is ignored inside virtual environments.
        externally_managed = os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED"))
    return stdlib, externally_managed


def site_paths(sysconfig, site, venv):
    """(the env's site-packages, the base's site-packages not among them)."""
    env_candidates = _sysconfig_site_paths(sysconfig)
    env_candidates += _site_getsitepackages(site, [sys.prefix, sys.exec_prefix])
    site_packages = _dedup_existing(env_candidates)
    system_site = []
    if venv["is_venv"]:
        base, base_exec = venv["base_prefix"], venv["base_exec_prefix"]
        sys_candidates = _sysconfig_site_paths(sysconfig, None, {"base": base, "platbase": base_exec})
        sys_candidates += _site_getsitepackages(site, [base, base_exec])
        env_real = set(_real(p) for p in site_packages)
        system_site = [p for p in _dedup_existing(sys_candidates) if _real(p) not in env_real]
    return site_packages, system_site


def scan_folders(site_packages, user_site, system_site, include_system):
    """[(folder, location)] in the order a normal start puts them on sys.path, each once."""
    candidates = [(p, "env") for p in site_packages]
    if user_site and os.path.isdir(user_site):
        candidates.append((os.path.abspath(user_site), "user"))
    if include_system:
        candidates += [(p, "system") for p in system_site]
    scan = []
    seen = set()
    for p, loc in candidates:
        key = _real(p)
        if key not in seen:
            seen.add(key)
            scan.append((p, loc))
    return scan


def scan_distributions(deep, scan):
    """Scan the folders; return the Scanner, its distributions sorted as reported."""
    scanner = Scanner(deep)
    scanner.env_dirs = [os.path.normcase(os.path.normpath(p)) for p, loc in scan if loc == "env"]
    for i, (p, loc) in enumerate(scan):
        scanner.scan_dir(p, loc, i)
    for p, loc in scan:  # a plain scan too: the plan names what the new env will not have (issue 23)
        if loc == "env":
            scanner.find_orphans(p, loc)
    dists = scanner.distributions
    dists.sort(key=lambda d: (LOCATION_ORDER.get(d["location"], 9), d["canonical"], d["_order"], d["dist_info"]))
    for d in dists:
        del d["_order"]
    return scanner


def _interpreter_fallback():
    return {
        "executable": sys.executable,
        "version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "version_info": list(sys.version_info),
    }


def interpreter_and_platform(sysconfig):
    try:
        interp = interpreter_info(sysconfig, sys.prefix, sys.exec_prefix)
    except Exception as e:
        warn("interpreter info failed: %s" % _exc(e))
        interp = _interpreter_fallback()
    try:
        plat = platform_info(sysconfig)
    except Exception as e:
        warn("platform info failed: %s" % _exc(e))
        plat = {}
    return interp, plat


def build(argv):
    deep = _parse_args(argv)
    venv = enter_venv()
    is_venv, include_system = venv["is_venv"], venv["include_system"]

    import sysconfig
    import site

    conda = os.path.isdir(os.path.join(sys.prefix, "conda-meta"))
    kind = env_kind(venv, conda)
    stdlib, externally_managed = stdlib_info(sysconfig, is_venv)
    site_packages, system_site = site_paths(sysconfig, site, venv)
    user_site = user_site_path(site, sysconfig)
    u_enabled = user_site_enabled(is_venv, include_system)
    scan = scan_folders(site_packages, user_site, system_site, is_venv and include_system)
    scanner = scan_distributions(deep, scan)
    environ = dict((k, os.environ[k]) for k in ENVIRON_KEYS if k in os.environ)
    interp, plat = interpreter_and_platform(sysconfig)

    return {
        "probe_version": PROBE_VERSION,
        "interpreter": interp,
        "platform": plat,
        "env": {
            "kind": kind,
            "pyvenv_cfg": venv["cfg"],
            "include_system_site_packages": include_system,
            "is_venv": is_venv,
            "conda": conda,
            "externally_managed": externally_managed,
        },
        "paths": {
            "site_packages": site_packages,
            "user_site": user_site,
            "user_site_enabled": u_enabled,
            "system_site_packages": system_site,
            "stdlib": stdlib,
        },
        "environ": environ,
        "distributions": scanner.distributions,
        "debris": scanner.debris,
        "sys_path": list(sys.path),
        "warnings": _WARNINGS,
    }


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    import json

    try:
        doc = build(argv)
    except Exception as e:  # last resort: still one JSON document, exit 0
        import traceback

        warn("probe failed: %s" % _exc(e))
        warn(traceback.format_exc())
        doc = {
            "probe_version": PROBE_VERSION,
            "interpreter": _interpreter_fallback(),
            "platform": {},
            "env": {"kind": "unknown"},
            "paths": {},
            "environ": {},
            "distributions": [],
            "debris": [],
            "sys_path": list(sys.path),
            "warnings": _WARNINGS,
        }
    try:
        text = json.dumps(doc, sort_keys=True)
    except Exception as e:
        warn("json encoding problem: %s" % _exc(e))
        text = json.dumps(doc, sort_keys=True, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
