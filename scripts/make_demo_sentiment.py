"""Regenerate guidetune's demo sentiment set (src/guidetune/data/demo/sentiment_*.jsonl).

The phrases are the project's own. Subjects are split between train and eval so the evaluation
sentences talk about things the model never saw during training.
"""
import json
import random
from pathlib import Path

SUBJECTS = [
    "the new phone", "this laptop", "the hotel room", "the pasta", "our tour guide", "the train ride",
    "this novel", "the concert", "the coffee machine", "the rental car", "the museum visit", "the headphones",
    "the customer service", "the hiking boots", "this vacuum cleaner", "the pizza place", "the yoga class",
    "the camping tent", "the movie", "the bakery", "this keyboard", "the ferry", "the dentist", "the garden hose",
    "the online course", "the bike shop", "the sushi bar", "this blender", "the theater seats", "the airline",
    "the spa day", "this backpack", "the kitchen knife", "the podcast", "the board game", "the hair salon",
    "the winter jacket", "the food truck", "this smartwatch", "the school play",
]
POSITIVE = [
    "was a real pleasure", "worked perfectly from day one", "exceeded every expectation I had",
    "is worth every penny", "made the whole week better", "felt friendly and welcoming",
    "was fast, clean and easy", "is the best I have tried", "left us smiling for hours",
    "was beautifully made", "keeps surprising me in good ways", "deserves five stars",
    "was comfortable and quiet", "arrived early and in great shape", "is a joy to use",
]
NEGATIVE = [
    "was a complete waste of money", "broke after two days", "was rude and slow",
    "fell far short of what was promised", "smelled awful", "left me angry and tired",
    "was dirty and cramped", "is the worst I have tried", "stopped working within a week",
    "was cold, bland and overpriced", "made a simple task painful", "deserves zero stars",
    "was noisy and uncomfortable", "arrived late and damaged", "is a pain to use",
]
OPENERS = ["", "Honestly, ", "To be fair, ", "Overall, ", "Sadly, ", "Luckily, ", "I think "]


def sentence(rng, subject, predicate):
    opener = rng.choice(OPENERS)
    if opener in ("Sadly, ",) and predicate in POSITIVE:
        opener = ""
    if opener in ("Luckily, ",) and predicate in NEGATIVE:
        opener = ""
    s = f"{opener}{subject} {predicate}."
    return s[0].upper() + s[1:]


def build(subjects, n, rng):
    rows, seen = [], set()
    while len(rows) < n:
        label = rng.choice(["positive", "negative"])
        text = sentence(rng, rng.choice(subjects), rng.choice(POSITIVE if label == "positive" else NEGATIVE))
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return rows


if __name__ == "__main__":
    rng = random.Random(7)
    subjects = SUBJECTS[:]
    rng.shuffle(subjects)
    out = Path(__file__).resolve().parents[1] / "src/guidetune/data/demo"
    for split, subj, n in [("train", subjects[:30], 320), ("eval", subjects[30:], 120)]:
        with open(out / f"sentiment_{split}.jsonl", "w") as f:
            for row in build(subj, n, rng):
                f.write(json.dumps(row) + "\n")
