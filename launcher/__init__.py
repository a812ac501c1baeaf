"""cvmfsexec runtime: runs on worker nodes. Standard library only, Python >= 3.6."""

VERSION = "0.1.0"
