"""Builtin CernVM-FS client library: one module per artifact a repository publishes."""
