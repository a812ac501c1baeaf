"""Content hashes: algorithms (incl. the pure-Python RIPEMD-160), hash strings, object names,
and verification against every object of the real fixture repositories."""
import hashlib
import os
import random
import tarfile
import zlib

import pytest

from conftest import FIXTURES
from launcher.cvmfs import hashes
from launcher.cvmfs.hashes import ContentHash, InvalidHash, Ripemd160

# Published RIPEMD-160 test vectors (Dobbertin, Bosselaers, Preneel).
RMD160_VECTORS = [
    (b"", "9c1185a5c5e9fc54612808977ee8f548b2258d31"),
    (b"a", "0bdc9d2d256b3ee9daae347be6f4dc835a467ffe"),
    (b"abc", "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"),
    (b"message digest", "5d0689ef49d2fae572b881b123a85ffa21595f36"),
    (b"abcdefghijklmnopqrstuvwxyz", "f71c27109c692c1b56bbdceb5b9d2865b3708dbc"),
    (b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "12a053384a9c0c88e405a06c27dcf49ada62eb2b"),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
     "b0e20b6e3116640286ed3a87a5713079b21f5189"),
    (b"1234567890" * 8, "9b752e45573d4b39f4dbd3323cab82bf63326bfb"),
]


def _hashlib_rmd160():
    try:
        return hashlib.new("ripemd160")
    except ValueError:
        return None


@pytest.mark.parametrize("data,expected", RMD160_VECTORS)
def test_pure_rmd160_known_vectors(data, expected):
    assert Ripemd160(data).hexdigest() == expected


def test_pure_rmd160_million_a_in_pieces():
    h = Ripemd160()
    for _ in range(1000):  # uneven pieces exercise the block buffer
        h.update(b"a" * 999)
    h.update(b"a" * 1000)
    assert h.hexdigest() == "52783243c1697bdbe16d37f97f68f08325dc1528"


@pytest.mark.skipif(_hashlib_rmd160() is None, reason="hashlib has no ripemd160 here")
def test_pure_rmd160_equals_hashlib_at_every_length_around_blocks():
    rnd = random.Random(5)
    for length in list(range(0, 140)) + [1000, 4096, 65537]:
        data = bytes(rnd.getrandbits(8) for _ in range(length))
        assert Ripemd160(data).hexdigest() == hashlib.new("ripemd160", data).hexdigest(), length


def test_new_hasher_falls_back_when_hashlib_lacks_rmd160(monkeypatch):
    monkeypatch.setattr(hashes, "_NATIVE_RMD160", False)
    h = hashes.new_hasher("rmd160")
    assert isinstance(h, Ripemd160)
    h.update(b"ab")
    h.update(b"c")
    assert h.hexdigest() == "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"


def test_algorithm_check_values_from_cvmfs_unit_tests():
    assert hashes.hash_hex_string(b"abc", "shake128") == \
        "5881092dd818bf5cf8a3ddb793fbcba74097d5c5-shake128"
    assert hashes.hash_hex_string(b"abc", "rmd160") == \
        "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc-rmd160"
    assert hashes.hash_hex_string(b"abc") == hashlib.sha1(b"abc").hexdigest()


@pytest.mark.parametrize("text,algorithm,suffix,url", [
    ("1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4C", "sha1", "C",
     "data/1d/3e28b4742cadf3966971fcbd28b32d7b8ea0f4C"),
    ("d85ab7e835750785b0535d4fbba7d59e921b1f48", "sha1", "",
     "data/d8/5ab7e835750785b0535d4fbba7d59e921b1f48"),
    ("77e136ceb869761ae6f8dc76eebfe94ea9dc520e-rmd160C", "rmd160", "C",
     "data/77/e136ceb869761ae6f8dc76eebfe94ea9dc520e-rmd160C"),
    ("1c74632ca124ac6fabb7d06a795a0e529c728b56-shake128P", "shake128", "P",
     "data/1c/74632ca124ac6fabb7d06a795a0e529c728b56-shake128P"),
])
def test_content_hash_parse_round_trip_and_url(text, algorithm, suffix, url):
    h = ContentHash.parse(text)
    assert (h.algorithm, h.suffix, h.url_path(), str(h)) == (algorithm, suffix, url, text)
    assert h == ContentHash.parse(text) and hash(h) == hash(ContentHash.parse(text))
    assert h.with_suffix("").hex_string() == text.rstrip("CP")
    assert h.alt_path() == ".cvmfsalt-" + text
    assert ContentHash.from_digest(h.digest(), algorithm, suffix) == h


@pytest.mark.parametrize("bad", [
    "", "xyz", "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f",            # 39 hex
    "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4a",                       # 41 hex
    "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4CC",                      # two suffixes
    "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4-md5",                    # unknown id
    "d41d8cd98f00b204e9800998ecf8427e-rmd160",                         # MD5 with an id
    "../../../../etc/passwd",
])
def test_content_hash_rejects_malformed(bad):
    with pytest.raises(InvalidHash) as e:
        ContentHash.parse(bad)
    assert isinstance(e.value, ValueError)


def test_md5_by_length_and_flags_algorithm():
    assert ContentHash.parse("d41d8cd98f00b204e9800998ecf8427e").algorithm == "md5"
    assert [hashes.algorithm_from_flags(f) for f in (4, 68, 260, 324, 516, 580, 2052)] == \
        ["sha1", "sha1", "rmd160", "rmd160", "shake128", "shake128", "sha1"]
    with pytest.raises(InvalidHash):
        hashes.algorithm_from_flags(3 << 8)


def test_content_hash_is_immutable():
    h = ContentHash.parse("d85ab7e835750785b0535d4fbba7d59e921b1f48")
    with pytest.raises(AttributeError):
        h.suffix = "C"


def _fixture_objects(tarball):
    """{ContentHash: stored bytes} for every data/ object of a fixture repository tarball."""
    objects = {}
    with tarfile.open(os.path.join(FIXTURES, tarball)) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) >= 3 and parts[-3] == "data":
                objects[ContentHash.parse(parts[-2] + parts[-1])] = tar.extractfile(member).read()
    return objects


@pytest.mark.parametrize("tarball", ["small_example_org-repo.tar.gz",
                                     "legacy_aufs_repo_21-repo.tar.gz"])
def test_every_fixture_object_hashes_to_its_name_as_stored(tarball):
    objects = _fixture_objects(tarball)
    assert len(objects) >= 17
    for h, data in objects.items():
        assert hashes.verify_bytes(data, h), h
        assert hashes.verify_bytes(data, str(h)), h
        # what is hashed is the compressed stream, never the content
        assert not hashes.verify_bytes(zlib.decompress(data), h), h
        tampered = bytearray(data)
        tampered[len(data) // 2] ^= 0x01
        assert not hashes.verify_bytes(bytes(tampered), h), h


def test_empty_file_object_and_hash_file(tmp_path):
    empty = zlib.compress(b"")
    assert empty == bytes.fromhex("789c030000000001")
    h = ContentHash.of_data(empty)
    assert str(h) == "e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78"
    path = tmp_path / "obj"
    path.write_bytes(empty)
    assert hashes.hash_file(str(path)) == h.digest_hex
    assert hashes.hash_file(str(path), "rmd160") == Ripemd160(empty).hexdigest()
