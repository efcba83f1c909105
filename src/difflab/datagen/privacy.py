"""PII detection and redaction for seeds and generated data.

Each detector finds candidates with a pattern and keeps only those a validator accepts, so numbers
that merely look like PII are left alone:

    email         RFC-5322-ish address pattern
    phone         Google's libphonenumber (`phonenumbers`), numbers valid for their region
                  (international +CC numbers anywhere; national ones for `phone_region`)
    credit_card   13-19 digits (spaces/dashes allowed) passing the Luhn check (`stdnum.luhn`)
    ip            IPv4 and IPv6 addresses that parse (`ipaddress`)
    iban          IBANs with a valid country format and mod-97 check (`stdnum.iban`)
    national_id   the configured national ids, each validated by python-stdnum: us_ssn (ddd-dd-dddd),
                  es_dni, it_codice_fiscale, in_aadhaar, nl_bsn, de_idnr, fr_nir

`Redactor.redact(text)` replaces every match with `[TYPE]` and returns the counts per type; the
original values are never returned, logged or written (`redact_results` does the same to every field
of a set of examples, with a count report).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections import Counter

from difflab.datagen.records import Results
from difflab.errors import DifflabError

PII_TYPES = ("email", "phone", "credit_card", "ip", "iban", "national_id")

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")


def _stdnum(module: str):
    import importlib

    return importlib.import_module(f"stdnum.{module}")


# national id name -> (candidate pattern, stdnum module)
NATIONAL_IDS = {
    "us_ssn": (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "us.ssn"),
    "es_dni": (re.compile(r"\b\d{8}-?[A-Za-z]\b"), "es.dni"),
    "it_codice_fiscale": (re.compile(r"\b[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z]\b"), "it.codicefiscale"),
    "in_aadhaar": (re.compile(r"\b[2-9]\d{3} ?\d{4} ?\d{4}\b"), "in_.aadhaar"),
    "nl_bsn": (re.compile(r"\b\d{9}\b"), "nl.bsn"),
    "de_idnr": (re.compile(r"\b\d{2} ?\d{3} ?\d{3} ?\d{3}\b"), "de.idnr"),
    "fr_nir": (re.compile(r"\b[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b"), "fr.nir"),
}
DEFAULT_NATIONAL_IDS = ("us_ssn", "es_dni", "it_codice_fiscale", "in_aadhaar")


@dataclasses.dataclass(frozen=True)
class Match:
    type: str
    start: int
    end: int


class Redactor:
    def __init__(self, types: tuple[str, ...] | list[str] = PII_TYPES, *, phone_region: str = "US",
                 national_ids: tuple[str, ...] | list[str] = DEFAULT_NATIONAL_IDS, placeholder: str = "[{type}]"):
        unknown = [t for t in types if t not in PII_TYPES] + [n for n in national_ids if n not in NATIONAL_IDS]
        if unknown:
            raise DifflabError(f"datagen privacy: unknown PII type or national id '{unknown[0]}' "
                               f"(types: {', '.join(PII_TYPES)}; national ids: {', '.join(NATIONAL_IDS)})")
        self.types, self.phone_region, self.placeholder = tuple(types), phone_region, placeholder
        self.national_ids = tuple(national_ids)

    def _emails(self, text):
        return [Match("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]

    def _phones(self, text):
        import phonenumbers

        return [Match("phone", m.start, m.end) for m in
                phonenumbers.PhoneNumberMatcher(text, self.phone_region, leniency=phonenumbers.Leniency.VALID)]

    def _cards(self, text):
        luhn = _stdnum("luhn")
        out = []
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
                out.append(Match("credit_card", m.start(), m.end()))
        return out

    def _ips(self, text):
        out = []
        for pattern in (_IPV4, _IPV6):
            for m in pattern.finditer(text):
                try:
                    ipaddress.ip_address(m.group())
                except ValueError:
                    continue
                out.append(Match("ip", m.start(), m.end()))
        return out

    def _ibans(self, text):
        iban = _stdnum("iban")
        return [Match("iban", m.start(), m.end()) for m in _IBAN.finditer(text) if iban.is_valid(m.group())]

    def _national(self, text):
        out = []
        for name in self.national_ids:
            pattern, module = NATIONAL_IDS[name]
            validator = _stdnum(module)
            out += [Match("national_id", m.start(), m.end()) for m in pattern.finditer(text)
                    if validator.is_valid(m.group())]
        return out

    def detect(self, text: str) -> list[Match]:
        """Non-overlapping matches, left to right (a longer match wins an overlap)."""
        finders = {"email": self._emails, "phone": self._phones, "credit_card": self._cards, "ip": self._ips,
                   "iban": self._ibans, "national_id": self._national}
        found = [m for t in self.types for m in finders[t](text)]
        found.sort(key=lambda m: (m.start, -(m.end - m.start)))
        chosen, end = [], -1
        for m in found:
            if m.start >= end:
                chosen.append(m)
                end = m.end
        return chosen

    def redact(self, text: str) -> tuple[str, Counter]:
        """(text with every match replaced by its placeholder, counts per type)."""
        if not text:
            return text, Counter()
        matches = self.detect(text)
        parts, last = [], 0
        for m in matches:
            parts += [text[last:m.start], self.placeholder.format(type=m.type.upper())]
            last = m.end
        parts.append(text[last:])
        return "".join(parts), Counter(m.type for m in matches)


def redact_results(results: Results, redactor: Redactor | None = None) -> tuple[Results, dict]:
    """Every text field of every example redacted; report = counts per type and examples touched."""
    redactor = redactor or Redactor()
    total, touched, out = Counter(), 0, []
    for e in results:
        fields, counts = {}, Counter()
        for name in ("instruction", "input", "output"):
            fields[name], found = redactor.redact(getattr(e, name))
            counts += found
        total += counts
        touched += bool(counts)
        meta = {**e.meta, "pii_redacted": dict(counts)} if counts else e.meta
        out.append(dataclasses.replace(e, **fields, meta=meta, id=""))  # id from the redacted text
    report = {"examples": len(out), "examples_with_pii": touched, "redacted": {t: total.get(t, 0) for t in redactor.types}}
    return Results(out), report
