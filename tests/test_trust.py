"""Chain of trust: the real fixture repositories verify, every broken link is refused by name.

Attack material is made in the tests with the ``cryptography`` package (build side only):
fresh keys and certificates, and raw RSA signatures with the legacy fixture's own master key.
"""
import datetime
import hashlib
import os
import subprocess
import tarfile
import textwrap
import zlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes as chashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa as crsa
from cryptography.x509.oid import NameOID

from conftest import FIXTURES, ROOT, python_oldest_and_newest
from launcher.cvmfs import der, rsa, trust
from launcher.cvmfs.certificate import Certificate
from launcher.cvmfs.hashes import ContentHash
from launcher.cvmfs.manifest import Manifest
from launcher.cvmfs.trust import TrustError, verify_chain
from launcher.cvmfs.whitelist import Whitelist
from launcher.errors import CvmfsexecError

SMALL = "small.example.org"
LEGACY = "legacy_aufs.cern.ch"
LEGACY_ROOT = "6ed3d49a5c64f21f36936ab350d49aaf57585b9a"
BEFORE_LEGACY_EXPIRY = datetime.datetime(2015, 11, 1)


# --- material -----------------------------------------------------------------

def _read_repo(tarball, keys_tarball, fqrn):
    repo = {"objects": {}, "keys": {}}
    with tarfile.open(os.path.join(FIXTURES, tarball)) as tar:
        for m in tar:
            if not m.isfile():
                continue
            parts = m.name.split("/")
            data = tar.extractfile(m).read()
            if parts[-1] == ".cvmfspublished":
                repo["manifest"] = data
            elif parts[-1] == ".cvmfswhitelist":
                repo["whitelist"] = data
            elif len(parts) >= 3 and parts[-3] == "data":
                repo["objects"][ContentHash.parse(parts[-2] + parts[-1])] = data
    with tarfile.open(os.path.join(FIXTURES, keys_tarball)) as tar:
        for m in tar:
            if m.isfile():
                repo["keys"][m.name.rsplit(".", 1)[-1]] = tar.extractfile(m).read()
    return repo


@pytest.fixture(scope="module")
def small():
    return _read_repo("small_example_org-repo.tar.gz", "small_example_org-keys.tar.gz", SMALL)


@pytest.fixture(scope="module")
def legacy():
    return _read_repo("legacy_aufs_repo_21-repo.tar.gz", "legacy_aufs_repo_21-keys.tar.gz", LEGACY)


@pytest.fixture(scope="module")
def other_keys():
    """Two fresh RSA keys: an attacker's master key and an attacker's signing key."""
    return [crsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def fetcher(repo, log=None):
    def fetch(h):
        if log is not None:
            log.append(h)
        return repo["objects"][h]
    return fetch


def verify(repo, fqrn, manifest=None, whitelist=None, keys=None, fetch=None, **kw):
    return verify_chain(fqrn, repo["manifest"] if manifest is None else manifest,
                        repo["whitelist"] if whitelist is None else whitelist,
                        fetch or fetcher(repo), [repo["keys"]["pub"]] if keys is None else keys, **kw)


def refused(*args, **kw):
    with pytest.raises(TrustError) as e:
        verify(*args, **kw)
    return e.value


def hash_string(data, algorithm="sha1"):
    """Independent of launcher.cvmfs.hashes: hashlib directly."""
    if algorithm == "sha1":
        return hashlib.sha1(data).hexdigest()
    if algorithm == "rmd160":
        return hashlib.new("ripemd160", data).hexdigest() + "-rmd160"
    return hashlib.shake_128(data).hexdigest(20) + "-shake128"


def raw_sign(private_key, message):
    """PKCS#1 v1.5 type 1 block around ``message`` without DigestInfo, as ``openssl pkeyutl -sign``."""
    numbers = private_key.private_numbers()
    n = numbers.public_numbers.n
    k = (n.bit_length() + 7) // 8
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(message)) + b"\x00" + message
    return pow(int.from_bytes(block, "big"), numbers.d, n).to_bytes(k, "big")


