"""The one parser of prompt parameters and sweeps (``engine.plan``, ``engine.split_parameters``) that the
command line and the bot share: what a person types, what it asks for, and the one-line refusals."""

from __future__ import annotations

import pytest

from engine import Request, UserError, plan, split_parameters, with_style
from engine.config import LimitsConfig

LIMITS = LimitsConfig(max_repeat=8)


def prompts(text: str, limits: LimitsConfig = LIMITS) -> list[str]:
    return [j.params.prompt for j in plan(text, limits)]


def test_every_parameter_is_read_from_the_end_of_the_prompt():
    p = split_parameters("a lighthouse at dusk --ar 16:9 --no people, text --seed 7 --steps 30 --iw 0.5 "
                         "--grid 4 --model wikiart_16384 --clip ViT-B-16/openai --tile --style noir --repeat 2")
    assert p.prompt == "a lighthouse at dusk"
    assert (p.aspect, p.seed, p.steps, p.negative, p.image_weight) == ((16, 9), 7, 30, ("people", "text"), 0.5)
    assert (p.grid, p.model, p.clip, p.tile, p.style, p.repeat) == (4, "wikiart_16384", "ViT-B-16/openai", "xy",
                                                                    "noir", 2)
    assert p.text.startswith("--ar 16:9 --no people, text --seed 7")
    assert split_parameters("a panorama —tile-x").tile == "x"  # a phone's dash works too
    plain = split_parameters("state-of-the-art castle:1|fog -- mist:-0.5")  # dashes inside words are words
    assert plain.prompt == "state-of-the-art castle:1|fog -- mist:-0.5" and plain.text == ""


@pytest.mark.parametrize(("text", "expect"), [
    ("a cat --chaos 5", "unknown parameter '--chaos'"),
    ("a cat --seed 1 --seed 2", "--seed is given twice"),
    ("a cat --seed -1", "--seed '-1': give a whole number, from 0 to 4294967295"),
    ("a cat --ar 16x9", "--ar '16x9': give width:height"),
    ("a cat --ar 20:1", "at most 8:1"),
    ("a cat --no", "--no '': give what to keep out"),
    ("a cat --no people,,", "--no 'people,,'"),
    ("a cat --iw lots", "--iw 'lots'"),
    ("a cat --tile yes", "--tile takes no value"),
    ("a cat --tile --tile-x", "give --tile or --tile-x, not both"),
    ("a cat --steps 10 more words", "--steps '10 more words'"),
])
def test_bad_parameters_are_one_line_naming_the_known_ones(text, expect):
    with pytest.raises(UserError) as e:
        split_parameters(text)
    line = str(e.value)
    assert expect in line and "\n" not in line
    assert line.endswith("parameters: --ar W:H, --seed N, --steps N, --no WORDS, --iw W, --grid N, --model NAME, "
                         "--clip NAME, --tile, --tile-x, --style NAME, --repeat N")


def test_grid_and_tile_reach_the_request_only_where_it_has_those_fields():
    for text, name, value in (("a cat --grid 4", "grid", 4), ("a cat --tile-x", "tile", "x")):
        p = split_parameters(text)
        if name in Request.model_fields:
            assert p.fields()[name] == value
        else:
            with pytest.raises(UserError, match="not available"):
                p.fields()


def test_a_sweep_expands_in_the_natural_order_and_nests():
    assert prompts("a {red, blue, golden} car") == ["a red car", "a blue car", "a golden car"]
    assert prompts("{a, b} and {c, d}") == ["a and c", "a and d", "b and c", "b and d"]  # the first varies slowest
    assert prompts("a {red, {dark, light} blue} car") == ["a red car", "a dark blue car", "a light blue car"]
    assert prompts("a {, shiny} car") == ["a car", "a shiny car"]
    jobs = plan("a {cat --ar 1:1, dog --ar 16:9}", LIMITS)  # braces reach into the parameters too
    assert [(j.params.prompt, j.params.aspect) for j in jobs] == [("a cat", (1, 1)), ("a dog", (16, 9))]


def test_repeat_makes_consecutive_seeds_after_each_choice():
    jobs = plan("a {red, blue} car --repeat 2", LIMITS)
    assert [(j.params.prompt, j.seed(10)) for j in jobs] == [("a red car", 10), ("a red car", 11),
                                                             ("a blue car", 10), ("a blue car", 11)]
    assert {j.of for j in jobs} == {4}
    assert plan("a car --repeat 2", LIMITS)[1].seed(2**32 - 1) == 0  # past the largest seed: from 0 again


@pytest.mark.parametrize(("text", "expect"), [
    ("a {red, blue car", "the '{' at character 3 of the prompt is never closed"),
    ("a red} car", "the '}' at character 6 of the prompt closes no '{'"),
    ("a {} car", "has no choices"),
    ("{a,b}" * 40, "this sweep makes more than a million prompts; at most 8 jobs"),
    ("{a,b,c} {d,e,f}", "this sweep makes 9 prompts; at most 8 jobs"),
    ("a car --repeat 9", "--repeat must be from 1 to 8 (got 9)"),
    ("{a, b} car --repeat 5", "this prompt makes more than 8 jobs"),
    ("{" * 9 + "a" + "}" * 9, "sweeps nest at most 8 braces deep"),
])
def test_braces_that_do_not_make_a_sweep_and_sweeps_over_the_cap_are_refused(text, expect):
    with pytest.raises(UserError, match=None) as e:
        plan(text, LIMITS)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_a_huge_flat_prompt_of_single_choices_is_cheap():
    assert prompts("{a}" * 2000) == ["a" * 2000]


def test_a_style_joins_each_part_of_the_prompt():
    assert with_style("a car", "oil painting") == "a car, oil painting"
    assert with_style("a car:1|fog:-0.5", "oil painting") == "a car:1|fog:-0.5|oil painting"
    assert with_style("a forest ^ ashes", "ink") == "a forest, ink ^ ashes, ink"
