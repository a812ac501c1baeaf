"""singcvmfs: minimal entry point of the singularity/apptainer flavour.

    singcvmfs -v            print the version

Running a container with repositories mounted through apptainer's
``--fusemount`` is not implemented in this version; every other use stops with
one line saying so and what to use instead.
"""

import sys

from launcher.errors import CvmfsexecError, run_main


def main(argv):
    if argv and argv[0] in ("-v", "--version"):
        from launcher import VERSION
        sys.stdout.write("singcvmfs %s\n" % VERSION)
        return 0
    raise CvmfsexecError("singcvmfs cannot run containers in this version "
                         "(apptainer --fusemount support is not implemented)",
                         "build the standard artifact (build.py without -s) and run "
                         "`cvmfsexec REPO -- apptainer exec ...`, or use the reference "
                         "bash singcvmfs")


if __name__ == "__main__":
    run_main(main, prog="singcvmfs")