def pem_public(private_key, fmt=serialization.PublicFormat.SubjectPublicKeyInfo):
    return private_key.public_key().public_bytes(serialization.Encoding.PEM, fmt)


def make_certificate(private_key, fqrn):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqrn + " CernVM-FS Release Managers")])
    now = datetime.datetime(2026, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=365))
            .sign(private_key, chashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.DER)


def fingerprint_line(der_bytes, algorithm):
    h = hash_string(der_bytes, algorithm)
    digest, _, algo_id = h.partition("-")
    pairs = ":".join(digest[i:i + 2] for i in range(0, 40, 2)).upper()
    return pairs + ("-" + algo_id.upper() if algo_id else "")


def sign_manifest(fields, signing_key, algorithm="sha1"):
    body = "".join(k + v + "\n" for k, v in fields).encode()
    hash_line = hash_string(body, algorithm).encode()
    return body + b"--\n" + hash_line + b"\n" + signing_key.sign(
        hash_line, padding.PKCS1v15(), chashes.SHA1())


def sign_whitelist(fqrn, fingerprints, master_key, expires, algorithm="sha1", created=None):
    created = created or expires - datetime.timedelta(days=30)
    body = ("%s\nE%s\nN%s\n" % (created.strftime("%Y%m%d%H%M%S"), expires.strftime("%Y%m%d%H%M%S"),
                                fqrn) + "".join(f + "\n" for f in fingerprints)).encode()
    hash_line = hash_string(body, algorithm).encode()
    return body + b"--\n" + hash_line + b"\n" + raw_sign(master_key, hash_line)


def make_repo(fqrn, master_key, signing_key, algorithm="sha1", expires=None):
    """A complete synthetic chain (manifest, whitelist, certificate object) in one algorithm."""
    pem, der_bytes = make_certificate(signing_key, fqrn)
    cert_object = zlib.compress(pem)
    cert_hash = hash_string(cert_object, algorithm)
    catalog = hash_string(b"not a catalog", algorithm)
    fields = [("C", catalog), ("B", "4096"), ("R", "d41d8cd98f00b204e9800998ecf8427e"), ("D", "240"),
              ("S", "7"), ("G", "no"), ("A", "no"), ("N", fqrn), ("X", cert_hash), ("T", "1795539381")]
    expires = expires or datetime.datetime(2036, 1, 1)
    return {
        "manifest": sign_manifest(fields, signing_key, algorithm),
        "whitelist": sign_whitelist(fqrn, [fingerprint_line(der_bytes, algorithm) + "  # repo cert"],
                                    master_key, expires, algorithm),
        "objects": {ContentHash.parse(cert_hash, suffix="X"): cert_object},
        "keys": {"pub": pem_public(master_key)},
        "fields": fields, "cert_der": der_bytes,
    }


# --- the real repositories verify ---------------------------------------------

def test_small_example_org_chain_verifies_today(small):
    log = []
    manifest = verify(small, SMALL, fetch=fetcher(small, log))
    assert str(manifest.root_hash) == "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4C"
    assert (manifest.revision, manifest.ttl, manifest.root_catalog_size) == (2, 240, 106496)
    assert str(manifest.history) == "7b135a7855eb9af05f435196671ffb43a4dfcf90H"
    assert str(manifest.meta_info) == "85e4f386da0d5d77c7f66cf2f58e10951f24b653M"
    assert str(manifest.reflog_hash) == "b88854ed8436000c13abfcfc7e023dfb812b96fb"
    assert (manifest.timestamp, manifest.alt_paths, manifest.garbage_collectable) == \
        (1795539381, False, False)
    assert [str(h) for h in log] == ["865dc4606c473793ceb023154d6dba24e310278aX"]
    assert manifest.certificate_object.fingerprint_text() == \
        "C4:93:1A:34:2B:93:C1:2A:16:16:E1:C2:24:BA:4C:35:EC:17:08:F6"
    assert manifest.whitelist_object.expires == datetime.datetime(2036, 11, 21, 16, 56, 10)
    assert manifest.breadcrumb() == "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4T1795539381R2"


