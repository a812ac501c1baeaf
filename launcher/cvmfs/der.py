"""The small part of DER/PEM that the cvmfs chain of trust needs (spec section 5).

Only reading: PEM armour, DER tag-length-value walking, RSA public keys in
PKCS#1 (``RSA PUBLIC KEY``) and SubjectPublicKeyInfo (``PUBLIC KEY``) form, and
the fields of an X.509 certificate up to its public key (v1 and v3: the
``[0]`` version field is optional; real repository certificates are v1).
Nothing here checks certificate dates, issuers or self-signatures: cvmfs uses
the certificate only as an envelope for the repository key.
"""

import base64
import binascii
import re

from launcher.errors import CvmfsexecError

SEQUENCE = 0x30
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
CONTEXT_0 = 0xA0

RSA_ENCRYPTION_OID = "1.2.840.113549.1.1.1"
COMMON_NAME_OID = "2.5.4.3"

_PEM_RE = re.compile(
    br"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)


class DerError(CvmfsexecError, ValueError):
    """Malformed DER or PEM data."""


def pem_blocks(text):
    """All ``(label, der_bytes)`` PEM blocks of ``text`` (bytes or str), in order."""
    if isinstance(text, str):
        text = text.encode("ascii", "replace")
    blocks = []
    for m in _PEM_RE.finditer(text):
        body = m.group(2)
        if b":" in body:  # RFC 1421 headers (encrypted keys): not for us
            raise DerError("PEM block %s has headers (encrypted?)" % m.group(1).decode())
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError) as e:
            raise DerError("bad base64 in PEM block %s: %s" % (m.group(1).decode(), e))
        blocks.append((m.group(1).decode("ascii"), der))
    return blocks


def pem_decode(text, label):
    """DER bytes of the first PEM block with this label; DerError if there is none."""
    for found, der in pem_blocks(text):
        if found == label:
            return der
    raise DerError("no PEM block '%s' found" % label)


def read_tlv(data, offset=0, end=None):
    """Parse one DER element at ``offset`` (ending by ``end``): ``(tag, value_start, value_end)``."""
    if end is None:
        end = len(data)
    if offset + 2 > end:
        raise DerError("DER truncated at offset %d" % offset)
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("DER high tag numbers are not supported (offset %d)" % offset)
    length = data[offset + 1]
    pos = offset + 2
    if length & 0x80:
        nbytes = length & 0x7F
        if nbytes == 0 or nbytes > 4 or pos + nbytes > end:
            raise DerError("bad DER length at offset %d" % offset)
        length = int.from_bytes(data[pos:pos + nbytes], "big")
        pos += nbytes
    if pos + length > end:
        raise DerError("DER element at offset %d overruns its container" % offset)
    return tag, pos, pos + length


def children(data, start=0, end=None):
    """List the ``(tag, value_start, value_end)`` of consecutive elements in data[start:end]."""
    if end is None:
        end = len(data)
    items = []
    pos = start
    while pos < end:
        tag, vstart, vend = read_tlv(data, pos, end)
        items.append((tag, vstart, vend))
        pos = vend
    return items


def expect(element, tag, what):
    if element[0] != tag:
        raise DerError("%s: expected DER tag 0x%02x, found 0x%02x" % (what, tag, element[0]))
    return element


def sequence_items(data, element, what):
    """Children of a SEQUENCE element."""
    _, start, end = expect(element, SEQUENCE, what)
    return children(data, start, end)


def decode_integer(data, element, what="INTEGER"):
    _, start, end = expect(element, INTEGER, what)
    if start == end:
        raise DerError("%s: empty INTEGER" % what)
    return int.from_bytes(data[start:end], "big", signed=True)


