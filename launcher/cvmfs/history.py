"""The history (tag) database: SQLite, object suffix ``H`` (spec 8).

Used for ``CVMFS_REPOSITORY_TAG`` (a tag by name) and
``CVMFS_REPOSITORY_DATE`` (the newest trunk tag at or before a time), which
pin the repository to an older root catalog as cvmfs does.
"""

import calendar
import os
import sqlite3
import time

try:
    from urllib.parse import quote as _url_quote
except ImportError:  # pragma: no cover
    from urllib import quote as _url_quote

from launcher.errors import CvmfsexecError


class HistoryError(CvmfsexecError):
    """No such tag / no revision at that date / unreadable history database."""


class Tag(object):
    __slots__ = ("name", "hash", "revision", "timestamp", "description", "size", "branch")

    def __init__(self, name, hash, revision, timestamp, description, size, branch):
        self.name = name
        self.hash = hash            # hex root catalog hash (suffix C implied)
        self.revision = revision
        self.timestamp = timestamp
        self.description = description
        self.size = size
        self.branch = branch

    def __repr__(self):
        return "Tag(%r, %s, r%d)" % (self.name, self.hash, self.revision)


def parse_date(text):
    """'YYYY-MM-DDTHH:MM:SSZ' (UTC) -> UNIX time; HistoryError if malformed."""
    try:
        return calendar.timegm(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        raise HistoryError("CVMFS_REPOSITORY_DATE %r is not a date" % text,
                           "use the form YYYY-MM-DDTHH:MM:SSZ (UTC)")


class History(object):
    """A history database file (decompressed), opened read-only."""

    def __init__(self, db_path, fqrn=None):
        self.fqrn = fqrn
        uri = "file:%s?mode=ro&immutable=1" % _url_quote(os.path.abspath(db_path))
        try:
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.properties = dict(self.conn.execute("SELECT key, value FROM properties"))
            cols = [r[1] for r in self.conn.execute("PRAGMA table_info(tags)")]
        except sqlite3.DatabaseError as e:
            raise HistoryError("history database of %s is unreadable: %s" % (fqrn, e))
        self._select = "SELECT name, hash, revision, timestamp, description, %s, %s FROM tags " % (
            "size" if "size" in cols else "NULL", "branch" if "branch" in cols else "''")
        self._has_branch = "branch" in cols

    def tags(self):
        return [Tag(*r) for r in self.conn.execute(self._select + "ORDER BY revision")]

    def by_name(self, name):
        r = self.conn.execute(self._select + "WHERE name=?", (name,)).fetchone()
        if r is None:
            raise HistoryError("repository %s has no tag %r" % (self.fqrn, name),
                               "known tags: %s" % ", ".join(t.name for t in self.tags()))
        return Tag(*r)

    def by_date(self, when):
        """Newest trunk tag with timestamp <= ``when`` (UNIX time)."""
        where = "WHERE timestamp <= ? " + ("AND branch = '' " if self._has_branch else "")
        r = self.conn.execute(self._select + where + "ORDER BY revision DESC LIMIT 1",
                              (int(when),)).fetchone()
        if r is None:
            raise HistoryError("repository %s has no revision at or before %s"
                               % (self.fqrn, time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                           time.gmtime(when))))
        return Tag(*r)

    def close(self):
        self.conn.close()