@pytest.mark.parametrize("now", [BEFORE_LEGACY_EXPIRY, BEFORE_LEGACY_EXPIRY.timestamp(),
                                 datetime.datetime(2015, 11, 20, 10, 59, 59)])
def test_legacy_chain_verifies_with_clock_before_expiry(legacy, now):
    manifest = verify(legacy, LEGACY, now=now)
    assert manifest.root_hash.hex_string() == LEGACY_ROOT
    assert (manifest.revision, manifest.ttl, manifest.meta_info, manifest.alt_paths) == \
        (2, 900, None, False)


@pytest.mark.parametrize("now", [None, datetime.datetime(2015, 11, 20, 11, 0, 0)])
def test_legacy_whitelist_expired_today_and_at_the_hour(legacy, now):
    # cvmfs compares year/month/day/hour only: E20151120115513 is dead at 11:00:00
    e = refused(legacy, LEGACY, now=now)
    assert "whitelist expired on 2015-11-20 11:55:13 UTC" in str(e)
    assert "CVMFS_ROOT_HASH" in e.hint
    assert isinstance(e, CvmfsexecError)


# --- attacks ---------------------------------------------------------------------

def _flip(data, offset):
    data = bytearray(data)
    data[offset] ^= 0x01
    return bytes(data)


def test_tampered_byte_in_manifest_fields(small):
    manifest = small["manifest"].replace(b"\nS2\n", b"\nS3\n")
    assert manifest != small["manifest"]
    assert "manifest hash mismatch" in str(refused(small, SMALL, manifest=manifest))


def test_tampered_manifest_with_recomputed_hash_line(small):
    body, _, rest = small["manifest"].partition(b"--\n")
    body = body.replace(b"\nS2\n", b"\nS3\n")
    manifest = body + b"--\n" + hash_string(body).encode() + rest[40:]
    assert "manifest signature invalid" in str(refused(small, SMALL, manifest=manifest))


def test_tampered_byte_in_manifest_signature(small):
    manifest = _flip(small["manifest"], len(small["manifest"]) - 100)
    assert "manifest signature invalid" in str(refused(small, SMALL, manifest=manifest))


def test_manifest_resigned_by_another_key_same_certificate(small, other_keys):
    body = small["manifest"].split(b"--\n")[0]
    fields = [(line[:1].decode(), line[1:].decode()) for line in body.splitlines()]
    manifest = sign_manifest(fields, other_keys[1])
    e = refused(small, SMALL, manifest=manifest)
    assert "manifest signature invalid" in str(e) and "865dc4606c" in str(e)


def test_manifest_resigned_with_own_certificate_is_not_on_whitelist(small, other_keys):
    attacker = make_repo(SMALL, other_keys[0], other_keys[1])
    objects = dict(small["objects"])
    objects.update(attacker["objects"])
    e = refused(dict(small, objects=objects), SMALL, manifest=attacker["manifest"])
    assert "certificate not on whitelist" in str(e)
    assert fingerprint_line(attacker["cert_der"], "sha1") in str(e)


def test_certificate_swapped(small, legacy):
    legacy_cert = [v for k, v in legacy["objects"].items() if k.suffix == "X"][0]
    e = refused(small, SMALL, fetch=lambda h: legacy_cert)
    assert "certificate object 865dc4606c473793ceb023154d6dba24e310278aX does not match its hash" \
        in str(e)


def test_whitelist_tampered(small):
    whitelist = small["whitelist"].replace(b"E2036", b"E2037")
    assert "whitelist hash mismatch" in str(refused(small, SMALL, whitelist=whitelist))


