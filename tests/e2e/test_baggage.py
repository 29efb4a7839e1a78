"""Baggage: W3C `baggage`, Jaeger `uberctx-<key>`, OpenTracing `ot-baggage-<key>`.

Expected values from the W3C Baggage specification (list grammar, `baggage-octet`,
percent-encoding of values, UTF-8) and the README's Baggage section: opt-in through
`extract`/`inject`; W3C first, then `uberctx-`, then `ot-baggage-`, the first spelling of
a key wins; values percent-encoded on output in every spelling (everything outside
`baggage-octet`, plus `%` and `+`); at most 180 entries and 8192 bytes, entries beyond
dropped from the end; header names carry keys lower-cased; untrusted callers' baggage
removed.
"""

import re

import pytest

from formats_h2 import ALL_FORMATS, DEFAULT_INJECT, baggage_headers
from harness import EnvoyExited

ON = {"extract": ALL_FORMATS + ["baggage"], "inject": DEFAULT_INJECT + ["baggage"]}
W3C_ONLY = {**ON, "baggage": {"spellings": ["w3c"]}}
W3C_AND_OT = {**ON, "baggage": {"spellings": ["w3c", "opentracing"]}}
EXTRACT_ONLY = {"extract": ALL_FORMATS + ["baggage"]}
UNTRUSTED = {**ON, "sampling": {"trust_incoming": False}}
# Room for entries of thousands of bytes in the uberctx-/ot-baggage- spellings.
ROOMY = {**ON, "baggage": {"max_header_bytes": 16384}}

BAGGAGE_COUNTERS = (
    "tracebridge.extracted.baggage",
    "tracebridge.invalid.baggage",
    "tracebridge.baggage_truncated",
    "tracebridge.baggage_headers_limited",
)


@pytest.fixture(scope="module")
def proxy(proxies):
    return proxies(ON)


def everywhere(entries: list[tuple[str, str]], w3c: str | None = None) -> dict[str, list[str]]:
    """The three spellings of (key, encoded value) entries; w3c: the W3C header
    when it is not simply `key=value` joined with commas."""
    out = {"baggage": [w3c if w3c is not None else ",".join(f"{k}={v}" for k, v in entries)]}
    for key, value in entries:
        out[f"uberctx-{key.lower()}"] = [value]
        out[f"ot-baggage-{key.lower()}"] = [value]
    return out


def test_off_by_default(proxies):
    # Baggage is not a trace context: without "baggage" in extract/inject nothing changes.
    proxy = proxies({})
    sent = [
        ("baggage", "k = v , bad value"),
        ("uberctx-a", "x%20y"),
        ("ot-baggage-b", "1"),
    ]
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send(sent)
    assert baggage_headers(got) == {name: [value] for name, value in sent}
    assert delta == {}


def test_spellings_are_merged_w3c_first_then_jaeger_then_opentracing(proxy):
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send(
            [
                ("uberctx-tenant", "jaeger-tenant"),  # loses to the W3C entry
                ("baggage", "tenant=acme"),
                ("ot-baggage-plan", "silver"),  # loses to the Jaeger entry
                ("uberctx-plan", "gold"),
                ("ot-baggage-user", "bob"),
            ]
        )
    assert baggage_headers(got) == everywhere(
        [("tenant", "acme"), ("plan", "gold"), ("user", "bob")]
    )
    assert delta == {"tracebridge.extracted.baggage": 1}


def test_several_w3c_lines_are_one_list(proxy):
    got = proxy.send([("baggage", "a=1"), ("baggage", "b=2, c=3")])
    assert baggage_headers(got) == everywhere([("a", "1"), ("b", "2"), ("c", "3")])


def test_w3c_spacing_is_normalised_and_properties_stay_in_w3c(proxy):
    got = proxy.send([("baggage", "k1 = v1;ttl=30 , k2=v2;flag")])
    assert baggage_headers(got) == everywhere(
        [("k1", "v1"), ("k2", "v2")], w3c="k1=v1;ttl=30,k2=v2;flag"
    )


def test_canonical_w3c_header_is_left_as_it_came(proxy):
    got = proxy.send([("baggage", "userId=alice,serverNode=DF%2028,isProduction=false")])
    assert got.all("baggage") == ["userId=alice,serverNode=DF%2028,isProduction=false"]
    # keys lower-cased in header names; values stay encoded
    assert got.all("uberctx-userid") == ["alice"]
    assert got.all("ot-baggage-servernode") == ["DF%2028"]


