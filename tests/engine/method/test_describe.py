"""Describing a picture: the ranking, with a CLIP whose embeddings are arranged so that the right entries must
win, and the vocabularies' embedding cache (reused, recomputed when the list or the model changes, a damaged
file recomputed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import UserError
from engine.method.describe import describe
from engine.method.vocabulary import FILES, SLOTS, load_vocabularies, read_table, table_path

WORDS = {  # each slot's file; the entry meant to win is last, so that no file order can make it win
    "subject": ["a cat", "a bowl of fruit", "a red barn", "a lighthouse on a cliff"],
    "medium": ["a pencil sketch", "a watercolor painting", "a woodcut", "an oil painting"],
    "movement": ["cubism", "pop art", "romanticism"],
    "artist": ["Paul Klee", "Claude Monet", "J. M. W. Turner"],
    "flavour": ["neon lights", "pastel colors", "misty", "dramatic lighting"],
}
# How close each part is to the picture. A flavour is worth adding only if it brings the whole prompt closer:
# "dramatic lighting" does, "misty" does not (the prompt's embedding is the normalised sum of its parts').
PICTURE = {"a lighthouse on a cliff": 1.0, "a cat": 0.5, "a red barn": 0.2, "an oil painting": 0.8,
           "a watercolor painting": 0.4, "a pencil sketch": 0.3, "romanticism": 0.6, "cubism": 0.1,
           "by J. M. W. Turner": 0.7, "by Claude Monet": 0.3, "dramatic lighting": 0.5, "misty": 0.2}
BEST = "a lighthouse on a cliff, an oil painting, romanticism, by J. M. W. Turner, dramatic lighting"


class ArrangedClip:
    """A CLIP of the ``engine.models.clip.Clip`` shape whose embeddings are chosen: each part of a prompt
    (between ", ") is an axis of its own, a text is the unit sum of its parts' axes (plus ``together``'s
    weight of the picture's own direction when it holds both parts of a pair), and every picture is the unit
    vector of ``picture``'s weights."""

    size = 32
    device = torch.device("cpu")

    def __init__(self, picture: dict[str, float] = PICTURE,
                 together: dict[tuple[str, str], float] | None = None) -> None:
        parts = [t for slot, words in WORDS.items() for w in words for t in [f"by {w}" if slot == "artist" else w]]
        parts += ["a stormy sky"]
        self.axis = {p: i for i, p in enumerate(parts)}
        self.picture = F.normalize(torch.tensor([picture.get(p, 0.0) for p in parts]), dim=0)
        self.together = together or {}
        self.texts: list[str] = []  # every text encoded, in order
        self.images: list[torch.Tensor] = []

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.texts += texts
        rows = []
        for t in texts:
            parts = t.split(", ")
            v = torch.zeros(len(self.axis))
            for part in parts:
                v[self.axis[part]] += 1
            for (a, b), weight in self.together.items():
                if a in parts and b in parts:
                    v += weight * self.picture
            rows.append(F.normalize(v, dim=0))
        return torch.stack(rows)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        self.images.append(x)
        return self.picture[None]

    def vocabulary_texts(self) -> set[str]:
        """The texts it was asked for that are vocabulary entries alone (a table being computed)."""
        return {t for t in self.texts if ", " not in t}


