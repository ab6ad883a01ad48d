#!/usr/bin/env python3
"""Fill fuzz/corpus/<target>/ with seeds made from fixtures/ (the corpus is not committed).

    python3 fuzz/seed-corpus.py        # from the crate root or from fuzz/

pdf_parse, verify_pdf, pdf_sign: every fixture PDF.
cms_parse:  the /Contents of every signed fixture (CMS SignedData, DER and BER, with
            time-stamp tokens and adbe revocation archival), trimmed of zero padding, and two
            TimeStampResp answers of the fixture TSA made here with the openssl CLI.
revocation: certificate + issuer + CRL / OCSP response from fixtures/pki, in the part format of
            segel_fuzz::split_parts; the OCSP responses are made here with the openssl CLI,
            signed by the fixture intermediate CA (test keys, see fixtures/NOTES.md).
anchor:     the content streams of the fixture letters, after the anchor `${ttd}`.
stamp_image: small PNGs of every colour type and JPEG headers, made here.
Needs python3 (stdlib) and, for the OCSP seeds, openssl 3.
"""

import base64
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import zlib

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
FIXTURES = ROOT / "fixtures"
PKI = FIXTURES / "pki"
CORPUS = FUZZ / "corpus"


def put(target, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def der_len(data):
    """Length of the first DER TLV (None when indefinite or malformed)."""
    if len(data) < 2:
        return None
    n = data[1]
    if n < 0x80:
        return 2 + n
    k = n & 0x7F
    if k == 0 or len(data) < 2 + k:
        return None
    return 2 + k + int.from_bytes(data[2 : 2 + k], "big")


def pem_der(path):
    text = path.read_text()
    body = re.search(r"-----BEGIN [^-]+-----(.*?)-----END", text, re.S).group(1)
    return base64.b64decode("".join(body.split()))


def part(kind, data):
    return bytes([kind]) + len(data).to_bytes(2, "big") + data


def pdf_seeds():
    pdfs = sorted(FIXTURES.rglob("*.pdf"))
    for p in pdfs:
        data = p.read_bytes()
        put("pdf_parse", data)
        put("verify_pdf", data)
        put("pdf_sign", data)
    return pdfs


def tsa_seeds():
    with tempfile.TemporaryDirectory() as tmp:
        for reply in tsa_replies(pathlib.Path(tmp)):
            put("cms_parse", reply)


def cms_seeds(pdfs):
    for p in pdfs:
        for m in re.finditer(rb"/Contents\s*<([0-9A-Fa-f]+)>", p.read_bytes()):
            raw = bytes.fromhex(m.group(1).decode())
            n = der_len(raw)
            if n is None:  # BER with indefinite lengths: keep it whole, trimmed of padding
                raw = raw.rstrip(b"\0") + b"\0\0"
            elif n <= len(raw):
                raw = raw[:n]
            if len(raw) > 16:
                put("cms_parse", raw)


def tsa_replies(tmp):
    """TimeStampResp answers of the fixture TSA (openssl ts, fixtures/pki/tsa.cnf) over a
    zero SHA-256 digest with nonce 1, as segel_fuzz::cms_parse asks decode_response to check,
    and over another digest."""
    if shutil.which("openssl") is None:
        return []
    env = {"PATH": os.environ.get("PATH", ""), "SEGEL_PKI_DIR": str(PKI),
           "TSA_SERIAL": str(tmp / "tsaserial")}
    out = []
    for digest in ["00" * 32, "11" * 32]:
        query, reply = tmp / "q.tsq", tmp / "r.tsr"
        subprocess.run(
            ["openssl", "ts", "-query", "-digest", digest, "-sha256", "-cert", "-no_nonce",
             "-out", query], capture_output=True, check=True, env=env,
        )
        # Put nonce INTEGER 1 into the query: TimeStampReq ::= SEQUENCE { version,
        # messageImprint, …, nonce, certReq }; openssl writes no nonce with -no_nonce.
        q = query.read_bytes()
        body = q[2:] if q[1] < 0x80 else q[2 + (q[1] & 0x7F):]
        cert_req = b"\x01\x01\xff"
        assert body.endswith(cert_req)
        body = body[: -len(cert_req)] + b"\x02\x01\x01" + cert_req
        query.write_bytes(b"\x30" + bytes([len(body)]) + body)
        subprocess.run(
            ["openssl", "ts", "-reply", "-config", PKI / "tsa.cnf", "-queryfile", query,
             "-out", reply], capture_output=True, check=True, env=env,
        )
        out.append(reply.read_bytes())
    return out


def ocsp_responses(tmp):
    """(certificate file, DER OCSPResponse) made by the fixture intermediate CA."""
    if shutil.which("openssl") is None:
        return []
    ca = PKI / "intermediate-ca.cert.pem"
    key = PKI / "intermediate-ca.key.pem"
    index = tmp / "index.txt"
    lines = []
    out = []
    for name, state in [("signer-rsa", "V"), ("signer-revoked", "R")]:
        cert = PKI / f"{name}.cert.pem"
        serial = subprocess.run(
            ["openssl", "x509", "-in", cert, "-noout", "-serial"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().split("=")[1]
        rev = "250101000000Z" if state == "R" else ""
        lines.append(f"{state}\t991231235959Z\t{rev}\t{serial}\tunknown\t/CN={name}\n")
    index.write_text("".join(lines))
    for name in ["signer-rsa", "signer-revoked"]:
        cert = PKI / f"{name}.cert.pem"
        req, resp = tmp / f"{name}.req", tmp / f"{name}.resp"
        subprocess.run(
            ["openssl", "ocsp", "-issuer", ca, "-cert", cert, "-no_nonce", "-reqout", req],
            capture_output=True, check=True,
        )
        subprocess.run(
            ["openssl", "ocsp", "-index", index, "-rsigner", ca, "-rkey", key, "-CA", ca,
             "-reqin", req, "-respout", resp, "-ndays", "3650"],
            capture_output=True, check=True,
        )
        out.append((cert, resp.read_bytes()))
    return out


def revocation_seeds():
    inter = pem_der(PKI / "intermediate-ca.cert.pem")
    root = pem_der(PKI / "root-ca.cert.pem")
    crl = (PKI / "intermediate-ca.crl.der").read_bytes()
    for name in ["signer-rsa", "signer-revoked", "signer-ec", "signer-expired", "signer-p384"]:
        cert = pem_der(PKI / f"{name}.cert.pem")
        put("revocation", part(0, cert) + part(0, inter) + part(0, crl))
    put("revocation", part(0, inter) + part(0, root))
    with tempfile.TemporaryDirectory() as tmp:
        for cert, resp in ocsp_responses(pathlib.Path(tmp)):
            put("revocation", part(0, pem_der(cert)) + part(0, inter) + part(1, resp))
            put("revocation", part(0, pem_der(cert)) + part(0, inter) + part(0, crl) + part(1, resp))


def anchor_seeds():
    needle = b"${ttd}"
    for p in sorted((FIXTURES / "pdf").glob("letter*.pdf")):
        data = p.read_bytes()
        for m in re.finditer(rb"stream\r?\n", data):
            end = data.find(b"endstream", m.end())
            body = data[m.end() : end]
            head = data[max(0, m.start() - 200) : m.start()]
            if b"/FlateDecode" in head.split(b"obj")[-1]:
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    continue
            if b"Tf" in body:
                put("anchor", bytes([len(needle)]) + needle + body)


def png(width, height, color_type, bit_depth, rows, extra=b""):
    def chunk(kind, data):
        crc = zlib.crc32(kind + data).to_bytes(4, "big")
        return len(data).to_bytes(4, "big") + kind + data + crc
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    ihdr += bytes([bit_depth, color_type, 0, 0, 0])
    raw = b"".join(b"\0" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def image_seeds():
    """Small PNGs of each colour type and JPEG headers (SOF0/SOF2, APP14 Adobe)."""
    put("stamp_image", png(2, 2, 0, 8, [b"\x00\xff", b"\x80\x40"]))
    put("stamp_image", png(2, 1, 2, 8, [b"\xff\x00\x00\x00\xff\x00"]))
    put("stamp_image", png(2, 1, 6, 8, [b"\xff\x00\x00\x80\x00\xff\x00\xff"]))
    put("stamp_image", png(2, 1, 4, 16, [b"\x12\x34\x80\x00\xff\xff\xff\xff"]))
    plte = b"PLTE"
    palette = b"\xff\x00\x00\x00\x00\xff"
    crc = zlib.crc32(plte + palette).to_bytes(4, "big")
    put("stamp_image", png(4, 1, 3, 2, [b"\x1b"], len(palette).to_bytes(4, "big") + plte + palette + crc))
    for sof, comps, adobe in [(0xC0, 3, False), (0xC2, 1, False), (0xC0, 4, True)]:
        jpg = b"\xff\xd8"
        if adobe:
            app = b"Adobe\x00\x64\x00\x00\x00\x00\x02"
            jpg += b"\xff\xee" + (len(app) + 2).to_bytes(2, "big") + app
        frame = bytes([8]) + (20).to_bytes(2, "big") + (30).to_bytes(2, "big") + bytes([comps])
        frame += b"".join(bytes([i + 1, 0x11, 0]) for i in range(comps))
        jpg += bytes([0xFF, sof]) + (len(frame) + 2).to_bytes(2, "big") + frame
        scan = bytes([comps]) + b"".join(bytes([i + 1, 0]) for i in range(comps)) + b"\x00\x3f\x00"
        jpg += b"\xff\xda" + (len(scan) + 2).to_bytes(2, "big") + scan + b"\x00" * 8 + b"\xff\xd9"
        put("stamp_image", jpg)


def main():
    pdfs = pdf_seeds()
    cms_seeds(pdfs)
    tsa_seeds()
    revocation_seeds()
    anchor_seeds()
    image_seeds()
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")


if __name__ == "__main__":
    main()
