"""What nanocode prints of names and text it did not write: never a terminal control, never a mark that
reorders what the terminal shows. Generated cases as well as the known tricks."""

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from nanocode.batch.goals import ID
from nanocode.display import printable, shorten

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _unsafe(char: str) -> bool:
    """A character that drives or reorders a terminal: controls (but newline and tab), bidi formatting."""
    if char in "\n\t":
        return False
    return unicodedata.category(char) == "Cc" or unicodedata.bidirectional(char) in {
        "LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI", "LRM", "RLM", "ALM",
    }  # fmt: skip


@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(BIDI + "\x1b\x9b\r")))
def test_nothing_printed_can_drive_or_reorder_the_terminal(text: str) -> None:
    for shown in (printable(text), shorten(text, 40)):
        assert not [c for c in shown if _unsafe(c)]


def test_the_known_tricks() -> None:
    assert printable("evil\u202eexe.txt") == "evil?exe.txt"  # right-to-left override: "txt.exe" shown
    assert printable("a\x1b[31mb\rc") == "a?[31mb?c"
    assert printable("line\nnext\ttab") == "line\nnext\ttab"


def test_a_batch_id_is_checked_whole() -> None:
    assert ID.fullmatch("goal-1") and not ID.fullmatch("goal-1\n") and not ID.fullmatch("goal-1\nx")
