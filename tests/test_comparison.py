"""The source comparison (watch_and_verify.definitions, changed_definitions, describe_changes,
with_original, single_bug_versions, root_causes): what counts as a change, and the single-bug
versions that tell a root cause from an extra change."""

from __future__ import annotations

from watch_and_verify import (
    changed_definitions,
    decoded,
    definitions,
    describe_changes,
    root_causes,
    single_bug_versions,
    spans,
    with_original,
)

from tests.calc_versions import FIXED, ORIGINAL, source


def test_definitions_keep_every_definition_of_a_name_with_its_decorators():
    code = source(
        """
        import functools


        @functools.cache
        @staticmethod
        def f(x):
            return x


        class C:
            pass


        async def g():
            pass


        def f(x):
            return 2 * x
        """
    )
    assert spans(code) == {"f": [(4, 7), (18, 19)], "C": [(10, 11)], "g": [(14, 15)]}
    assert definitions(code) == {
        "f": [
            "@functools.cache\n@staticmethod\ndef f(x):\n    return x",
            "def f(x):\n    return 2 * x",
        ],
        "C": ["class C:\n    pass"],
        "g": ["async def g():\n    pass"],
    }


def test_what_counts_as_a_change():
    assert changed_definitions(ORIGINAL, ORIGINAL) == []
    assert changed_definitions(ORIGINAL, FIXED) == ["add", "divide", "power"]
    shadowed = FIXED + "\n\ndef mean(values):\n    return sum(values) / len(values)\n"
    assert changed_definitions(ORIGINAL, shadowed) == ["add", "divide", "power", "mean"]
    added = FIXED + "\n\ndef median(values):\n    return sorted(values)[len(values) // 2]\n"
    assert changed_definitions(ORIGINAL, added) == ["add", "divide", "power", "median"]
    removed = FIXED.replace("def multiply(a, b):\n    return a * b\n", "")
    assert changed_definitions(ORIGINAL, removed) == ["add", "divide", "power", "multiply"]
    decorated = FIXED.replace("def subtract", "@staticmethod\ndef subtract")
    assert changed_definitions(ORIGINAL, decorated) == ["add", "subtract", "divide", "power"]
    comment_only = ORIGINAL.replace("\n\ndef subtract", "\n# a note\n\ndef subtract")
    assert changed_definitions(ORIGINAL, comment_only) == []
    assert changed_definitions(ORIGINAL, "def add(a, b):\n    return a +\n") is None


def test_crlf_is_not_a_change():
    crlf = ORIGINAL.replace("\n", "\r\n").encode()
    assert decoded(crlf) == ORIGINAL
    assert decoded(b"a\rb\r\nc\n\xff") == "a\nb\nc\n\ufffd"
    assert changed_definitions(ORIGINAL, decoded(crlf)) == []


def test_describe_changes_shows_the_diff_and_each_definition():
    shown, changed = describe_changes(ORIGINAL, FIXED)
    assert changed == ["add", "divide", "power"]
    assert shown.startswith("--- calc.py (original)\n+++ calc.py (agent)\n@@ -2,7 +2,7 @@\n")
    assert "\n-    return a // b\n+    return a / b\n" in shown
    assert shown.endswith(
        "\n\nTop-level definitions, compared with the original:\n"
        "  add          changed\n"
        "  subtract     unchanged\n"
        "  multiply     unchanged\n"
        "  divide       changed\n"
        "  power        changed\n"
        "  mean         unchanged"
    )


def test_describe_changes_of_code_that_does_not_parse_claims_nothing():
    broken = ORIGINAL.replace("return a - b\n\n\ndef subtract", "return a +\n\n\ndef subtract", 1)
    shown, changed = describe_changes(ORIGINAL, broken)
    assert changed is None
    assert shown.endswith(
        "\n\ncalc.py does not parse: SyntaxError on line 5 (invalid syntax),"
        " so nothing is claimed about its functions."
    )
    assert "Top-level definitions" not in shown


def test_describe_changes_cuts_a_long_diff_and_lets_no_tag_form():
    long = ORIGINAL + "".join(f"\n\ndef f{n}():\n    return '<b>{n}</b>'\n" for n in range(40))
    shown, _ = describe_changes(ORIGINAL, long)
    diff = shown.split("\n\nTop-level definitions")[0]
    assert diff.endswith("more lines]") and len(diff.splitlines()) == 81
    assert "<b>" not in shown and "&lt;b>" in shown


def test_with_original_puts_back_one_definition_and_keeps_the_rest():
    only_add = with_original(FIXED, ORIGINAL, "add")
    assert changed_definitions(ORIGINAL, only_add) == ["divide", "power"]
    assert definitions(only_add)["add"] == definitions(ORIGINAL)["add"]
    shadowed = FIXED + "\n\ndef mean(values):\n    return sum(values) / len(values)\n"
    restored = with_original(shadowed, ORIGINAL, "mean")
    assert definitions(restored)["mean"] == definitions(ORIGINAL)["mean"]
    assert changed_definitions(ORIGINAL, restored) == ["add", "divide", "power"]
    assert with_original(FIXED, ORIGINAL, "add") == FIXED.replace("a + b", "a - b", 1)


def test_single_bug_versions_are_made_for_changed_definitions_both_files_have():
    added = FIXED + "\n\ndef median(values):\n    return sorted(values)[len(values) // 2]\n"
    changed = changed_definitions(ORIGINAL, added)
    versions = single_bug_versions(ORIGINAL, added, changed)
    assert list(versions) == ["add", "divide", "power"]  # median has no original to put back
    assert changed_definitions(ORIGINAL, versions["divide"]) == ["add", "power", "median"]
    assert single_bug_versions(ORIGINAL, "def add(:\n", ["add"]) == {}
    assert single_bug_versions(ORIGINAL, FIXED, []) == {}


def test_root_causes_are_the_changes_whose_revert_fails_a_passing_test():
    after = {"test_a": "PASS", "test_b": "PASS", "test_c": "FAIL"}
    on_versions = {
        "add": {"test_a": "FAIL", "test_b": "PASS", "test_c": "FAIL"},
        "subtract": {"test_a": "PASS", "test_b": "PASS", "test_c": "FAIL"},  # not needed
        "power": {"test_a": "PASS", "test_b": "timed out after 1 s", "test_c": "PASS"},
        "mean": {"test_a": "PASS", "test_b": "PASS", "test_c": "PASS"},  # fixes c: no matter
    }
    assert root_causes(after, on_versions) == ["add", "power"]
    assert root_causes(after, {}) == []
    assert root_causes({"test_a": "FAIL"}, {"add": {"test_a": "FAIL"}}) == []
    assert root_causes({"test_a": "PASS"}, {"add": {}}) == ["add"]  # no result: not a pass


def test_a_name_the_original_defines_twice_is_put_back_whole():
    original = "def f():\n    return 1\n\n\ndef f():\n    return 2\n"
    fixed = "def f():\n    return 3\n"
    assert with_original(fixed, original, "f") == original
