"""cvmfs client configuration: shell-semantics parser, search order, relocation.

Shared by the runtime (which assembles one flat file per repository) and the
builtin client (which reads that flat file).  Standard library only.

Semantics (docs: spec cvmfs-client-configuration.md sections 2 and 3):

* :func:`parse_file` treats a file the way cvmfs2's "bash options manager" does:
  the file is *executed* by ``/bin/sh`` (started in the file's directory, with the
  process environment plus every parameter parsed so far exported), parameter
  names are discovered by re-scanning the lines (text before the first ``=``,
  with ``export``/``readonly``/``eval`` removed, comments stripped, names with
  spaces skipped) and each value is what ``echo $NAME`` prints (first line) at
  the end of the file -- so ``$VAR``, ``${VAR:=x}``, ``if`` and quoting behave as
  with the real client, including its whitespace collapsing.
  ``simple=True`` selects the no-shell parser of spec 2.4 instead.
* :func:`load_repository_config` applies the default search order of spec 2.1
  to a *dist* tree (``default.conf``, ``default.d/*.conf``, the config
  repository's ``default.conf``, ``default.local``, ``domain.d``, ``config.d``)
  as the reference ``mountrepo`` does: ``source``/``.`` lines are expanded in
  place, and ``/etc``, ``/var`` and ``/cvmfs`` at the start of a value are
  relocated into the dist (see :func:`relocate_line`).
  ``CVMFS_CONFIG_REPOSITORY`` is frozen after ``default.d``.
* :func:`write_flat` writes ``KEY=VALUE`` lines that both parsers read back
  unchanged; this is the file given to ``cvmfs2 -o config=`` or the builtin client.

Example::

    cfg = load_repository_config("atlas.cern.ch", "/path/dist")
    write_flat(cfg, "/tmp/atlas.conf")
    assert parse_file("/tmp/atlas.conf", {}) == cfg      # (up to whitespace runs)
"""

import os
import re
import subprocess
import tempfile
import uuid

from launcher.errors import CvmfsexecError

#: Parameters whose value must keep pointing at the *payload's* view of
#: /cvmfs (used in variant symlinks inside repositories), never into the dist.
KEEP_UNRELOCATED = frozenset(["OASIS_CERTIFICATES"])

#: Top-level directories that move into the dist (reference mountrepo's sed).
RELOCATED_DIRS = ("cvmfs", "etc", "var")

_RELOCATE_RE = re.compile(r"^([^/]*)/(cvmfs|etc|var)(?=[/\"'\s:;]|$)")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SOURCE_RE = re.compile(r"^\s*(?:\.|source)\s+(\S+)\s*$")
_TEMPLATE_RE = re.compile(r"@([A-Za-z0-9_]+)@")
_MAX_SOURCE_DEPTH = 10

ON_VALUES = ("yes", "on", "1", "true")
OFF_VALUES = ("no", "off", "0", "false")


class ConfigError(CvmfsexecError):
    """A configuration file that cannot be read or evaluated."""


def is_on(value):
    """True for yes/on/1/true (any case)."""
    return value is not None and value.strip().lower() in ON_VALUES


def is_off(value):
    """True for no/off/0/false (any case)."""
    return value is not None and value.strip().lower() in OFF_VALUES


def split_fqrn(fqrn):
    """'atlas.cern.ch' -> ('atlas', 'cern.ch'); a dot-less name has domain ''."""
    org, _, domain = fqrn.partition(".")
    return org, domain


def expand_templates(value, fqrn):
    """Replace @fqrn@ and @org@; unknown @x@ stays (spec 2.5)."""
    values = {"fqrn": fqrn, "org": split_fqrn(fqrn)[0]}
    return _TEMPLATE_RE.sub(lambda m: values.get(m.group(1), m.group(0)), value)


def discover_names(text):
    """Parameter names a file assigns, in order, as cvmfs discovers them (spec 2.3 step 3)."""
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        name = line.split("=", 1)[0].strip()
        for prefix in ("readonly ", "export ", "eval "):
            if name.startswith(prefix):
                name = name[len(prefix):].strip()
        # cvmfs skips names with spaces; we also skip what `echo $NAME` cannot
        # name (e.g. `X+=1`), which the real client would record with junk.
        if " " in name or not _NAME_RE.match(name):
            continue
        if name not in names:
            names.append(name)
    return names


def relocate_line(line, dist_dir):
    """Move a leading /etc, /var or /cvmfs of the first path in ``line`` into dist_dir.

    Same rule as the reference mountrepo's sed (``s,^\\([^/]*\\)/etc,\\1$DIST/etc,``:
    only the first slash of the line counts, so URLs are never touched), done
    in one pass so that a dist under /var is not relocated twice, and only at a
    path component boundary (``/etcetera`` stays).  Assignments to
    :data:`KEEP_UNRELOCATED` names are left alone.
    """
    name = line.split("=", 1)[0].strip().split(" ")[-1] if "=" in line else ""
    if name in KEEP_UNRELOCATED:
        return line
    return _RELOCATE_RE.sub(lambda m: m.group(1) + dist_dir.rstrip("/") + "/" + m.group(2),
                            line, count=1)


