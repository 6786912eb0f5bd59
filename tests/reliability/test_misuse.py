"""Bad input: every misuse in `_misuse` is refused with exactly its error text."""

from __future__ import annotations

import re

import pytest

from ._misuse import CALLS, SESSIONS, Misuse, SessionMisuse


@pytest.mark.parametrize("misuse", CALLS, ids=[m.id for m in CALLS])
def test_misuse_in_code_is_refused_with_its_exact_message(misuse: Misuse) -> None:
    trigger, message = misuse.case()
    with pytest.raises(misuse.error, match=rf"^{re.escape(message)}$"):
        trigger()


@pytest.mark.parametrize("misuse", SESSIONS, ids=[m.id for m in SESSIONS])
def test_misuse_of_the_plugin_is_refused_with_its_exact_message(
    misuse: SessionMisuse, pytester: pytest.Pytester
) -> None:
    if misuse.ini:
        pytester.makeini(f"[pytest]\n{misuse.ini}\n")
    pytester.makepyfile(misuse.source)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(errors=1)
    result.stdout.re_match_lines([rf"^E\s+{re.escape(misuse.line)}$"])
