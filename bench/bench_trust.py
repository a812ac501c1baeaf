#!/usr/bin/env python3
"""Cost of the chain of trust and of the hash fallback, against references measured in the same run.

  - verify_chain on the real small.example.org fixture (pure-Python RSA, DER, whitelist, manifest)
    vs. the two signature checks alone done by the `cryptography` package (OpenSSL);
  - pure-Python RIPEMD-160 throughput vs. hashlib's RIPEMD-160 (OpenSSL) and SHA-1.
"""
import hashlib
import os
import sys
import tarfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(os.path.dirname(ROOT), "shared", "fixtures")
sys.path.insert(0, ROOT)

from launcher.cvmfs import hashes, trust  # noqa: E402
from launcher.cvmfs.hashes import ContentHash  # noqa: E402


def best_of(func, repeat=5, number=20):
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            func()
        elapsed = (time.perf_counter() - start) / number
        best = elapsed if best is None else min(best, elapsed)
    return best


def load_small():
    files, objects = {}, {}
    with tarfile.open(os.path.join(FIXTURES, "small_example_org-repo.tar.gz")) as tar:
        for m in tar:
            if m.isfile() and (m.name.endswith("X") or "/.cvmfs" in m.name):
                parts = m.name.split("/")
                data = tar.extractfile(m).read()
                if parts[-3] == "data":
                    objects[ContentHash.parse(parts[-2] + parts[-1])] = data
                files[parts[-1]] = data
    with tarfile.open(os.path.join(FIXTURES, "small_example_org-keys.tar.gz")) as tar:
        pub = [tar.extractfile(m).read() for m in tar if m.name.endswith(".pub")]
    return files, objects, pub


def reference_openssl(files, objects, pub):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes as chashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    cert_obj = [v for k, v in objects.items() if k.suffix == "X"][0]
    master = serialization.load_pem_public_key(pub[0])
    m = files[".cvmfspublished"]
    w = files[".cvmfswhitelist"]

    def run():
        cert = x509.load_pem_x509_certificate(zlib.decompress(cert_obj))
        i = m.index(b"\n--\n")
        cert.public_key().verify(m[i + 45:], m[i + 4:i + 44], padding.PKCS1v15(), chashes.SHA1())
        j = w.index(b"\n--\n")
        master.recover_data_from_signature(w[j + 45:], padding.PKCS1v15(), None)
    return run


def main():
    files, objects, pub = load_small()

    def ours():
        trust.verify_chain("small.example.org", files[".cvmfspublished"], files[".cvmfswhitelist"],
                           objects.__getitem__, pub)
    try:
        ref = best_of(reference_openssl(files, objects, pub))
    except ImportError:
        sys.exit("bench_trust needs the cryptography package for its reference (use .venv/bin/python)")
    mine = best_of(ours)
    data = os.urandom(1 << 20)
    rmd_py = best_of(lambda: hashes.Ripemd160(data).digest(), repeat=2, number=1)
    rmd_ssl = best_of(lambda: hashlib.new("ripemd160", data).digest())
    sha1 = best_of(lambda: hashlib.sha1(data).digest())
    print("%-52s %12s %8s" % ("measurement", "value", "ratio"))  # ratio: time (ms) or speed (MB/s)
    print("%-52s %9.3f ms %8s" % ("reference: 2 RSA checks with cryptography/OpenSSL", ref * 1e3, "1.0"))
    print("%-52s %9.3f ms %7.1fx" % ("verify_chain small.example.org (pure Python)", mine * 1e3,
                                     mine / ref))
    print("%-52s %8.1f MB/s %8s" % ("reference: hashlib sha1", 1 / sha1, "1.0"))
    print("%-52s %8.1f MB/s %7.3fx" % ("hashlib ripemd160", 1 / rmd_ssl, sha1 / rmd_ssl))
    print("%-52s %8.2f MB/s %7.4fx" % ("pure-Python ripemd160 fallback", 1 / rmd_py, sha1 / rmd_py))


if __name__ == "__main__":
    main()
