"""Per-job CURVE keys for launch/din-train (config `security { curve: true }`).

When the effective config of a job (the config file plus its --set overrides) turns
security.curve on, prepare() runs din_keys into a fresh directory of mode 0700 and returns
the override that points every process at it:

    import din_security                      # launch/ is the launcher's own directory
    try:
        sets += din_security.prepare(args.config, sets, args.build_dir, job_dir)
    except din_security.Error as e:
        p.error(str(e))

The directory is removed when the launcher exits (the keys live as long as the job).
When the config or a --set already names security.key_dir, those keys are used as they
are (nothing is generated): the way to run on several hosts, where the key directory must
be on a filesystem every host sees, or copied there beforehand with `din_keys DIR`.
When curve is off, prepare() returns [] and does nothing.
"""
import atexit
import os
import re
import shutil
import subprocess
import tempfile

__all__ = ["Error", "prepare", "curve_enabled"]

_TRUE = {"true", "True", "t", "1"}
_FALSE = {"false", "False", "f", "0"}


class Error(RuntimeError):
    """The job's keys cannot be prepared; the message says why."""


def _tokens(text):
    """Tokens of protobuf text format: identifiers/numbers, strings, punctuation."""
    token = re.compile(r"""\s+|\#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|"""
                       r"""[A-Za-z0-9_.+\-]+|[{}<>:;,\[\]]""")
    pos = 0
    while pos < len(text):
        m = token.match(text, pos)
        if not m:  # a character text format would reject; din_ps reports it
            pos += 1
            continue
        pos = m.end()
        t = m.group(0)
        if t[0].isspace() or t[0] == "#":
            continue
        yield t


def _unquote(t):
    if len(t) >= 2 and t[0] in "\"'" and t[-1] == t[0]:
        return t[1:-1]
    return t


def _security_fields(text, top_level):
    """The (curve, key_dir) assignments inside `security { }` of text-format `text`,
    in order; with top_level=False the text is the body of a security message itself."""
    toks = list(_tokens(text))
    found = []
    path = [] if top_level else ["security"]
    i = 0
    while i < len(toks):
        t = toks[i]
        if t in ("}", ">"):
            if path:
                path.pop()
            i += 1
            continue
        if t in ("{", "<"):  # an element of a list of messages
            path.append(None)
            i += 1
            continue
        if t in (";", ",") or not re.match(r"[A-Za-z_]", t):
            i += 1
            continue
        j = i + 1
        if j < len(toks) and toks[j] == ":":
            j += 1
        if j < len(toks) and toks[j] in ("{", "<"):
            path.append(t)
            i = j + 1
            continue
        value = toks[j] if j < len(toks) else ""
        if path == ["security"] and t in ("curve", "key_dir"):
            found.append((t, _unquote(value)))
        i = j + 1
    return found


def _read_config(config):
    if "\n" not in config and os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            return f.read()
    return config


def _effective(config, sets):
    """(curve, key_dir) after the config file and the --set overrides, in order."""
    curve, key_dir = False, ""

    def apply(fields):
        nonlocal curve, key_dir
        for name, value in fields:
            if name == "curve":
                if value in _TRUE:
                    curve = True
                elif value in _FALSE:
                    curve = False
            else:
                key_dir = value

    apply(_security_fields(_read_config(config), top_level=True))
    for s in sets:
        path, _, value = s.partition("=")
        path = path.strip()
        if path == "security.curve":
            apply([("curve", value.strip())])
        elif path == "security.key_dir":
            apply([("key_dir", _unquote(value.strip()))])
        elif path == "security":
            body = value.strip()
            if body.startswith("{") and body.endswith("}"):
                body = body[1:-1]
            apply(_security_fields(body, top_level=False))
    return curve, key_dir


def curve_enabled(config, sets):
    """Whether the effective config turns security.curve on."""
    return _effective(config, sets)[0]


def prepare(config, sets, build_dir, job_dir=None):
    """Makes the job's CURVE keys when the effective config turns security.curve on.

    config: the config file's path or its text. sets: the "PATH=VALUE" overrides given to
    every process, in order. build_dir: where din_keys was built (BUILD/tools/din_keys).
    job_dir: the directory the keys go under (created if needed); None = $TMPDIR.
    Returns the extra overrides: ["security.key_dir=/abs/dir"], or [] when curve is off
    or security.key_dir is already given. Raises Error when din_keys is missing or fails.
    """
    curve, key_dir = _effective(config, sets)
    if not curve or key_dir:
        return []
    din_keys = os.path.join(build_dir, "tools", "din_keys")
    if not os.access(din_keys, os.X_OK):
        raise Error("security.curve is on but %s is not built (cmake --build %s --target "
                    "din_keys)" % (din_keys, build_dir))
    parent = None
    if job_dir:
        parent = os.path.abspath(job_dir)
        os.makedirs(parent, exist_ok=True)
    key_dir = tempfile.mkdtemp(prefix="din-keys-", dir=parent)  # mode 0700
    atexit.register(shutil.rmtree, key_dir, True)
    r = subprocess.run([din_keys, key_dir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, check=False)
    if r.returncode != 0:
        raise Error("din_keys %s failed: %s" % (key_dir, r.stderr.strip()))
    return ["security.key_dir=" + key_dir]
