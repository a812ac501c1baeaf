#!/usr/bin/env python3
"""build.py: the build side of cvmfsexec (the makedist of this project).

    python3 build.py [-s] [-m MACHTYPE] [-v VERSION] {osg|egi|default|none}   make dist/
    python3 build.py [-s] -o FILE                                              make the artifact
    python3 build.py publish SRC_DIR --fqrn NAME --out DIR [...]               publish a repository

Requires Python >= 3.9; see requirements-dev.txt for the packages it uses.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from launcher.errors import run_main  # noqa: E402


def main(argv):
    if argv and argv[0] == "publish":
        from builder import publish
        return publish.main(argv[1:])
    if "-o" in argv or any(a.startswith("--output") for a in argv):
        from builder import artifact
        return artifact.main(argv)
    from builder import makedist
    return makedist.main(argv)


if __name__ == "__main__":
    run_main(main, prog="build.py")