# Value "a b+c%d✓" (space, plus, percent, U+2713 = E2 9C 93 in UTF-8) in each spelling.
ENCODED = "a%20b%2Bc%25d%E2%9C%93"


@pytest.mark.parametrize(
    "header",
    [
        ("baggage", "k=a%20b+c%25d%e2%9c%93"),  # W3C: + is a baggage-octet, lower-case hex
        ("baggage", f"k={ENCODED}"),
        ("uberctx-k", ENCODED),
        ("uberctx-k", "a%20b%2bc%25d%e2%9c%93"),
        ("ot-baggage-k", ENCODED),
    ],
    ids=["w3c-plus-lower-hex", "w3c-canonical", "jaeger", "jaeger-lower-hex", "opentracing"],
)
def test_percent_encoding_in_every_spelling(proxy, header):
    got = proxy.send([header])
    assert baggage_headers(got) == everywhere([("k", ENCODED)])


def test_raw_characters_outside_baggage_octet_are_encoded(proxy):
    # Jaeger/OpenTracing values may carry characters the W3C list cannot:
    # space, '"', ',', ';', '\\' (and '%', '+').
    got = proxy.send([("ot-baggage-q", 'x y,z;"w"\\v')])
    assert baggage_headers(got) == everywhere([("q", "x%20y%2Cz%3B%22w%22%5Cv")])


def test_invalid_utf8_becomes_replacement_character(proxy):
    # %FF is not UTF-8: W3C says U+FFFD, which is EF BF BD in UTF-8.
    got = proxy.send([("baggage", "k=%FF")])
    assert baggage_headers(got) == everywhere([("k", "%EF%BF%BD")])


INVALID_W3C = {
    "no-equals": "k",
    "space-in-value": "k=a b",
    "quote-in-value": 'k="v"',
    "empty-key": "=v",
    "space-in-key": "k y=v",
    "broken-percent": "k=%zz",
    "short-percent": "k=%4",
    "non-ascii": "k=\u00e9".encode(),
}


@pytest.mark.parametrize("value", INVALID_W3C.values(), ids=INVALID_W3C.keys())
def test_invalid_w3c_header_is_counted_and_other_spellings_still_count(proxy, value):
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", value), ("uberctx-a", "1"), ("ot-baggage-b", "2")])
    assert baggage_headers(got) == everywhere([("a", "1"), ("b", "2")])
    assert delta == {"tracebridge.invalid.baggage": 1, "tracebridge.extracted.baggage": 1}


def test_invalid_w3c_header_alone_is_counted_and_removed(proxy):
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", "not a list"), ("x-keep", "yes")])
    assert baggage_headers(got) == {}
    assert got.all("x-keep") == ["yes"]
    assert delta == {"tracebridge.invalid.baggage": 1}


def test_baggage_does_not_disturb_the_trace_context(proxy):
    got = proxy.send(
        [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("baggage", "k=v"),
        ]
    )
    assert got.all("traceparent") == ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]
    assert got.all("baggage") == ["k=v"]


# -- limits: 180 entries, 8192 bytes -------------------------------------------


def entries(n: int, prefix: str = "k") -> list[str]:
    return [f"{prefix}{i}=v" for i in range(n)]


@pytest.mark.parametrize(
    "sent, kept, truncated",
    [(180, 180, False), (181, 180, True), (200, 180, True)],
    ids=["180", "181", "200"],
)
def test_entry_limit(proxies, sent, kept, truncated):
    proxy = proxies(W3C_ONLY)
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", ",".join(entries(sent)))])
    assert got.all("baggage") == [",".join(entries(kept))]
    expected = {"tracebridge.extracted.baggage": 1}
    if truncated:
        expected["tracebridge.baggage_truncated"] = 1
    assert delta == expected


def test_entry_limit_counts_merged_entries_from_the_end(proxies):
    # 150 W3C entries + 40 Jaeger entries = 190: the first 30 Jaeger entries fit.
    proxy = proxies(W3C_ONLY)
    jaeger = [(f"uberctx-u{i}", "v") for i in range(40)]
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", ",".join(entries(150)))] + jaeger)
    assert got.all("baggage") == [",".join(entries(150) + entries(30, "u"))]
    # the Jaeger spelling is not configured: its headers are left as they came
    assert [n for n, _ in got.pairs if n.startswith("uberctx-")] == [n for n, _ in jaeger]
    assert delta == {"tracebridge.extracted.baggage": 1, "tracebridge.baggage_truncated": 1}