def test_wrong_repository_key(small, legacy):
    e = refused(small, SMALL, keys=[legacy["keys"]["pub"]])
    assert "whitelist signature does not match any repository key" in str(e)
    assert "CVMFS_KEYS_DIR" in e.hint


def test_whitelist_for_another_repository_signed_by_the_right_master_key(legacy):
    master = serialization.load_pem_private_key(legacy["keys"]["masterkey"], None)
    der_bytes = Certificate.from_object(
        [v for k, v in legacy["objects"].items() if k.suffix == "X"][0]).der
    whitelist = sign_whitelist("other.cern.ch", [fingerprint_line(der_bytes, "sha1")], master,
                               datetime.datetime(2015, 11, 20, 11, 55, 13))
    e = refused(legacy, LEGACY, whitelist=whitelist, now=BEFORE_LEGACY_EXPIRY)
    assert "whitelist is for repository other.cern.ch" in str(e)


def test_whitelist_resigned_expiry_extension_is_accepted_only_from_master_key(legacy, other_keys):
    """Renewing the legacy whitelist with its real master key makes it valid today;
    the same renewal signed by anyone else is refused."""
    der_bytes = Certificate.from_object(
        [v for k, v in legacy["objects"].items() if k.suffix == "X"][0]).der
    far = datetime.datetime(2099, 1, 1)
    master = serialization.load_pem_private_key(legacy["keys"]["masterkey"], None)
    good = sign_whitelist(LEGACY, ["# comment line", fingerprint_line(der_bytes, "sha1")], master, far)
    assert verify(legacy, LEGACY, whitelist=good).revision == 2
    forged = sign_whitelist(LEGACY, [fingerprint_line(der_bytes, "sha1")], other_keys[0], far)
    assert "whitelist signature does not match any repository key" in \
        str(refused(legacy, LEGACY, whitelist=forged))


def test_manifest_for_another_repository(small):
    e = refused(small, "other.example.org")
    assert "manifest is for repository small.example.org" in str(e)


def test_rollback_refused(small):
    e = refused(small, SMALL, min_timestamp=1795539382)
    assert "refusing a rollback" in str(e)
    assert verify(small, SMALL, min_timestamp=1795539381).revision == 2


def test_blacklisted_certificate_and_revision(small):
    fp = "C4:93:1A:34:2B:93:C1:2A:16:16:E1:C2:24:BA:4C:35:EC:17:08:F6"
    assert "certificate is blacklisted" in str(refused(small, SMALL, blacklist=fp + "\n"))
    assert "revision 2 is blacklisted" in str(refused(small, SMALL, blacklist="<%s 3\n" % SMALL))
    assert verify(small, SMALL, blacklist="<%s 2\n<other.org 9\n" % SMALL).revision == 2


def test_unsigned_and_truncated_manifests(small):
    body = small["manifest"].split(b"--\n")[0]
    assert "manifest is not signed" in str(refused(small, SMALL, manifest=body))
    truncated = small["manifest"][:-10]
    assert "manifest signature invalid" in str(refused(small, SMALL, manifest=truncated))
    assert "manifest is malformed" in str(refused(small, SMALL, manifest=b"Nsmall.example.org\n"))


def test_pkcs7_whitelist_refused_as_unsupported(other_keys):
    repo = make_repo("p.example.org", other_keys[0], other_keys[1])
    body, _, _ = repo["whitelist"].partition(b"--\n")
    lines = body.split(b"\n")
    lines.insert(3, b"Vpkcs7")
    body = b"\n".join(lines)
    hash_line = hash_string(body).encode()
    whitelist = body + b"--\n" + hash_line + b"\n" + raw_sign(other_keys[0], hash_line)
    e = refused(repo, "p.example.org", whitelist=whitelist)
    assert "PKCS#7" in str(e) and e.hint == "use the cvmfs2 backend"


