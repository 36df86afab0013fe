"""Time ``describe`` (issue #22) with a real-sized CLIP of random weights; not a test. No download.

    python benchmarks/describe_bench.py [--clip-model ViT-B-32] [--repeats 3] [--device cpu]

1. Embedding the shipped vocabularies once (what the first describe with a model does; then cached on disk).
2. Describing one picture with the embeddings at hand (the picture's embedding, then the beam search's full
   prompts), the median of ``--repeats`` runs; and how many prompts each run scored.
Wall-clock seconds and this process's CPU seconds (all threads): on a machine others share, the CPU seconds say
what the work costs, the wall clock what it took then.
Speed does not depend on the weights' values, so random ones time the real thing. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import open_clip  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.method.describe import image_embedding, suggest, vocabulary_tables  # noqa: E402
from engine.method.vocabulary import load_vocabularies  # noqa: E402
from engine.models.clip import wrap_clip  # noqa: E402


class Counting:
    """The CLIP, counting the texts it embeds."""

    def __init__(self, clip):
        self.clip, self.texts = clip, 0
        self.size, self.device = clip.size, clip.device

    def encode_text(self, texts):
        self.texts += len(texts)
        return self.clip.encode_text(texts)

    def encode_image(self, x):
        return self.clip.encode_image(x)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    clip = wrap_clip(open_clip.create_model(args.clip_model, pretrained=None, force_quick_gelu=True),
                     open_clip.get_tokenizer(args.clip_model)).to(args.device)
    counting = Counting(clip)
    vocabs = load_vocabularies()
    picture = Image.new("RGB", (640, 480), (90, 120, 200))
    t, c = time.perf_counter(), time.process_time()
    tables = vocabulary_tables(counting, vocabs)
    embed_s, embed_cpu, embedded = time.perf_counter() - t, time.process_time() - c, counting.texts
    runs, cpu, scored = [], [], []
    for _ in range(args.repeats):
        counting.texts = 0
        t, c = time.perf_counter(), time.process_time()
        suggest(counting, image_embedding(counting, picture), vocabs, tables, 4)
        runs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        scored.append(counting.texts)
    print(json.dumps({
        "clip_model": f"{args.clip_model} (random weights)", "device": args.device,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
        "vocabulary_texts": embedded, "embed_vocabularies_s": round(embed_s, 1),
        "embed_vocabularies_cpu_s": round(embed_cpu, 1),
        "describe_s_median": round(statistics.median(runs), 2), "describe_s_runs": [round(r, 2) for r in runs],
        "describe_cpu_s_median": round(statistics.median(cpu), 2),
        "prompts_scored_per_describe": scored[0],
    }, indent=2))


if __name__ == "__main__":
    main()