@pytest.mark.parametrize(
    "second, kept_second",
    [(4187, True), (4188, False)],
    ids=["8192-bytes", "8193-bytes"],
)
def test_byte_limit(proxies, second, kept_second):
    # "a=" + 4000 + "," + "b=" + N bytes = 4005 + N: 8192 at N = 4187.
    proxy = proxies(W3C_ONLY)
    a, b = "a=" + "x" * 4000, "b=" + "y" * second
    assert len(f"{a},{b}") == 4005 + second
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", f"{a},{b}")])
    assert got.all("baggage") == ([f"{a},{b}"] if kept_second else [a])
    expected = {"tracebridge.extracted.baggage": 1}
    if not kept_second:
        expected["tracebridge.baggage_truncated"] = 1
    assert delta == expected


def test_byte_limit_counts_the_encoded_size(proxies):
    # Each U+2713 is written as %E2%9C%93 (9 bytes). "a=" + 910 * 9 = 8192 bytes fits
    # alone; one more entry "b=1" (4 bytes with the comma) does not.
    proxy = proxies(W3C_ONLY)
    a = "a=" + "%E2%9C%93" * 910
    assert len(a) == 8192
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", f"{a},b=1")])
    assert got.all("baggage") == [a]
    assert delta == {"tracebridge.extracted.baggage": 1, "tracebridge.baggage_truncated": 1}


def test_dropped_entry_is_removed_from_every_spelling(proxies):
    # All spellings configured: "a" (5002 bytes) fits, "b" from uberctx- would pass 8192.
    proxy = proxies(ROOMY)
    big_a, big_b = "x" * 5000, "y" * 5000
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", f"a={big_a}"), ("uberctx-b", big_b)])
    assert baggage_headers(got) == everywhere([("a", big_a)])  # no uberctx-b, no ot-baggage-b
    assert delta == {"tracebridge.extracted.baggage": 1, "tracebridge.baggage_truncated": 1}


def test_long_header_is_truncated_from_the_end(proxies):
    # 120 entries of 98-100 bytes: about 12 KB. The entries that fit in 8192 bytes are
    # kept, in order, and the truncation is counted.
    proxy = proxies(W3C_ONLY)
    sent = [f"k{i}=" + "x" * 95 for i in range(120)]
    kept: list[str] = []
    for entry in sent:
        if len(",".join(kept + [entry])) > 8192:
            break
        kept.append(entry)
    assert 0 < len(kept) < 120
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", ",".join(sent))])
    assert got.all("baggage") == [",".join(kept)]
    assert delta == {"tracebridge.extracted.baggage": 1, "tracebridge.baggage_truncated": 1}


def test_many_w3c_lines_are_one_list(proxies):
    # 33 lines of one entry each: 33 entries, well within the limits.
    proxy = proxies(W3C_ONLY)
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", entry) for entry in entries(33)])
    assert got.all("baggage") == [",".join(entries(33))]
    assert delta == {"tracebridge.extracted.baggage": 1}


def test_seventy_prefixed_headers_are_all_merged(proxies):
    # 70 entries are within the 180-entry limit: all merged, none dropped (and within a
    # header limit raised to 70).
    proxy = proxies({**ON, "baggage": {"spellings": ["w3c", "opentracing"], "max_headers": 70}})
    sent = [(f"ot-baggage-k{i}", "v") for i in range(70)]
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send(sent)
    assert baggage_headers(got) == {
        "baggage": [",".join(entries(70))],
        **{name: [value] for name, value in sent},
    }
    assert delta == {"tracebridge.extracted.baggage": 1}


def test_case_colliding_keys_agree_in_every_header_spelling(proxy):
    # Header names carry keys lower-cased, so W3C "Tenant" and Jaeger's "tenant" land in
    # the same uberctx-/ot-baggage- header. W3C comes first, so its value wins, and the
    # header spellings must not disagree with each other.
    got = proxy.send([("baggage", "Tenant=acme"), ("uberctx-tenant", "other")])
    assert got.all("uberctx-tenant") == got.all("ot-baggage-tenant") == ["acme"]


# -- spellings and opt-in -------------------------------------------------------


def test_only_configured_spellings_are_written(proxies):
    proxy = proxies(W3C_AND_OT)
    got = proxy.send([("baggage", "b=2"), ("uberctx-a", "1%2B1")])
    assert baggage_headers(got) == {
        "baggage": ["b=2,a=1%2B1"],
        "uberctx-a": ["1%2B1"],  # Jaeger spelling not configured: as it came
        "ot-baggage-b": ["2"],
        "ot-baggage-a": ["1%2B1"],
    }


