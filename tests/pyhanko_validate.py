#!/usr/bin/env python3
"""Validate EVERY signature (and document timestamp) of a PDF with pyHanko.

Used by tests/it/validators.rs as an independent interop check of what Segel
writes. Prints one JSON object per line, one line per embedded signature, in
file order (oldest first):

  {"index": 0, "field": "Sig1", "kind": "signature", "intact": true,
   "valid": true, "trusted": true, "revoked": false,
   "coverage": "ENTIRE_FILE", "modification_level": "NONE",
   "docmdp_ok": true, "bottom_line": true, "ok": true, ...}

"ok" = intact and valid and trusted and bottom_line (pyHanko's own verdict,
which also covers DocMDP / modification analysis and key usage).

Revocation: nothing is fetched (allow_fetching=False) and the revocation mode
is soft-fail, so certificates without revocation info are still trusted; CRLs
passed with --crl ARE consulted (a revoked signer then comes out revoked).

Exit status: 0 every signature ok; 1 some signature not ok, or the file has no
signatures; 2 the file could not be opened/parsed (message on stderr) or bad
usage.

usage: pyhanko_validate.py FILE.pdf [--trust ROOT.pem]... [--other-certs CERT.pem]...
                           [--crl CRL.pem|der]... [--password PW] [--no-strict]
                           [--validation-time ISO8601] [--no-diff-analysis]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime


def _name(x) -> str | None:
    return None if x is None else getattr(x, "name", str(x))


def _iso(dt) -> str | None:
    return None if dt is None else dt.isoformat()


def load_certs(paths):
    from pyhanko.keys import load_certs_from_pemder

    return list(load_certs_from_pemder(paths)) if paths else []


def load_crls(paths):
    from asn1crypto import crl, pem

    out = []
    for p in paths:
        data = open(p, "rb").read()
        if pem.detect(data):
            for _, _, der in pem.unarmor(data, multiple=True):
                out.append(crl.CertificateList.load(der))
        else:
            out.append(crl.CertificateList.load(data))
    return out


class _Collect(logging.Handler):
    """Keeps pyHanko's log messages (e.g. why a path could not be validated)
    instead of letting them print tracebacks; they go into the JSON as "log"."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def describe(ix, emb, status=None, error=None) -> dict:
    """One JSON-able record for embedded signature `emb`."""
    kind = "doc_timestamp" if emb.sig_object_type == "/DocTimeStamp" else "signature"
    rec = {
        "index": ix,
        "field": emb.field_name,
        "kind": kind,
        "subfilter": _name(emb.sig_object.get("/SubFilter")),
        "signed_revision": emb.signed_revision,
        "certification": _name(emb.docmdp_level),  # None, NO_CHANGES, FILL_FORMS, ANNOTATE
        "byte_range": list(emb.byte_range) if emb.byte_range is not None else None,
        "signer_reported_time": None,
        "error": error,
    }
    try:
        rec["signer"] = emb.signer_cert.subject.human_friendly
        rec["signer_cert_sha256"] = emb.signer_cert.sha256.hex()
    except Exception as e:  # broken CMS
        rec["signer"] = None
        rec["signer_cert_sha256"] = None
        rec["error"] = rec["error"] or f"cannot read signer certificate: {e}"
    try:
        rec["signer_reported_time"] = _iso(emb.self_reported_timestamp)
    except Exception:
        pass

    if status is None:
        rec.update(intact=False, valid=False, trusted=False, revoked=False,
                   coverage=None, modification_level=None, docmdp_ok=False,
                   bottom_line=False, ok=False, summary="INVALID")
        return rec

    trust_problem = getattr(status, "trust_problem_indic", None)
    if hasattr(status, "bottom_line"):
        bottom_line = bool(status.bottom_line)
    else:
        # DocumentTimestampStatus has no bottom_line. Its docmdp_ok is often None
        # (not evaluated) even when the diff analysis found nothing, so judge
        # from the modification level: anything but OTHER is acceptable for a
        # document timestamp.
        mod = getattr(status, "modification_level", None)
        mdp = status.docmdp_ok if status.docmdp_ok is not None else (mod is None or mod.name != "OTHER")
        bottom_line = bool(status.intact and status.valid and status.trusted and mdp)
    rec.update(
        intact=bool(status.intact),
        valid=bool(status.valid),
        trusted=bool(status.trusted),
        revoked=bool(getattr(status, "revoked", False)),
        trust_problem=_name(trust_problem),
        coverage=_name(status.coverage),
        modification_level=_name(getattr(status, "modification_level", None)),
        docmdp_ok=None if status.docmdp_ok is None else bool(status.docmdp_ok),  # null = not evaluated
        bottom_line=bottom_line,
        md_algorithm=status.md_algorithm,
        mechanism=status.pkcs7_signature_mechanism,
        validation_time=_iso(getattr(status, "validation_time", None)),
        summary=status.summary(),
    )
    if kind == "signature":
        tsv = status.timestamp_validity
        rec["signature_timestamp"] = None if tsv is None else {
            "intact": bool(tsv.intact), "valid": bool(tsv.valid), "trusted": bool(tsv.trusted),
            "time": _iso(tsv.timestamp), "tsa": tsv.signing_cert.subject.human_friendly,
        }
        rec["seed_value_ok"] = bool(status.seed_value_ok)
        diff = status.diff_result
        rec["suspicious_modification"] = (
            None if diff is None or not hasattr(diff, "args") else str(diff))
    else:
        rec["timestamp"] = _iso(getattr(status, "timestamp", None))
    rec["ok"] = rec["intact"] and rec["valid"] and rec["trusted"] and rec["bottom_line"]
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Validate all signatures of a PDF with pyHanko (JSON lines).")
    ap.add_argument("pdf")
    ap.add_argument("--trust", action="append", default=[], help="trust root (PEM/DER), repeatable")
    ap.add_argument("--other-certs", action="append", default=[], help="extra certs (PEM/DER), repeatable")
    ap.add_argument("--crl", action="append", default=[], help="CRL (PEM/DER) to consult, repeatable")
    ap.add_argument("--password", default=None, help="password for an encrypted PDF")
    ap.add_argument("--no-strict", action="store_true",
                    help="open with strict=False (needed e.g. for hybrid-reference files)")
    ap.add_argument("--validation-time", default=None, help="ISO 8601 moment to validate at")
    ap.add_argument("--no-diff-analysis", action="store_true", help="skip incremental-update analysis")
    args = ap.parse_args(argv)

    try:
        from pyhanko.pdf_utils import crypt
        from pyhanko.pdf_utils.reader import PdfFileReader
        from pyhanko.sign.validation import validate_pdf_signature, validate_pdf_timestamp
        from pyhanko_certvalidator import ValidationContext
    except ImportError as e:
        print(f"pyhanko_validate.py: pyHanko is not importable: {e}", file=sys.stderr)
        return 2

    try:
        roots = load_certs(args.trust)
        others = load_certs(args.other_certs)
        crls = load_crls(args.crl)
    except Exception as e:
        print(f"pyhanko_validate.py: cannot load certificates/CRLs: {e}", file=sys.stderr)
        return 2

    moment = None
    if args.validation_time:
        moment = datetime.fromisoformat(args.validation_time)

    def new_vc():
        kw = dict(trust_roots=roots, other_certs=others, allow_fetching=False,
                  revocation_mode="soft-fail", crls=crls)
        if moment is not None:
            kw["moment"] = moment
        return ValidationContext(**kw)

    try:
        f = open(args.pdf, "rb")
        r = PdfFileReader(f, strict=not args.no_strict)
        if r.security_handler is not None:
            pw = args.password if args.password is not None else ""
            res = r.decrypt(pw)
            if res.status == crypt.AuthStatus.FAILED:
                print("pyhanko_validate.py: wrong or missing password", file=sys.stderr)
                return 2
        sigs = r.embedded_signatures
    except Exception as e:
        print(f"pyhanko_validate.py: cannot read {args.pdf}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2

    if not sigs:
        print(f"pyhanko_validate.py: {args.pdf} has no signatures", file=sys.stderr)
        return 1

    collector = _Collect()
    root_logger = logging.getLogger()
    root_logger.handlers[:] = [collector]
    root_logger.setLevel(logging.WARNING)

    all_ok = True
    for ix, emb in enumerate(sigs):
        collector.messages = []
        try:
            if emb.sig_object_type == "/DocTimeStamp":
                status = validate_pdf_timestamp(emb, validation_context=new_vc(),
                                                skip_diff=args.no_diff_analysis)
            else:
                status = validate_pdf_signature(emb, signer_validation_context=new_vc(),
                                                ts_validation_context=new_vc(),
                                                skip_diff=args.no_diff_analysis)
            rec = describe(ix, emb, status)
        except Exception as e:  # SignatureValidationError and anything unexpected
            rec = describe(ix, emb, None, error=f"{type(e).__name__}: {e}")
        rec["log"] = collector.messages
        all_ok &= rec["ok"]
        print(json.dumps(rec, sort_keys=True), flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
