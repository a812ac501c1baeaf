"""The chain of trust of a repository (spec sections 4.3, 6.2 and 10).

    master public key(s)  --sign-->  whitelist  (name, expiry, certificate fingerprints)
    listed certificate    --sign-->  manifest   (root catalog hash)
    root catalog          --hash-->  nested catalogs and data (checked by the object store)

:func:`verify_chain` walks the links in the order the real client does
(manifest, certificate, manifest signature, whitelist, fingerprint) and stops
at the first broken one with a :class:`TrustError` naming it.
``CVMFS_ROOT_HASH`` bypasses all of this (:func:`pinned_root_hash`): the
catalog named by the administrator is trusted, its content is still
hash-checked.
"""

import glob
import os

from launcher.cvmfs import der
from launcher.cvmfs import hashes
from launcher.cvmfs.certificate import Certificate
from launcher.cvmfs.manifest import EMPTY_PATH_MD5, Manifest, ManifestError
from launcher.cvmfs.rsa import PublicKey
from launcher.cvmfs.whitelist import Whitelist, WhitelistError, parse_fingerprint
from launcher.errors import CvmfsexecError

DEFAULT_KEYS_DIR = "/etc/cvmfs/keys"
_KEY_HINT = "check CVMFS_KEYS_DIR / CVMFS_PUBLIC_KEY: they must hold the repository's master public key"


class TrustError(CvmfsexecError):
    """A broken link in the chain of trust; the message names the link."""

    def __init__(self, fqrn, message, hint=None):
        CvmfsexecError.__init__(self, "%s: %s" % (fqrn, message), hint)
        self.fqrn = fqrn
        self.reason = message


class PemKey(bytes):
    """PEM bytes of a public key that remember their file (``source``) for messages."""

    source = ""


def load_public_keys(config):
    """PEM bytes of the master public keys a configuration names.

    ``CVMFS_PUBLIC_KEY`` (colon-separated files) wins over ``CVMFS_KEYS_DIR``
    (every ``*.pub``, sorted), whose default is /etc/cvmfs/keys -- the code's
    precedence, which the real client shows (client configuration spec 3.1).
    A listed file that cannot be read is an error, as in cvmfs.
    """
    listed = config.get("CVMFS_PUBLIC_KEY", "")
    if listed:
        paths = [p for p in listed.split(":") if p]
    else:
        keys_dir = config.get("CVMFS_KEYS_DIR") or DEFAULT_KEYS_DIR
        paths = sorted(glob.glob(os.path.join(keys_dir, "*.pub")))
        if not paths:
            raise CvmfsexecError("no public keys (*.pub) in %s" % keys_dir, _KEY_HINT)
    keys = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                key = PemKey(f.read())
        except (IOError, OSError) as e:
            raise CvmfsexecError("failed to load public key %s: %s" % (path, e.strerror or e),
                                 _KEY_HINT)
        key.source = path
        keys.append(key)
    return keys


def pinned_root_hash(config):
    """The root catalog hash ``CVMFS_ROOT_HASH`` pins (ContentHash, suffix C), or None.

    With a pinned hash the repository helper skips manifest, certificate and
    whitelist and loads that catalog directly (as cvmfs does; the repository
    then never updates); use :meth:`Manifest.for_root_hash` for a stand-in.
    """
    value = (config.get("CVMFS_ROOT_HASH") or "").strip()
    if not value:
        return None
    try:
        return hashes.ContentHash.parse(value, suffix="C")
    except hashes.InvalidHash:
        raise CvmfsexecError("CVMFS_ROOT_HASH=%s is not a valid catalog hash" % value,
                             "use the hex hash of a root catalog, e.g. from a manifest's C line")


def parse_public_keys(fqrn, public_keys_pem):
    """rsa.PublicKey objects from PEM bytes (or PublicKey objects, passed through)."""
    keys = []
    for pem in public_keys_pem:
        if isinstance(pem, PublicKey):
            keys.append(pem)
            continue
        source = getattr(pem, "source", "") or "key #%d" % (len(keys) + 1)
        try:
            keys.append(PublicKey.from_pem(pem, source))
        except der.DerError as e:
            raise TrustError(fqrn, "repository public key %s is not a usable RSA key: %s"
                             % (source, e.message), _KEY_HINT)
    if not keys:
        raise TrustError(fqrn, "no repository public key configured", _KEY_HINT)
    return keys