def test_extract_without_inject_reads_but_leaves_headers(proxies):
    proxy = proxies(EXTRACT_ONLY)
    sent = [("baggage", "k = v"), ("uberctx-a", "x y")]
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send(sent)
    assert baggage_headers(got) == {name: [value] for name, value in sent}
    assert delta == {"tracebridge.extracted.baggage": 1}


def test_untrusted_caller_baggage_is_removed_in_every_spelling(proxies):
    proxy = proxies(UNTRUSTED)
    with proxy.counting(BAGGAGE_COUNTERS + ("tracebridge.untrusted",)) as delta:
        got = proxy.send(
            [
                ("baggage", "tenant=acme,role=admin"),
                ("uberctx-user", "bob"),
                ("ot-baggage-plan", "gold"),
                ("x-keep", "yes"),
            ]
        )
    assert baggage_headers(got) == {}
    assert got.all("x-keep") == ["yes"]
    assert delta == {"tracebridge.untrusted": 1}


@pytest.mark.parametrize(
    "config, path",
    [
        ('{"baggage": {"spellings": ["zipkin"]}}', r"baggage\.spellings\[0\]"),
        ('{"extract": ["baggage", "baggage"]}', r"extract\[1\]"),
        ('{"baggage": {"max_headers": 0}}', r"baggage\.max_headers"),
        ('{"baggage": {"max_header_bytes": "4k"}}', r"baggage\.max_header_bytes"),
    ],
    ids=["unknown-spelling", "baggage-twice", "zero-headers", "bytes-not-a-number"],
)
def test_invalid_baggage_configuration_is_rejected(start_envoy, config, path):
    envoy = start_envoy(config)
    with pytest.raises(EnvoyExited) as exc:
        envoy.start()
    pattern = re.compile(r"tracebridge: invalid configuration: " + path + r": \S")
    assert pattern.search(exc.value.log), envoy.log_tail()


# -- what the header spellings add: baggage.max_headers, max_header_bytes ------------


def prefixed(got) -> list[tuple[str, str]]:
    return [(n, v) for n, v in got.pairs if n.startswith(("uberctx-", "ot-baggage-"))]


def test_a_full_baggage_header_adds_at_most_the_default_bound(proxy):
    # One W3C header of 180 entries (the W3C maximum) with all three spellings configured
    # would be 360 more header lines; Python's http.server (the upstream here) answers 431
    # to more than 100. README defaults: 64 lines, 4096 bytes of names and values. Each
    # entry "key000=value" is two lines of 19 and 22 bytes, so 32 entries (64 lines,
    # 1312 bytes) go in the header spellings, all 180 in `baggage`.
    sent = [f"key{i:03}=value" for i in range(180)]
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", ",".join(sent)), ("uberctx-key179", "value")])
    lines = prefixed(got)
    assert len(lines) == 64, lines
    assert sum(len(n) + len(v) for n, v in lines) <= 4096
    assert [n for n, _ in lines] == [f"uberctx-key{i:03}" for i in range(32)] + [
        f"ot-baggage-key{i:03}" for i in range(32)
    ]
    assert got.all("baggage") == [",".join(sent)]
    assert delta == {
        "tracebridge.extracted.baggage": 1,
        "tracebridge.baggage_headers_limited": 1,
    }


def test_a_configured_bound_holds(proxies):
    # max_header_bytes 200: entries "k0".."k9" of 20-byte values take 2 + 20 + 8 (uberctx-)
    # and 2 + 20 + 11 (ot-baggage-) = 63 bytes each: three fit (189), four do not (252).
    proxy = proxies({**ON, "baggage": {"max_headers": 10, "max_header_bytes": 200}})
    sent = [f"k{i}=" + "v" * 20 for i in range(10)]
    with proxy.counting(BAGGAGE_COUNTERS) as delta:
        got = proxy.send([("baggage", ",".join(sent))])
    lines = prefixed(got)
    assert sorted(n for n, _ in lines) == sorted(
        [f"uberctx-k{i}" for i in range(3)] + [f"ot-baggage-k{i}" for i in range(3)]
    )
    assert sum(len(n) + len(v) for n, v in lines) == 189
    assert delta["tracebridge.baggage_headers_limited"] == 1
