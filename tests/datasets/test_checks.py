import pytest

from cmpt_lightning.choices import Choice
from cmpt_lightning.datasets.checks import CheckReport, ImageCheck, OnBadSample, SplitReport
from cmpt_lightning.datasets.food101 import TextSource
from cmpt_lightning.datasets.hateful_memes import MemeSplit
from cmpt_lightning.datasets.mmimdb import TextMode


@pytest.mark.parametrize("kind", [ImageCheck, OnBadSample, TextSource, TextMode, MemeSplit])
def test_modes_are_choices_accepting_members_and_strings(kind):
    assert issubclass(kind, Choice)
    member = next(iter(kind))
    assert kind.parse(member.value) is member and kind.parse(member, "x") is member
    options = ", ".join(m.value for m in kind)
    with pytest.raises(ValueError, match=f"^setting must be one of {options}; got 'nope'$"):
        kind.parse("nope", "setting")
    with pytest.raises(ValueError, match=f"^unknown {kind.label()} 'nope'; choose one of: "):
        kind.parse("nope")


def test_split_report_warns_on_a_note_or_a_count_off_the_official_one():
    assert SplitReport("train", "f", 10, official=10).warning == ""
    assert SplitReport("train", "f", 9, official=10).warning == (
        "9 samples, the official split has 10"
    )
    assert SplitReport("test", "f", 9, official=10, note="no labels").warning == "no labels"
    report = CheckReport()
    report.add("train", "f", [], [], official=None)
    assert report.splits == [SplitReport("train", "f", 0)]