def parse_blacklist(text):
    """``(fingerprints, min_revisions)`` from blacklist text: fingerprint lines
    and ``<fqrn N`` lines (revisions below N of fqrn are refused)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    fingerprints, min_revisions = set(), {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("<"):
            parts = line[1:].split()
            if len(parts) == 2 and parts[1].isdigit():
                min_revisions[parts[0]] = max(min_revisions.get(parts[0], 0), int(parts[1]))
            continue
        fingerprint = parse_fingerprint(line)
        if fingerprint is not None:
            fingerprints.add(fingerprint.hex_string())
    return fingerprints, min_revisions


def check_manifest_form(fqrn, manifest_bytes, min_timestamp=None):
    """Parse the manifest and check name, root path, age and its own hash line."""
    try:
        manifest = Manifest.parse(manifest_bytes)
    except ManifestError as e:
        raise TrustError(fqrn, "manifest is malformed: %s" % e.message)
    if manifest.name != fqrn:
        raise TrustError(fqrn, "manifest is for repository %s" % manifest.name,
                         "the server URL serves another repository")
    if manifest.root_path_hash != EMPTY_PATH_MD5:
        raise TrustError(fqrn, "manifest root path hash (R) is %s, not the empty path's"
                         % manifest.root_path_hash)
    if min_timestamp is not None and (manifest.timestamp or 0) < min_timestamp:
        raise TrustError(fqrn, "manifest is older (T%s) than one already seen (T%d): "
                         "refusing a rollback" % (manifest.timestamp, min_timestamp))
    if not manifest.is_signed:
        raise TrustError(fqrn, "manifest is not signed")
    if not manifest.body_hash_matches():
        raise TrustError(fqrn, "manifest hash mismatch: its fields do not match its hash "
                         "line (tampered or corrupted manifest)")
    if manifest.certificate is None:
        raise TrustError(fqrn, "manifest names no certificate (field X)")
    return manifest


def load_certificate(fqrn, manifest, fetch_certificate):
    """Fetch the manifest's certificate object, check its hash, parse it."""
    data = fetch_certificate(manifest.certificate)
    if not hashes.verify_bytes(data, manifest.certificate):
        raise TrustError(fqrn, "certificate object %s does not match its hash (swapped or "
                         "corrupted certificate)" % manifest.certificate)
    try:
        return Certificate.from_object(data)
    except der.DerError as e:
        raise TrustError(fqrn, "certificate %s is unreadable: %s" % (manifest.certificate, e.message))


def verify_whitelist(fqrn, whitelist_bytes, keys, now=None):
    """Parse and check the whitelist: hash, master-key signature, name, expiry, variant."""
    try:
        whitelist = Whitelist.parse(whitelist_bytes)
    except WhitelistError as e:
        raise TrustError(fqrn, e.message)
    if not whitelist.body_hash_matches():
        raise TrustError(fqrn, "whitelist hash mismatch: its body does not match its hash "
                         "line (tampered or corrupted whitelist)")
    if whitelist.signed_by(keys) is None:
        raise TrustError(fqrn, "whitelist signature does not match any repository key (tried %s)"
                         % ", ".join(k.source or k.fingerprint() for k in keys), _KEY_HINT)
    if whitelist.name != fqrn:
        raise TrustError(fqrn, "whitelist is for repository %s" % whitelist.name)
    if whitelist.is_expired(now):
        raise TrustError(fqrn, "whitelist expired on %s" % whitelist.expires_text,
                         "the repository maintainers must re-sign it; CVMFS_ROOT_HASH can "
                         "pin a known root catalog meanwhile")
    if whitelist.pkcs7 or whitelist.cachain:
        raise TrustError(fqrn, "whitelist needs PKCS#7 / CA chain verification, which the "
                         "builtin client does not support", "use the cvmfs2 backend")
    return whitelist


def verify_chain(fqrn, manifest_bytes, whitelist_bytes, fetch_certificate, public_keys_pem,
                 now=None, min_timestamp=None, blacklist=None):
    """Verify the whole chain; return the :class:`Manifest` (with ``.certificate_object``
    and ``.whitelist_object`` attached) or raise :class:`TrustError`.

    ``fetch_certificate(ContentHash) -> bytes`` returns the certificate object as
    stored (compressed; its hash is checked here).  ``public_keys_pem``: PEM
    bytes of the master keys, any of which may sign the whitelist.  ``now``:
    UNIX seconds or datetime (default: the current time).  ``min_timestamp``:
    newest manifest timestamp seen before (anti-rollback).  ``blacklist``: text
    of blacklist files.
    """
    keys = parse_public_keys(fqrn, public_keys_pem)
    manifest = check_manifest_form(fqrn, manifest_bytes, min_timestamp)
    certificate = load_certificate(fqrn, manifest, fetch_certificate)
    if not manifest.signature_valid(certificate.public_key):
        raise TrustError(fqrn, "manifest signature invalid: not made by the key of certificate %s"
                         % manifest.certificate)
    whitelist = verify_whitelist(fqrn, whitelist_bytes, keys, now)
    if not whitelist.lists(certificate):
        raise TrustError(fqrn, "certificate not on whitelist (fingerprint %s)"
                         % certificate.fingerprint_text())
    if blacklist:
        check_blacklist(fqrn, manifest, certificate, blacklist)
    manifest.certificate_object = certificate
    manifest.whitelist_object = whitelist
    return manifest


def check_blacklist(fqrn, manifest, certificate, blacklist):
    fingerprints, min_revisions = parse_blacklist(blacklist)
    for algorithm in (hashes.SHA1, hashes.RMD160, hashes.SHAKE128):
        if certificate.fingerprint(algorithm) in fingerprints:
            raise TrustError(fqrn, "certificate is blacklisted (fingerprint %s)"
                             % certificate.fingerprint_text(algorithm))
    if manifest.revision < min_revisions.get(fqrn, 0):
        raise TrustError(fqrn, "revision %d is blacklisted (revisions below %d are refused)"
                         % (manifest.revision, min_revisions[fqrn]))