@pytest.mark.parametrize("algorithm", ["sha1", "rmd160", "shake128"])
def test_synthetic_chain_in_each_hash_algorithm(algorithm, other_keys):
    repo = make_repo("algo.example.org", other_keys[0], other_keys[1], algorithm)
    manifest = verify(repo, "algo.example.org")
    assert manifest.root_hash.algorithm == algorithm
    assert manifest.certificate.url_path().endswith(
        {"sha1": "X", "rmd160": "-rmd160X", "shake128": "-shake128X"}[algorithm])
    assert manifest.whitelist_object.fingerprints[0].algorithm == algorithm
    # the same chain, expired by the synthetic whitelist's date
    e = refused(repo, "algo.example.org", now=datetime.datetime(2036, 1, 1))
    assert "whitelist expired on 2036-01-01 00:00:00 UTC" in str(e)


# --- keys from the configuration -------------------------------------------------

@pytest.fixture
def key_files(tmp_path, small, legacy):
    paths = {}
    for name, repo in (("small", small), ("legacy", legacy)):
        d = tmp_path / name
        d.mkdir()
        path = d / (name + ".pub")
        path.write_bytes(repo["keys"]["pub"])
        paths[name] = str(path)
    both = tmp_path / "both"
    both.mkdir()
    for name in ("small", "legacy"):
        (both / (name + ".pub")).write_bytes(open(paths[name], "rb").read())
    (both / "README").write_text("not a key")
    paths["both_dir"] = str(both)
    return paths


def test_several_colon_separated_keys_one_matches(small, key_files):
    keys = trust.load_public_keys({"CVMFS_PUBLIC_KEY": "%s:%s" % (key_files["legacy"],
                                                                  key_files["small"])})
    assert [k.source for k in keys] == [key_files["legacy"], key_files["small"]]
    assert verify(small, SMALL, keys=keys).revision == 2


def test_keys_dir_all_pub_files(small, key_files):
    keys = trust.load_public_keys({"CVMFS_KEYS_DIR": key_files["both_dir"]})
    assert [os.path.basename(k.source) for k in keys] == ["legacy.pub", "small.pub"]
    assert verify(small, SMALL, keys=keys).revision == 2


def test_public_key_wins_over_keys_dir(small, key_files):
    keys = trust.load_public_keys({"CVMFS_PUBLIC_KEY": key_files["legacy"],
                                   "CVMFS_KEYS_DIR": key_files["both_dir"]})
    e = refused(small, SMALL, keys=keys)
    assert "does not match any repository key (tried %s)" % key_files["legacy"] in str(e)


def test_missing_and_broken_keys(small, key_files, tmp_path):
    with pytest.raises(CvmfsexecError) as e:
        trust.load_public_keys({"CVMFS_PUBLIC_KEY": key_files["small"] + ":/nonexistent/x.pub"})
    assert "failed to load public key /nonexistent/x.pub" in str(e.value)
    with pytest.raises(CvmfsexecError) as e:
        trust.load_public_keys({"CVMFS_KEYS_DIR": str(tmp_path / "empty")})
    assert "no public keys" in str(e.value)
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    keys = trust.load_public_keys({"CVMFS_PUBLIC_KEY": str(bad)})
    assert "%s is not a usable RSA key" % bad in str(refused(small, SMALL, keys=keys))


# --- CVMFS_ROOT_HASH ----------------------------------------------------------------

