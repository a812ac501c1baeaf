"""umountrepo: unmount repositories mounted with mountrepo.

    umountrepo [-z] {REPO|-a}

-a unmounts everything mounted under dist/; -z unmounts lazily (and leaves
the mount point directory).  As (fake) root umount2() is used, otherwise
fusermount3 -u.  Inside cvmfsexec, ``$CVMFSUMOUNT REPO`` asks the cvmfsexec
process outside, through the CVMFSEXEC_CMDFD protocol (see mountrepo).
"""

import os
import sys

from launcher import mounts, mountconf
from launcher.errors import CvmfsexecError, UsageError, run_main
from launcher.mountrepo import inside_cvmfsexec, request, umount_path

USAGE = "usage: umountrepo [-z] {REPO|-a}"
HELP = (USAGE + "\n"
        "  REPO  unmount dist/cvmfs/REPO (inside cvmfsexec: ask it to, via $CVMFSUMOUNT)\n"
        "  -a    unmount everything mounted under dist/\n"
        "  -z    unmount lazily (a busy mount goes when its last user does)\n"
        "  -v    print the version and exit\n")


def main(argv):
    args = list(argv)
    if args and args[0] in ("-v", "--version"):
        from launcher import VERSION
        sys.stdout.write("umountrepo %s\n" % VERSION)
        return 0
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(HELP)
        return 0
    lazy = False
    if args and args[0] == "-z":
        lazy = True
        args.pop(0)
    if len(args) != 1:
        raise UsageError("expected one repository name or -a", USAGE)
    target = args[0]
    if inside_cvmfsexec():
        from launcher import envvars
        if not envvars.get("CVMFSUMOUNT"):
            raise CvmfsexecError("umount within cvmfsexec only works through $CVMFSUMOUNT")
        if lazy:
            raise CvmfsexecError("lazy umount is not supported within cvmfsexec")
        if target == "-a":
            raise CvmfsexecError("umount within cvmfsexec only works with one repository")
        return request("UMOUNTREPO", mountconf.check_repo_name(target))
    base = mountconf.base_dir()
    dist = mountconf.dist_dir(base)
    if target == "-a":
        points = sorted(mounts.mounts_under(dist), reverse=True)
    elif target.startswith("-"):
        raise UsageError("unknown option %s" % target, USAGE)
    else:
        points = [mountconf.mount_dir(mountconf.check_repo_name(target), base)]
        if not mounts.find_mount(points[0]):
            raise CvmfsexecError("%s is not mounted at %s" % (target, points[0]))
    status = 0
    for mp in points:
        sys.stdout.write("%s %s\n" % ("Lazily unmounting" if lazy else "Unmounting", mp))
        try:
            umount_path(mp, lazy)
        except CvmfsexecError as e:
            sys.stderr.write("umountrepo: error: %s\n" % e.message)
            status = 1
            continue
        if not lazy:
            try:
                os.rmdir(mp)
            except OSError:
                pass
    return status


if __name__ == "__main__":
    run_main(main, prog="umountrepo")
