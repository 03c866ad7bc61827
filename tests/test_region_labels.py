"""Seed 002's region labels: hand-written rows of both tables, the fallback, bad input, counts, the targets."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from merjax.data import labels, region_labels, targets
from merjax.data.pipeline import ClipSet
from merjax.errors import UserError

NEG, POS, SUR, NOT_ME = 0, 1, 2, 3   # MEGC 2019 classes, then "not me"
I, II, III, IV, V, VI, VII = range(7)


def _clip_set(rows, class_names=labels.MEGC_3) -> ClipSet:
    """Clips from rows (dataset, clip id, class index, objective class, AU string); no frames needed."""
    count = len(rows)
    return ClipSet(name="hand/rows", class_names=tuple(class_names), streams={},
                   landmarks=[np.zeros((2, 68, 2), np.float32)] * count,
                   labels=np.asarray([row[2] for row in rows], np.int32),
                   subjects=np.asarray([f"s{i}" for i in range(count)]),
                   clip_ids=np.asarray([row[1] for row in rows]), fps=np.full(count, 200.0, np.float32),
                   apexes=np.zeros(count, np.int32), datasets=np.asarray([row[0] for row in rows]),
                   action_units=np.asarray([row[4] for row in rows], dtype=str),
                   objective_classes=np.asarray([row[3] for row in rows], np.int32))


def test_columns_are_the_seed002_regions_in_the_seeds_order() -> None:
    assert region_labels.REGIONS == ("right_brow_eye", "left_brow_eye", "nose", "right_cheek", "left_cheek", "mouth")


def test_group_table_verbatim_and_read_per_class() -> None:
    # seeds-public-code.md, arrange_label: regions 0 and 1 keep {1..6}; 2 keeps {3,5,6}; 3 and 4 keep {0,5,6};
    # 5 keeps {0,1,4,5,6}.
    kept = [region_labels.GROUP_KEPT_CLASSES[region] for region in region_labels.REGIONS]
    assert kept == [{1, 2, 3, 4, 5, 6}, {1, 2, 3, 4, 5, 6}, {3, 5, 6}, {0, 5, 6}, {0, 5, 6}, {0, 1, 4, 5, 6}]
    brows, cheeks = {"right_brow_eye", "left_brow_eye"}, {"right_cheek", "left_cheek"}
    assert region_labels.OBJECTIVE_CLASS_REGIONS == (
        frozenset(cheeks | {"mouth"}),                  # I: happiness
        frozenset(brows | {"mouth"}),                   # II: surprise
        frozenset(brows),                               # III: anger
        frozenset(brows | {"nose"}),                    # IV: disgust
        frozenset(brows | {"mouth"}),                   # V: sadness
        frozenset(region_labels.REGIONS),               # VI: fear, every region
        frozenset(region_labels.REGIONS))               # VII: others, every region


def test_emotion_table_rows() -> None:
    clips = _clip_set([
        ("casme2", "happy_I", POS, I, "12"),
        ("samm", "disgust_IV", NEG, IV, "9+10"),
        ("samm", "anger_III", NEG, III, "4"),
        ("samm", "other_VII", NEG, VII, "14"),
        ("casme2", "surprise_II", SUR, II, "1+2"),
        ("smic", "s1_po_01", POS, -1, ""),
        ("smic", "s1_sur_01", SUR, -1, ""),
        ("smic", "s1_ne_01", NEG, -1, ""),
    ])
    result = region_labels.region_labels(clips, "emotion")
    assert result.class_names == ("negative", "positive", "surprise", "not_me") and result.not_me == NOT_ME
    np.testing.assert_array_equal(result.values, [
        # rbrow, lbrow, nose, rcheek, lcheek, mouth
        [NOT_ME, NOT_ME, NOT_ME, POS, POS, POS],        # I: cheeks + mouth (the seed's "happy ... nose: not me")
        [NEG, NEG, NEG, NOT_ME, NOT_ME, NOT_ME],        # IV: brows/eyes + nose
        [NEG, NEG, NOT_ME, NOT_ME, NOT_ME, NOT_ME],     # III: brows/eyes
        [NEG] * 6,                                       # VII: every region
        [SUR, SUR, NOT_ME, NOT_ME, NOT_ME, SUR],        # II: brows/eyes + mouth
        [NOT_ME, NOT_ME, NOT_ME, POS, POS, POS],        # SMIC positive -> I
        [SUR, SUR, NOT_ME, NOT_ME, NOT_ME, SUR],        # SMIC surprise -> II
        [NEG] * 6,                                       # SMIC negative -> III..VI, VI keeps every region
    ])
    assert result.values.dtype == np.int32
    assert result.sources.tolist() == ["objective_class"] * 5 + ["emotion"] * 3


def test_emotion_table_keeps_the_clip_set_s_own_classes() -> None:
    """Native CASME II classes: the table decides where, the value is the clip's class in its own class set."""
    disgust, others = labels.CASME2_5.index("disgust"), labels.CASME2_5.index("others")
    clips = _clip_set([("casme2", "a", disgust, IV, "9"), ("casme2", "b", others, VII, "14")], labels.CASME2_5)
    result = region_labels.region_labels(clips, "emotion")
    not_me = len(labels.CASME2_5)
    np.testing.assert_array_equal(result.values, [[disgust, disgust, disgust, not_me, not_me, not_me], [others] * 6])
    assert result.class_names[-1] == "not_me" and result.num_classes == 6