def relocate_path(path, dist_dir):
    """An absolute /etc, /var or /cvmfs path as seen inside the dist."""
    parts = path.split("/")
    if dist_dir and len(parts) > 1 and parts[0] == "" and parts[1] in RELOCATED_DIRS:
        return dist_dir.rstrip("/") + path
    return path


def read_expanded(path, dist_dir=None, _depth=0):
    """Text of ``path`` with ``. FILE`` / ``source FILE`` lines replaced by FILE's text.

    Like the reference mountrepo's ``procsource``: sourced files are inlined so
    that they are relocated too.  Relative names resolve against the directory
    of the sourcing file; absolute /etc... names are looked up in the dist.
    Missing files contribute nothing.  Lines whose file name needs the shell
    (``$VAR``) are left for the shell to run.  Returns None if ``path`` is missing.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (IOError, OSError):
        return None
    text = raw.decode("utf-8", "surrogateescape")
    out = []
    for line in text.splitlines():
        m = _SOURCE_RE.match(line)
        if m and "$" not in m.group(1) and "`" not in m.group(1):
            target = m.group(1).strip("\"'")
            if dist_dir:
                target = relocate_path(target, dist_dir)
            target = os.path.join(os.path.dirname(path), target)
            if _depth >= _MAX_SOURCE_DEPTH:
                raise ConfigError("%s: 'source' nested more than %d levels deep"
                                  % (path, _MAX_SOURCE_DEPTH), "look for a file sourcing itself")
            sub = read_expanded(target, dist_dir, _depth + 1)
            if sub is not None:
                out.append(sub)
            continue
        out.append(relocate_line(line, dist_dir) if dist_dir else line)
    return "\n".join(out)


def _sh_environ(variables, environ):
    env = dict(os.environ if environ is None else environ)
    for k, v in variables.items():
        if _NAME_RE.match(k):
            env[k] = v
    return env


def eval_shell(text, variables, cwd, names, environ=None, source="<config>"):
    """Run ``text`` in /bin/sh like cvmfs2 does and return {name: value} for ``names``."""
    if not names:
        return {}
    marker = "@CVMFSEXEC-%s@" % uuid.uuid4().hex
    # The dump runs from an EXIT trap so that a file calling `exit` is still read.
    dump = "; ".join("printf '%%s\\n' '%s %s'; echo $%s" % (marker, n, n) for n in names)
    script = ("__cvmfsexec_dump() { %s; printf '%%s\\n' '%s'; }\n"
              "trap __cvmfsexec_dump 0\n"
              "cd %s 2>/dev/null\n%s\n" % (dump, marker, _sh_quote(cwd), text))
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_sh_environ(variables, environ), cwd="/")
        out, err = proc.communicate()
    except OSError as e:
        raise ConfigError("cannot run /bin/sh to read %s: %s" % (source, e.strerror),
                          "cvmfs configuration files are shell scripts; /bin/sh is required")
    lines = out.decode("utf-8", "surrogateescape").split("\n")
    values = {}
    current = None
    for line in lines:
        if line.startswith(marker):
            rest = line[len(marker):]
            current = rest[1:] if rest.startswith(" ") else None
            continue
        if current is not None:
            values[current] = line
            current = None
    msg = err.decode("utf-8", "replace").strip().splitlines()
    syntax = [m for m in msg if "syntax error" in m.lower()]
    if syntax or any(n not in values for n in names):
        msg = syntax or msg
        raise ConfigError("%s: the shell could not evaluate it%s"
                          % (source, (": " + msg[-1]) if msg else ""),
                          "fix the shell syntax of that configuration file")
    return values


def parse_simple_text(text):
    """{name: value} per spec 2.4 (no shell; matching outer quotes removed)."""
    values = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        name, value = line.split("=", 1)
        name = name.strip()
        for prefix in ("readonly ", "export ", "eval "):
            if name.startswith(prefix):
                name = name[len(prefix):].strip()
        if " " in name or not name:
            continue
        value = value.strip()
        if len(value) > 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    return values


def parse_file(path, variables=None, simple=False, dist_dir=None, fqrn=None,
               environ=None, sources=None):
    """Parse one configuration file; return ``variables`` updated with its parameters.

    path: the file (missing -> ``variables`` returned unchanged, as cvmfs skips it).
    variables: {name: value} parsed so far (exported to the shell); not modified.
    simple: use the no-shell parser (spec 2.4) instead of /bin/sh.
    dist_dir: relocate /etc, /var, /cvmfs into this dist and inline sourced files.
    fqrn: apply @fqrn@/@org@ templates to the new values.
    environ: base environment for the shell (default os.environ).
    sources: optional dict filled with {name: path} of where each value came from.
    """
    result = dict(variables or {})
    text = read_expanded(path, dist_dir)
    if text is None:
        return result
    if simple:
        new = parse_simple_text(text)
    else:
        new = eval_shell(text, result, os.path.dirname(os.path.abspath(path)),
                         discover_names(text), environ, source=path)
    for name, value in new.items():
        result[name] = expand_templates(value, fqrn) if fqrn else value
        if sources is not None:
            sources[name] = path
    return result


def search_path(fqrn, dist_dir, config_repo=None, config_repo_mount=None):
    """The files of the default search order (spec 2.1), rooted in ``dist_dir``.

    Returns [(label, path)] where label is 'default.d' for the files after which
    CVMFS_CONFIG_REPOSITORY is frozen.  config_repo_mount is the directory the
    configuration repository is mounted at (default dist/cvmfs/<config_repo>).
    """
    etc = os.path.join(dist_dir, "etc", "cvmfs")
    domain = split_fqrn(fqrn)[1]
    files = [("default", os.path.join(etc, "default.conf"))]
    ddir = os.path.join(etc, "default.d")
    try:
        names = sorted(n for n in os.listdir(ddir) if n.endswith(".conf"))
    except OSError:
        names = []
    files += [("default.d", os.path.join(ddir, n)) for n in names]
    crepo = None
    if config_repo and config_repo != fqrn:
        crepo = os.path.join(config_repo_mount or os.path.join(dist_dir, "cvmfs", config_repo),
                             "etc", "cvmfs")
    if crepo:
        files.append(("config-repo", os.path.join(crepo, "default.conf")))
    files.append(("local", os.path.join(etc, "default.local")))
    if crepo:
        files.append(("config-repo", os.path.join(crepo, "domain.d", domain + ".conf")))
    files.append(("local", os.path.join(etc, "domain.d", domain + ".conf")))
    files.append(("local", os.path.join(etc, "domain.d", domain + ".local")))
    if crepo:
        files.append(("config-repo", os.path.join(crepo, "config.d", fqrn + ".conf")))
    files.append(("local", os.path.join(etc, "config.d", fqrn + ".conf")))
    files.append(("local", os.path.join(etc, "config.d", fqrn + ".local")))
    return files


def config_repository(dist_dir, environ=None):
    """CVMFS_CONFIG_REPOSITORY as set by dist's default.conf + default.d, or None."""
    variables = {}
    for label, path in search_path("", dist_dir):
        if label not in ("default", "default.d"):
            break
        variables = parse_file(path, variables, dist_dir=dist_dir, environ=environ)
    return variables.get("CVMFS_CONFIG_REPOSITORY") or None