def test_pinned_root_hash(legacy):
    assert trust.pinned_root_hash({}) is None
    assert trust.pinned_root_hash({"CVMFS_ROOT_HASH": ""}) is None
    pinned = trust.pinned_root_hash({"CVMFS_ROOT_HASH": LEGACY_ROOT})
    assert pinned.url_path() == "data/6e/d3d49a5c64f21f36936ab350d49aaf57585b9aC"
    assert pinned in legacy["objects"]   # the object the repository helper fetches and hash-checks
    manifest = Manifest.for_root_hash(LEGACY, pinned)
    assert (manifest.pinned, manifest.root_hash, manifest.certificate, manifest.ttl) == \
        (True, pinned, None, None)
    with pytest.raises(CvmfsexecError) as e:
        trust.pinned_root_hash({"CVMFS_ROOT_HASH": "6ed3d49a"})
    assert "CVMFS_ROOT_HASH=6ed3d49a is not a valid catalog hash" in str(e.value)


# --- RSA and DER details --------------------------------------------------------------

def test_rsa_key_forms_and_v3_certificate(other_keys):
    spki = rsa.PublicKey.from_pem(pem_public(other_keys[0]))
    pkcs1 = rsa.PublicKey.from_pem(pem_public(other_keys[0], serialization.PublicFormat.PKCS1))
    numbers = other_keys[0].public_key().public_numbers()
    assert (spki.n, spki.e) == (pkcs1.n, pkcs1.e) == (numbers.n, numbers.e)
    pem, der_bytes = make_certificate(other_keys[1], "v3.example.org")
    cert = Certificate.from_object(zlib.compress(pem))
    assert cert.fields["version"] == 3 and cert.der == der_bytes
    assert cert.subject_cn == "v3.example.org CernVM-FS Release Managers"
    assert cert.public_key.n == other_keys[1].public_key().public_numbers().n


def test_real_certificates_are_v1(small, legacy):
    for repo, cn in ((small, SMALL), (legacy, LEGACY)):
        obj = [v for k, v in repo["objects"].items() if k.suffix == "X"][0]
        cert = Certificate.from_object(obj)
        assert cert.fields["version"] == 1
        assert cert.subject_cn == cn + " CernVM-FS Release Managers"
        assert cert.public_key.n.bit_length() == 2048 and cert.public_key.e == 65537


def test_pkcs1v15_digests(other_keys):
    key = other_keys[1]
    pub = rsa.PublicKey.from_pem(pem_public(key))
    sig256 = key.sign(b"message", padding.PKCS1v15(), chashes.SHA256())
    assert pub.verify_pkcs1v15(b"message", sig256, "sha256")
    assert not pub.verify_pkcs1v15(b"message", sig256, "sha1")
    assert not pub.verify_pkcs1v15(b"messagf", sig256, "sha256")
    # RIPEMD-160 DigestInfo: SEQUENCE { SEQUENCE { OID 1.3.36.3.2.1, NULL }, OCTET STRING[20] }
    info = rsa.DIGEST_INFO["rmd160"]
    blob = info + b"\x00" * 20
    outer = der.sequence_items(blob, der.read_tlv(blob), "DigestInfo")
    assert der.decode_oid(blob, der.sequence_items(blob, outer[0], "algorithm")[0]) == "1.3.36.3.2.1"
    assert outer[1][0] == der.OCTET_STRING and outer[1][2] - outer[1][1] == 20
    sig_rmd = raw_sign(key, info + hashlib.new("ripemd160", b"message").digest())
    assert pub.verify_pkcs1v15(b"message", sig_rmd, "rmd160")


def test_rsa_rejects_malformed_signatures(other_keys):
    key = other_keys[1]
    pub = rsa.PublicKey.from_pem(pem_public(key))
    sig = raw_sign(key, b"hash")
    assert pub.verify_raw(b"hash", sig)
    assert not pub.verify_raw(b"hash", sig[1:])                 # short
    assert not pub.verify_raw(b"hash", b"\x00" + sig)           # long
    assert not pub.verify_raw(b"hash", b"\xff" * len(sig))      # >= n
    assert not pub.verify_raw(b"x" * 250, sig)                  # no room for 8 bytes of padding
    numbers = key.private_numbers()
    k = len(sig)
    short_pad = b"\x00\x01" + b"\xff" * 4 + b"\x00" + b"y" * (k - 7)
    forged = pow(int.from_bytes(short_pad, "big"), numbers.d, numbers.public_numbers.n)
    assert not pub.verify_raw(b"y" * (k - 7), forged.to_bytes(k, "big"))