def write_words(folder: Path, words: dict[str, list[str]] = WORDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for slot, entries in words.items():
        (folder / FILES[slot]).write_text("# written for this test\n" + "\n".join(entries) + "\n")
    return folder


PICTURE_FILE = Image.new("RGB", (48, 32), (90, 120, 200))


def test_the_entries_closest_to_the_picture_win_and_the_suggestions_come_best_first(tmp_path):
    clip = ArrangedClip()
    found = describe(clip, PICTURE_FILE, 3, vocabs=load_vocabularies(write_words(tmp_path / "words")))
    best = found[0]
    assert best.prompt == BEST
    assert (best.subject, best.medium, best.movement, best.artist, best.flavours) == (
        "a lighthouse on a cliff", "an oil painting", "romanticism", "by J. M. W. Turner", ("dramatic lighting",))
    scores = [s.score for s in found]
    assert len(found) == 3 and scores == sorted(scores, reverse=True) and len({s.prompt for s in found}) == 3
    assert best.score == pytest.approx(float(clip.picture @ clip.encode_text([BEST])[0]))
    assert clip.images[0].shape == (1, 3, 32, 32) and 0 <= float(clip.images[0].min()) <= 1


def test_whole_prompts_are_judged_not_words_alone(tmp_path):
    """A pairing CLIP finds closer than its words alone (the second subject with the second medium) wins."""
    clip = ArrangedClip(together={("a cat", "a watercolor painting"): 3.0})
    found = describe(clip, PICTURE_FILE, 2, vocabs=load_vocabularies(write_words(tmp_path / "words")))
    assert found[0].prompt.startswith("a cat, a watercolor painting, ") and found[0].subject == "a cat"
    assert found[0].score > found[1].score


def test_the_vocabulary_embeddings_are_cached_per_model_and_list(tmp_path):
    words, cache = write_words(tmp_path / "words"), tmp_path / "cache"
    first = ArrangedClip()
    found = describe(first, PICTURE_FILE, 2, vocabs=load_vocabularies(words), folder=cache, model_id="tiny A")
    assert len(first.vocabulary_texts()) == sum(len(w) for w in WORDS.values())

    again = ArrangedClip()  # a second run: every table from the cache, no vocabulary text embedded
    assert describe(again, PICTURE_FILE, 2, vocabs=load_vocabularies(words), folder=cache,
                    model_id="tiny A") == found
    assert again.vocabulary_texts() == set()

    other = ArrangedClip()  # another model: its own tables
    describe(other, PICTURE_FILE, 2, vocabs=load_vocabularies(words), folder=cache, model_id="tiny B")
    assert len(other.vocabulary_texts()) == sum(len(w) for w in WORDS.values())

    changed = ArrangedClip({**PICTURE, "a stormy sky": 0.9})  # a changed list: that table alone is computed again
    old = table_path(cache, "tiny A", load_vocabularies(words)["flavour"])
    write_words(words, {"flavour": [*WORDS["flavour"], "a stormy sky"]})
    found = describe(changed, PICTURE_FILE, 2, vocabs=load_vocabularies(words), folder=cache, model_id="tiny A")
    assert changed.vocabulary_texts() == {*WORDS["flavour"], "a stormy sky"}
    assert "a stormy sky" in found[0].flavours
    assert not old.exists() and len(list(old.parent.glob("flavour-*.safetensors"))) == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another list"])
def test_a_damaged_cache_file_is_computed_again_not_trusted(tmp_path, damage):
    words, cache = write_words(tmp_path / "words"), tmp_path / "cache"
    vocabs = load_vocabularies(words)
    found = describe(ArrangedClip(), PICTURE_FILE, 2, vocabs=vocabs, folder=cache, model_id="tiny")
    path = table_path(cache, "tiny", vocabs["subject"])
    if damage == "garbage":
        path.write_bytes(b"\x80\x04 not a table at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-9])
    else:  # a whole file, but the table of the media list under the subjects' name
        path.write_bytes(table_path(cache, "tiny", vocabs["medium"]).read_bytes())
    clip = ArrangedClip()
    assert describe(clip, PICTURE_FILE, 2, vocabs=vocabs, folder=cache, model_id="tiny") == found
    assert clip.vocabulary_texts() == set(WORDS["subject"])  # only the damaged table was computed again
    assert read_table(path, "tiny", vocabs["subject"]) is not None  # and written whole


def test_a_cache_that_cannot_be_written_only_costs_time(tmp_path):
    words = write_words(tmp_path / "words")
    (tmp_path / "a file").write_text("not a folder")
    found = describe(ArrangedClip(), PICTURE_FILE, 1, vocabs=load_vocabularies(words), folder=tmp_path / "a file",
                     model_id="tiny")
    assert found[0].prompt == BEST


def test_the_shipped_vocabularies_and_their_limits(tmp_path):
    shipped = load_vocabularies()
    sizes = {slot: len(shipped[slot].entries) for slot in SLOTS}
    assert sizes["subject"] >= 300 and 50 <= sizes["medium"] <= 100 and 60 <= sizes["movement"] <= 100
    assert 120 <= sizes["artist"] <= 180 and 120 <= sizes["flavour"] <= 180
    assert all(not e.startswith("#") and "`" not in e for v in shipped.values() for e in v.entries)
    assert shipped["artist"].texts[0] == f"by {shipped['artist'].entries[0]}"
    own = write_words(tmp_path / "own", {"artist": ["Hilma af Klint"]})  # own lists replace only their slot
    mixed = load_vocabularies(own)
    assert mixed["artist"].entries == ("Hilma af Klint",) and mixed["subject"] == shipped["subject"]
    with pytest.raises(UserError, match="has none of"):
        load_vocabularies(tmp_path)
    with pytest.raises(UserError, match="ask for 1 to 10"):
        describe(ArrangedClip(), PICTURE_FILE, 0, vocabs=load_vocabularies(write_words(tmp_path / "words")))
