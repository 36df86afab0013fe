"""Banned words: whole words in any case and any Unicode dress, ``re:`` rules, and the config that names them."""

from __future__ import annotations

import time

import pytest

from bot.config import ModerationConfig, load_bot_config
from bot.wordfilter import Rule, WordFilter, check_entry, normalise
from engine import ConfigError


def _matches(entries: list[str], text: str) -> str | None:
    rule = WordFilter(Rule(e) for e in entries).match(text)
    return rule.entry if rule else None


@pytest.mark.parametrize("text", [
    "a gore scene", "GORE", "Gore!", "gore:1|fog:-0.5", "a forest ^ gore ^ ashes", "bad_gore_thing",
    "ｇｏｒｅ and blood",  # full-width letters (NFKC)
    "go\u200bre", "g\u00adore", "gor\u2060e", "\ufeffgore", "go\u200c\u200dre",  # invisible characters inside
])
def test_a_banned_word_is_found_whole_in_any_case_and_dress(text):
    assert _matches(["gore"], text) == "gore"


@pytest.mark.parametrize("text", ["gorey", "a gore2 scene", "mangore", "go re", "g-o-r-e"])
def test_only_whole_words_match(text):
    assert _matches(["gore"], text) is None


def test_entries_are_normalised_too_and_may_be_several_words():
    assert _matches(["ＢＬＯＯＤ"], "blood moon") == "ＢＬＯＯＤ"
    assert _matches(["Red  Room"], "the red\u3000room, at night") == "Red  Room"  # ideographic space
    assert _matches(["red room"], "a red roomba") is None
    assert normalise("Ａ\u200b Ｂ\u00ad\tc") == "a b c"


def test_regex_entries_search_the_normalised_text():
    assert _matches(["re:n[u\\*]de"], "a N*DE statue") == "re:n[u\\*]de"
    assert _matches(["re:\\bkill(ing|ed)?\\b"], "ｋｉｌｌｉｎｇ time") == "re:\\bkill(ing|ed)?\\b"
    assert _matches(["re:^x"], "a box") is None


def test_a_catastrophic_regex_is_cut_short_and_refuses(caplog):
    started = time.monotonic()
    assert _matches(["re:(a|aa)+$"], "a" * 60 + "b") == "re:(a|aa)+$"
    assert time.monotonic() - started < 2.0  # not the ages (a|aa)+ backtracks for without a timeout
    assert any("took longer" in r.message and "(a|aa)+$" in r.message for r in caplog.records)


@pytest.mark.parametrize("entry,expect", [("re:(", "not a valid regular expression"), ("re: ", "every prompt"),
                                          ("\u200b", "empty word")])
def test_bad_entries_are_named(entry, expect):
    with pytest.raises(ValueError, match=expect):
        check_entry(entry)


def test_config_refuses_a_bad_rule_naming_it(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[moderation]\nbanned = ["fine", "re:[unclosed"]\n')
    with pytest.raises(ConfigError) as e:
        load_bot_config(path)
    assert "config.toml: moderation.banned.1: " in str(e.value) and "'re:[unclosed'" in str(e.value)
    path.write_text('[moderation.guilds.42]\nbanned = ["re:("]\n')
    with pytest.raises(ConfigError, match=r"moderation.guilds.42.banned.0: .re:\(.: not a valid"):
        load_bot_config(path)


def test_per_server_lists_add_to_or_replace_the_global_one(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[moderation]\nbanned = ["gore"]\nlog_channel = 7\n'
                    '[moderation.guilds.1]\nbanned = ["clowns"]\nlog_channel = 0\n'
                    '[moderation.guilds.2]\nbanned = ["spiders"]\nreplace = true\nlog_channel = 9\n')
    m = load_bot_config(path).moderation
    assert isinstance(m, ModerationConfig)
    on = {g: WordFilter(m.rules_for(g)) for g in (None, 1, 2, 3)}
    assert [bool(on[g].match("gore")) for g in (None, 1, 2, 3)] == [True, True, False, True]
    assert [bool(on[g].match("clowns")) for g in (None, 1, 2, 3)] == [False, True, False, False]
    assert [bool(on[g].match("spiders")) for g in (None, 1, 2, 3)] == [False, False, True, False]
    assert [m.log_channel_for(g) for g in (None, 1, 2, 3)] == [7, None, 9, 7]
    assert load_bot_config(None).moderation.log_channel_for(1) is None  # off by default