@pytest.mark.parametrize("action_units, label, expected", [
    ("12", POS, [NOT_ME, NOT_ME, NOT_ME, POS, POS, POS]),              # lip corner puller: cheeks + mouth
    ("AU12", POS, [NOT_ME, NOT_ME, NOT_ME, POS, POS, POS]),
    ("R12", POS, [NOT_ME, NOT_ME, NOT_ME, POS, NOT_ME, POS]),          # subject's right side only
    ("6+12", POS, [POS, POS, NOT_ME, POS, POS, POS]),                  # AU6 also around the eyes
    ("4+L10", NEG, [NEG, NEG, NEG, NOT_ME, NOT_ME, NEG]),              # AU10: nose wings + upper lip
    ("(R6 or R12)+R15", NEG, [NEG, NOT_ME, NOT_ME, NEG, NOT_ME, NEG]),  # every alternative counts
    ("L12 or L14", POS, [NOT_ME, NOT_ME, NOT_ME, NOT_ME, POS, POS]),
    ("10A/B", NEG, [NOT_ME, NOT_ME, NEG, NOT_ME, NOT_ME, NEG]),         # 'B': a second intensity of AU10
    ("A2", SUR, [SUR, SUR, NOT_ME, NOT_ME, NOT_ME, NOT_ME]),            # asymmetric: both sides
    ("R1+R2+26", SUR, [SUR, NOT_ME, NOT_ME, NOT_ME, NOT_ME, SUR]),
    ("4 + 7 + 43", NEG, [NEG, NEG, NOT_ME, NOT_ME, NOT_ME, NOT_ME]),
    ("9+17?", NEG, [NOT_ME, NOT_ME, NEG, NOT_ME, NOT_ME, NEG]),
    ("51", NEG, [NOT_ME] * 6),                                          # head turn: no region takes part
])
def test_action_unit_table_rows(action_units, label, expected) -> None:
    result = region_labels.region_labels(_clip_set([("samm", "c", label, VII, action_units)]), "action_units")
    np.testing.assert_array_equal(result.values, [expected])
    assert result.sources.tolist() == ["action_units"]


def test_parse_action_units_numbers_and_sides() -> None:
    parse = region_labels.parse_action_units
    assert parse("(R6 or R12)+R15", "x") == ((6, "R"), (12, "R"), (15, "R"))
    assert parse("4+7+L10", "x") == ((4, None), (7, None), (10, "L"))
    assert parse("A1+a2", "x") == ((1, None), (2, None))
    assert parse("", "x") == () and parse("  ", "x") == ()
    # The parsed numbers give the objective class the sheets store (I for 6+12).
    assert labels.objective_class_of(unit.number for unit in parse("L6+R12", "x")) == I


def test_clips_without_action_units_fall_back_to_the_emotion_table_counted(caplog) -> None:
    clips = _clip_set([("casme2", "EP01", POS, I, "12"), ("smic", "s1_po_01", POS, -1, ""),
                       ("smic", "s1_ne_01", NEG, -1, ""), ("samm", "uncoded", NEG, III, "")])
    with caplog.at_level(logging.WARNING):
        result = region_labels.region_labels(clips, "action_units")
    assert result.sources.tolist() == ["action_units", "emotion", "emotion", "objective_class"]
    np.testing.assert_array_equal(result.values[1:], [[NOT_ME, NOT_ME, NOT_ME, POS, POS, POS], [NEG] * 6,
                                                      [NEG, NEG, NOT_ME, NOT_ME, NOT_ME, NOT_ME]])
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == ["region labels from action units: 3 clip(s) code no AU and use the emotion table "
                        "(samm: 1, smic: 2)"]
    assert region_labels.source_counts(result) == {
        "casme2": {"action_units": 1, "objective_class": 0, "emotion": 0},
        "samm": {"action_units": 0, "objective_class": 1, "emotion": 0},
        "smic": {"action_units": 0, "objective_class": 0, "emotion": 2}}