def test_der_rejects_garbage():
    for blob in (b"", b"\x30", b"\x30\x85\x00\x00\x00\x00\x01", b"\x30\x05\x02\x01"):
        with pytest.raises(der.DerError):
            der.parse_certificate(blob)
    with pytest.raises(der.DerError):
        der.public_key_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_whitelist_fingerprint_syntax():
    body = (b"20261124165610\nE20361121165610\nNx.org\n"
            b"C4:93:1A:34:2B:93:C1:2A:16:16:E1:C2:24:BA:4C:35:EC:17:08:F6 # comment\n"
            b"77:E1:36:CE:B8:69:76:1A:E6:F8:DC:76:EE:BF:E9:4E:A9:DC:52:0E-RMD160\n"
            b"D4:1D:8C:D9:8F:00:B2:04:E9:80:09:98:EC:F8:42:7E\n"   # MD5: ignored
            b"not a fingerprint\n")
    wl = Whitelist.parse(body + b"--\n" + hash_string(body).encode() + b"\nsig")
    assert [str(f) for f in wl.fingerprints] == [
        "c4931a342b93c12a1616e1c224ba4c35ec1708f6",
        "77e136ceb869761ae6f8dc76eebfe94ea9dc520e-rmd160"]
    assert wl.body_hash_matches() and wl.name == "x.org"


# --- the oldest supported Python ------------------------------------------------------

CHAIN_SCRIPT = textwrap.dedent("""
    import datetime, hashlib, os, sys, tarfile
    sys.path.insert(0, sys.argv[1])
    from launcher.cvmfs import hashes, trust
    from launcher.cvmfs.hashes import ContentHash
    def load(fqrn, repo_tar, keys_tar, now):
        files, objects = {}, {}
        with tarfile.open(os.path.join(sys.argv[2], repo_tar)) as tar:
            for m in tar:
                if m.isfile():
                    p = m.name.split('/')
                    data = tar.extractfile(m).read()
                    if len(p) > 2 and p[-3] == 'data':
                        objects[ContentHash.parse(p[-2] + p[-1])] = data
                    files[p[-1]] = data
        with tarfile.open(os.path.join(sys.argv[2], keys_tar)) as tar:
            pub = [tar.extractfile(m).read() for m in tar if m.name.endswith('.pub')]
        return trust.verify_chain(fqrn, files['.cvmfspublished'], files['.cvmfswhitelist'],
                                  objects.__getitem__, pub, now=now)
    m = load('small.example.org', 'small_example_org-repo.tar.gz', 'small_example_org-keys.tar.gz', None)
    l = load('legacy_aufs.cern.ch', 'legacy_aufs_repo_21-repo.tar.gz',
             'legacy_aufs_repo_21-keys.tar.gz', datetime.datetime(2015, 11, 1))
    try:
        load('legacy_aufs.cern.ch', 'legacy_aufs_repo_21-repo.tar.gz', 'legacy_aufs_repo_21-keys.tar.gz', None)
    except trust.TrustError as e:
        expired = str(e)
    rmd = hashes.new_hasher('rmd160', b'abc').hexdigest()
    print(m.revision, m.root_hash, l.root_hash, rmd, expired)
""")


@pytest.mark.parametrize("python", python_oldest_and_newest())
def test_chain_on_oldest_and_newest_python(python):
    out = subprocess.run([python, "-W", "error", "-c", CHAIN_SCRIPT, ROOT, FIXTURES],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(None, 4) == [
        "2", "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4C", LEGACY_ROOT + "C",
        "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc",
        "legacy_aufs.cern.ch: whitelist expired on 2015-11-20 11:55:13 UTC\n"]
