#!/bin/sh
''':'
# @COMMAND@ @VERSION@. This file is both POSIX sh and Python: sh runs the part
# up to "exit 127" and hands the file to a Python >= 3.6, which skips this part.
# Order: python3, EL8's platform-python, then python3.X; never Python 2.
tried=
for py in python3 /usr/libexec/platform-python \
    python3.19 python3.18 python3.17 python3.16 python3.15 python3.14 python3.13 \
    python3.12 python3.11 python3.10 python3.9 python3.8 python3.7 python3.6; do
  case $py in
    /*) [ -x "$py" ] || continue ;;
    *) command -v "$py" >/dev/null 2>&1 || continue ;;
  esac
  if "$py" -S -E -c 'import sys; sys.exit(sys.version_info < (3, 6))' >/dev/null 2>&1; then
    exec "$py" -S "$0" "$@"     # -S: stdlib only; site costs up to 30 ms
  fi
  tried="$tried $py(too old)"
done
echo "@COMMAND@: error: no Python >= 3.6 found (tried: python3 /usr/libexec/platform-python python3.19 ... python3.6 on PATH=$PATH${tried:+;$tried})" >&2
echo "@COMMAND@: hint: install python3 (Python 2 is not supported) or put a Python >= 3.6 first on PATH" >&2
exit 127
'''