def load_repository_config(fqrn, dist_dir, config_repo_mount=None, environ=None,
                           sources=None, after_local=None):
    """Evaluate the whole search order for ``fqrn`` in ``dist_dir``; return {name: value}.

    CVMFS_FQRN is set for the files (spec 2.1).  The configuration repository's
    files are read from config_repo_mount (default dist/cvmfs/<name>) when it is
    set and is not ``fqrn`` itself; absent files are skipped.  Templates are
    expanded.  CVMFS_CONFIG_REPOSITORY keeps its default.d value.
    after_local: {name: value} assigned right after default.local, before
    domain.d and config.d (where the reference mountrepo appends its defaults).
    """
    base = dict(os.environ if environ is None else environ)
    base["CVMFS_FQRN"] = fqrn
    variables = {}
    frozen = None
    files = search_path(fqrn, dist_dir)
    i = 0
    while i < len(files):
        label, path = files[i]
        if frozen is None and label not in ("default", "default.d"):
            # end of step 2: freeze CVMFS_CONFIG_REPOSITORY, then recompute the
            # list with the config repository files in it.
            frozen = variables.get("CVMFS_CONFIG_REPOSITORY", "")
            rest = search_path(fqrn, dist_dir, frozen or None, config_repo_mount)
            files = files[:i] + rest[i:]
            label, path = files[i]
        variables = parse_file(path, variables, dist_dir=dist_dir, fqrn=fqrn,
                               environ=base, sources=sources)
        if frozen is not None:
            if frozen:
                variables["CVMFS_CONFIG_REPOSITORY"] = frozen
            else:
                variables.pop("CVMFS_CONFIG_REPOSITORY", None)
        if after_local and path == os.path.join(dist_dir, "etc", "cvmfs", "default.local"):
            variables.update(after_local)
        i += 1
    return variables


_SAFE_VALUE_RE = re.compile(r"^[0-9A-Za-z/:._,@+=%-]*$")


def _sh_quote(value):
    if _SAFE_VALUE_RE.match(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def format_flat(config):
    """KEY=VALUE lines, sorted by name, values single-quoted when needed."""
    lines = ["# written by cvmfsexec; flat cvmfs client configuration"]
    for name in sorted(config):
        if _NAME_RE.match(name):
            lines.append("%s=%s" % (name, _sh_quote(str(config[name]))))
    return "\n".join(lines) + "\n"


def write_flat(config, path):
    """Write ``config`` as a flat file (atomically: temp file + rename)."""
    # mkstemp, not a pid suffix: two runtimes can both be pid 1 of their namespaces
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(format_flat(config))
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