def decode_oid(data, element, what="OID"):
    _, start, end = expect(element, OID, what)
    raw = data[start:end]
    if not raw:
        raise DerError("%s: empty OID" % what)
    parts = [min(raw[0] // 40, 2)]
    parts.append(raw[0] - 40 * parts[0])
    value = 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def parse_rsa_public_key(der):
    """``(n, e)`` from a PKCS#1 ``RSAPublicKey ::= SEQUENCE { n, e }``."""
    top = children(der)
    if len(top) != 1:
        raise DerError("RSAPublicKey: trailing data")
    items = sequence_items(der, top[0], "RSAPublicKey")
    if len(items) != 2:
        raise DerError("RSAPublicKey: expected 2 fields, found %d" % len(items))
    n = decode_integer(der, items[0], "RSA modulus")
    e = decode_integer(der, items[1], "RSA exponent")
    if n <= 0 or e <= 0:
        raise DerError("RSAPublicKey: non-positive modulus or exponent")
    return n, e


def parse_spki_element(data, element):
    """``(n, e)`` from a SubjectPublicKeyInfo element (must be rsaEncryption)."""
    items = sequence_items(data, element, "SubjectPublicKeyInfo")
    if len(items) != 2:
        raise DerError("SubjectPublicKeyInfo: expected 2 fields")
    algorithm = sequence_items(data, items[0], "AlgorithmIdentifier")
    oid = decode_oid(data, algorithm[0], "public key algorithm")
    if oid != RSA_ENCRYPTION_OID:
        raise DerError("public key algorithm %s is not RSA" % oid)
    _, start, end = expect(items[1], BIT_STRING, "subjectPublicKey")
    if start == end or data[start] != 0:
        raise DerError("subjectPublicKey: unused bits in BIT STRING")
    return parse_rsa_public_key(data[start + 1:end])


def parse_spki(der):
    """``(n, e)`` from a DER SubjectPublicKeyInfo (PEM label ``PUBLIC KEY``)."""
    top = children(der)
    if len(top) != 1:
        raise DerError("SubjectPublicKeyInfo: trailing data")
    return parse_spki_element(der, top[0])


def public_key_from_pem(text):
    """``(n, e)`` of the first RSA public key in PEM text, either form."""
    for label, der in pem_blocks(text):
        if label == "PUBLIC KEY":
            return parse_spki(der)
        if label == "RSA PUBLIC KEY":
            return parse_rsa_public_key(der)
    raise DerError("no PEM 'PUBLIC KEY' or 'RSA PUBLIC KEY' block found")


def _decode_time(data, element):
    tag, start, end = element
    text = data[start:end].decode("ascii", "replace")
    if tag == UTC_TIME:  # YYMMDDhhmmssZ; years 50-99 are 19xx (RFC 5280)
        year = int(text[:2])
        return "%d%s" % (1900 + year if year >= 50 else 2000 + year, text[2:])
    if tag == GENERALIZED_TIME:
        return text
    raise DerError("validity: unexpected time tag 0x%02x" % tag)


def _common_name(data, element):
    """The CN of an X.501 Name, or '' when absent."""
    for rdn in children(data, element[1], element[2]):
        for attr in children(data, rdn[1], rdn[2]):
            fields = sequence_items(data, attr, "AttributeTypeAndValue")
            if len(fields) == 2 and decode_oid(data, fields[0]) == COMMON_NAME_OID:
                return data[fields[1][1]:fields[1][2]].decode("utf-8", "replace")
    return ""


def parse_certificate(der):
    """Fields of a DER X.509 certificate: dict(version, serial, subject_cn, issuer_cn,
    not_before, not_after (``YYYYMMDDhhmmssZ`` text), public_key (n, e))."""
    top = children(der)
    if len(top) != 1:
        raise DerError("certificate: trailing data")
    cert = sequence_items(der, top[0], "Certificate")
    if len(cert) != 3:
        raise DerError("certificate: expected 3 fields, found %d" % len(cert))
    tbs = sequence_items(der, cert[0], "tbsCertificate")
    version = 1
    if tbs and tbs[0][0] == CONTEXT_0:  # [0] EXPLICIT Version, absent in v1
        inner = children(der, tbs[0][1], tbs[0][2])
        version = decode_integer(der, inner[0], "version") + 1
        tbs = tbs[1:]
    if len(tbs) < 6:
        raise DerError("tbsCertificate: expected at least 6 fields, found %d" % len(tbs))
    validity = sequence_items(der, tbs[3], "validity")
    if len(validity) != 2:
        raise DerError("validity: expected 2 times")
    return {
        "version": version,
        "serial": decode_integer(der, tbs[0], "serialNumber"),
        "issuer_cn": _common_name(der, expect(tbs[2], SEQUENCE, "issuer")),
        "not_before": _decode_time(der, validity[0]),
        "not_after": _decode_time(der, validity[1]),
        "subject_cn": _common_name(der, expect(tbs[4], SEQUENCE, "subject")),
        "public_key": parse_spki_element(der, tbs[5]),
    }