def test_every_clip_coded_logs_no_fallback(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        region_labels.region_labels(_clip_set([("casme2", "EP01", POS, I, "12")]), "action_units")
    assert not caplog.records


@pytest.mark.parametrize("action_units, named", [
    ("blink", "'blink'"),
    ("4++7", "''"),
    ("4+AU99", "AU99"),
    ("3", "AU3"),            # FACS has no AU3
    ("4,7", "'4,7'"),
])
def test_unreadable_action_units_name_the_clip_and_value(action_units, named) -> None:
    clips = _clip_set([("samm", "006_1_2", NEG, III, action_units)])
    with pytest.raises(UserError, match="clip samm/006_1_2") as error:
        region_labels.region_labels(clips, "action_units")
    assert named in str(error.value) and repr(action_units) in str(error.value)
    assert "\n" not in str(error.value)
    region_labels.region_labels(clips, "emotion")   # the emotion table does not read the AU string


def test_emotion_table_refuses_a_clip_it_cannot_place() -> None:
    unknown_word = _clip_set([("clip_folder", "v7", 1, -1, "")], ("calm", "tense"))
    with pytest.raises(UserError, match=r"clip clip_folder/v7 has no objective class and its class 'tense'"):
        region_labels.region_labels(unknown_word, "emotion")
    with pytest.raises(UserError, match=r"clip casme2/EP02: objective class 9 is not one of 0..6"):
        region_labels.region_labels(_clip_set([("casme2", "EP02", NEG, 9, "4")]), "emotion")
    with pytest.raises(UserError, match=r"unknown region label table 'au'; choose from \['emotion', 'action_units'\]"):
        region_labels.region_labels(unknown_word, "au")


def test_label_counts_per_region_and_markdown() -> None:
    clips = _clip_set([("casme2", "a", POS, I, "12"), ("casme2", "b", SUR, II, "1+2+25"),
                       ("smic", "c", NEG, -1, ""), ("samm", "d", NEG, VII, "51")])
    emotion = region_labels.region_labels(clips, "emotion")
    assert region_labels.label_counts(emotion) == {
        "right_brow_eye": {"negative": 2, "positive": 0, "surprise": 1, "not_me": 1},
        "left_brow_eye": {"negative": 2, "positive": 0, "surprise": 1, "not_me": 1},
        "nose": {"negative": 2, "positive": 0, "surprise": 0, "not_me": 2},
        "right_cheek": {"negative": 2, "positive": 1, "surprise": 0, "not_me": 1},
        "left_cheek": {"negative": 2, "positive": 1, "surprise": 0, "not_me": 1},
        "mouth": {"negative": 2, "positive": 1, "surprise": 1, "not_me": 0}}
    action_units = region_labels.region_labels(clips, "action_units")
    counts = region_labels.label_counts(action_units)
    assert counts["nose"] == {"negative": 1, "positive": 0, "surprise": 0, "not_me": 3}   # only SMIC's fallback
    assert counts["mouth"] == {"negative": 1, "positive": 1, "surprise": 1, "not_me": 1}  # 51 places nothing
    text = region_labels.counts_markdown(action_units)
    assert "| region | negative | positive | surprise | not_me |" in text
    assert "| nose | 1 | 0 | 0 | 3 |" in text
    assert "- smic: action_units 0, objective_class 0, emotion 1" in text
    assert "(every region not_me): 1 of 4" in text


def test_registered_targets() -> None:
    clips = _clip_set([("casme2", "a", POS, I, "R12"), ("smic", "b", SUR, -1, "")])
    values, classes = targets.clip_targets(("label", "region_labels_emotion", "region_labels_action_units"), clips)
    assert classes == {"label": 3, "region_labels_emotion": 4, "region_labels_action_units": 4}
    np.testing.assert_array_equal(values["region_labels_emotion"], [[NOT_ME, NOT_ME, NOT_ME, POS, POS, POS],
                                                                    [SUR, SUR, NOT_ME, NOT_ME, NOT_ME, SUR]])
    np.testing.assert_array_equal(values["region_labels_action_units"], [[NOT_ME, NOT_ME, NOT_ME, POS, NOT_ME, POS],
                                                                         [SUR, SUR, NOT_ME, NOT_ME, NOT_ME, SUR]])
