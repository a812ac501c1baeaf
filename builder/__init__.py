"""Build side of cvmfsexec (runs on the build host, Python >= 3.9)."""
