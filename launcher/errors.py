"""The one user-facing error type, and the top-level handler that catches it.

Library code raises :class:`CvmfsexecError` (message + hint + exit code) and
never calls ``sys.exit``.  ``run_main`` is the single place that turns it into a
one-line message on stderr.  Anything else that escapes is a bug: it is
reported with the version, platform and argv so that a user can file it.
"""

import os
import sys

# Exit codes (kept small and stable: pilots test them).
EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_BUG = 70          # EX_SOFTWARE
EXIT_NOT_FOUND = 127   # like a shell that cannot find a program


class CvmfsexecError(Exception):
    """A failure the user can act on: message, optional hint, exit code."""

    def __init__(self, message, hint=None, exit_code=EXIT_FAILURE):
        Exception.__init__(self, message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self):
        return self.message


class UsageError(CvmfsexecError):
    """Bad command line: exit code 2."""

    def __init__(self, message, hint=None):
        CvmfsexecError.__init__(self, message, hint, EXIT_USAGE)


def ossafe(what, func, *args, **kwargs):
    """Call ``func``; turn an OSError into a CvmfsexecError naming ``what``."""
    try:
        return func(*args, **kwargs)
    except OSError as e:
        raise CvmfsexecError("%s: %s" % (what, e.strerror or e))


def format_error(prog, err):
    line = "%s: error: %s" % (prog, err.message)
    if err.hint:
        line += " (hint: %s)" % err.hint
    return line


def run_main(main, argv=None, prog=None):
    """Run ``main(argv)`` and exit with its status; the only place that exits."""
    if argv is None:
        argv = sys.argv[1:]
    prog = prog or os.path.basename(sys.argv[0]) or "cvmfsexec"
    try:
        status = main(argv)
    except CvmfsexecError as e:
        sys.stderr.write(format_error(prog, e) + "\n")
        status = e.exit_code
    except KeyboardInterrupt:
        status = 130
    except SystemExit:
        raise
    except BaseException:  # a bug: say so, with what a report needs
        import platform
        import traceback
        from launcher import VERSION
        traceback.print_exc()
        sys.stderr.write(
            "%s: internal error (this is a bug; please report it with the lines above)\n"
            "  version %s, python %s, %s, argv %r\n"
            % (prog, VERSION, platform.python_version(), platform.platform(), sys.argv))
        status = EXIT_BUG
    sys.stdout.flush()
    sys.exit(status if status is not None else 0)
