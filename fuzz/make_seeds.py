#!/usr/bin/env python3
"""Writes the fuzz seed corpora from the repository's real inputs (run from anywhere; idempotent).

avro_decode: demo events Avro-encoded by hand in the Confluent wire format, with schema ids as the
fuzz target hands them out (topology.toml order: QuoteRequested 1, QuotePriced 2, EnrollmentInitiated
3, EnrollmentCompleted 4, EntityUpdated 5), plus a few broken ones; byte 0 is the record's shape.
topology_parse: topology.toml and every topology under tests/. ingress_json: demo request bodies.
"""
import json
import pathlib
import shutil
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def long(n):
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(s):
    b = s.encode()
    return long(len(b)) + b


def double(x):
    return struct.pack("<d", x)


def frame(schema_id, body):
    return b"\x00" + struct.pack(">I", schema_id) + body


def write(target, name, data):
    (SEEDS / target / name).write_bytes(data)


QUOTES, ENROLLMENTS = 0, 1  # byte 0, bit 0
requested = frame(1, string("e1") + string("q1") + string("c1") + long(1) + double(250000.0)
                  + string("EUR") + long(1_700_000_000_000))
priced = frame(2, string("e2") + string("q1") + double(120.5) + long(1_800_000_000_000)
               + long(1_700_000_000_001))
negative = frame(2, string("e3") + string("q1") + double(-5.0) + long(1) + long(1))
initiated = frame(3, string("e4") + string("n1") + string("q1") + string("c1") + long(19000)
                  + long(1_700_000_000_002))
completed = frame(4, string("e5") + string("n1") + long(1) + string("P-1") + long(0)
                  + long(1_700_000_000_003))
completed_null = frame(4, string("e6") + string("n1") + long(0) + long(1) + long(1))
updated = frame(5, string("quote") + string("q1") + long(1) + string("QuoteRequested")
                + string("REQUESTED") + string("{}"))
avro = {
    "quote_requested": bytes([QUOTES]) + requested,
    "quote_requested_bad_key": bytes([QUOTES | 2]) + requested,
    "quote_requested_event_id": bytes([QUOTES | 8]) + requested,
    "quote_priced": bytes([QUOTES]) + priced,
    "quote_priced_negative": bytes([QUOTES]) + negative,
    "enrollment_initiated": bytes([ENROLLMENTS]) + initiated,
    "enrollment_completed": bytes([ENROLLMENTS]) + completed,
    "enrollment_completed_null_policy": bytes([ENROLLMENTS]) + completed_null,
    "wrong_source_type": bytes([QUOTES]) + initiated,
    "foreign_type": bytes([QUOTES]) + updated,
    "truncated": bytes([QUOTES]) + requested[:-4],
    "trailing": bytes([QUOTES]) + requested + b"\x00",
    "wrong_magic": bytes([QUOTES]) + b"\x01" + requested[1:],
    "unknown_id": bytes([QUOTES]) + frame(0x7FFFFFFF, requested[5:]),
    "short": bytes([QUOTES]) + b"\x00\x00\x00",
    "tombstone": bytes([QUOTES | 4]),
    "json_not_avro": bytes([QUOTES]) + b'{"eventId":"e1"}',
    "huge_length": bytes([QUOTES]) + frame(1, long(1 << 40) + b"x"),
    "negative_length": bytes([QUOTES]) + frame(1, long(-3) + b"x"),
    "bad_enum": bytes([QUOTES]) + frame(1, string("e1") + string("q1") + string("c1") + long(99)),
    "bad_utf8": bytes([QUOTES]) + frame(1, long(2) + b"\xff\xfe"),
}
for name, data in avro.items():
    write("avro_decode", name, data)

for path in [ROOT / "topology.toml", *sorted((ROOT / "tests" / "topologies").rglob("*.toml")),
             *sorted((ROOT / "tests" / "corpus" / "topologies").glob("*.toml"))]:
    if path.stat().st_size <= 16384:
        rel = path.relative_to(ROOT).as_posix().replace("/", "_")
        shutil.copyfile(path, SEEDS / "topology_parse" / rel)

bodies = [
    (0, {"eventId": "e1", "quoteId": "q1", "customerId": "c1", "product": "HOME",
         "coverageAmount": 250000.0, "requestedAt": 1700000000000}),
    (1, {"eventId": "e2", "quoteId": "q1", "premium": 120.5, "validUntil": 1, "pricedAt": 2}),
    (2, {"eventId": "e4", "enrollmentId": "n1", "quoteId": "q1", "customerId": "c1",
         "startDate": 19000, "initiatedAt": 3}),
    (3, {"eventId": "e5", "enrollmentId": "n1", "policyNumber": None, "outcome": "APPROVED",
         "completedAt": 4}),
    (3, {"eventId": "e6", "enrollmentId": "n1", "policyNumber": "P-1", "outcome": "APPROVED",
         "completedAt": 4}),
    (0, {"quoteId": 1, "extra": [1, {"a": None}], "coverageAmount": 1e308}),
]
for i, (route, body) in enumerate(bodies):
    write("ingress_json", f"body_{i}", bytes([route]) + json.dumps(body).encode())
