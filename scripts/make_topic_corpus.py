"""Regenerate guidetune's built-in topic corpus (src/guidetune/data/corpus/): sentences about colors,
countries, science/technology/engineering/maths (STEM) and general life, plus the concepts file.

All templates and word lists are the project's own.
"""
import random
from pathlib import Path

COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white", "gray",
          "violet", "turquoise", "crimson", "beige"]
COLOR_T = [
    "She painted the kitchen door {c} last summer.", "His favourite shirt is a faded shade of {c}.",
    "The sky turned {c} just before the storm.", "They chose a {c} carpet for the hallway.",
    "A {c} balloon drifted over the park.", "The artist mixed {c} and {c2} on the palette.",
    "Her car is bright {c} and easy to spot.", "The flowers in the garden were mostly {c}.",
    "He wrapped the present in {c} paper.", "The team wears {c} jerseys at home games.",
    "The old house had {c} shutters and a {c2} roof.", "Autumn leaves glowed {c} in the evening light.",
]
COUNTRIES = ["France", "Japan", "Brazil", "Kenya", "Canada", "India", "Norway", "Mexico", "Egypt", "Australia",
             "Germany", "Chile", "Vietnam", "Morocco", "Ireland", "Peru", "Italy", "Spain"]
COUNTRY_T = [
    "We spent two weeks travelling across {k} by train.", "My grandmother was born in a small village in {k}.",
    "The delegation from {k} arrived at the summit on Monday.", "Coffee from {k} is sold in many shops here.",
    "The national football team of {k} won the match.", "She is learning the history of {k} at school.",
    "Tourists visit {k} every year for its beaches.", "The embassy of {k} is near the river.",
    "He moved to {k} after finishing university.", "Trade between {k} and {k2} grew last year.",
    "The capital of {k} was busy during the festival.", "A famous chef from {k} opened a restaurant downtown.",
]
STEM_WORDS = {
    "science": ["physics", "chemistry", "biology", "experiment", "molecule", "atom", "cell", "energy", "laboratory",
                "hypothesis", "electron", "protein", "gravity"],
    "technology": ["computer", "software", "algorithm", "robot", "internet", "processor", "database", "network"],
    "engineering": ["bridge", "engine", "circuit", "turbine", "machine", "sensor"],
    "maths": ["equation", "theorem", "algebra", "geometry", "calculus", "integral", "probability", "matrix"],
}
STEM_T = [
    "The students ran an {w} in the lab this morning.", "Our teacher explained the {w} with a simple drawing.",
    "She wrote a paper about {w} for the journal.", "The {w} was the hardest part of the exam.",
    "Researchers measured the {w} with great care.", "He spent the weekend studying {w} and {w2}.",
    "A new {w} was presented at the conference.", "The textbook has a chapter on {w}.",
    "They tested the {w} three times before publishing.", "Her thesis connects {w} to {w2}.",
    "The museum has an exhibit about {w}.", "Understanding {w} requires patience and practice.",
]
GENERAL = [
    "I had breakfast with my neighbour today.", "The bus was late again this morning.",
    "We walked the dog along the beach.", "He forgot his umbrella at the office.",
    "Dinner will be ready in twenty minutes.", "The children played in the garden until dark.",
    "She called her brother to wish him a happy birthday.", "The shop closes early on Sundays.",
    "We watched a funny film last night.", "My sister is baking bread for the party.",
    "The meeting was moved to Thursday afternoon.", "He reads the newspaper every morning.",
    "They planted tomatoes near the fence.", "The cat slept on the sofa all day.",
    "I need to buy milk and eggs.", "Our friends are coming to visit next week.",
    "The concert tickets sold out quickly.", "She likes to run before work.",
    "The train station was crowded at noon.", "We cleaned the house on Saturday.",
    "He is writing a letter to his aunt.", "The baby laughed at the puppy.",
    "The library was quiet and warm.", "They went fishing at the lake.",
    "I lost my keys somewhere in the house.", "The neighbours are painting their fence.",
    "The weather was pleasant for a picnic.", "She is knitting a scarf for winter.",
    "The coffee shop opened a new branch.", "We laughed at his stories all evening.",
]
GENERAL_EXTRA_T = [
    "{n} said the {o} was on the table.", "{n} is looking forward to the {o}.", "{n} cleaned the {o} after lunch.",
    "{n} borrowed the {o} from a friend.", "{n} talked about the {o} for an hour.",
]
NAMES = ["Anna", "Tom", "Maria", "Sam", "Lena", "Omar", "Grace", "Ravi", "Julia", "Ben"]
OBJECTS = ["picnic", "holiday", "garden", "kitchen", "party", "wedding", "bicycle", "letter", "sofa", "dinner"]


def main():
    rng = random.Random(11)
    lines = []
    for t in COLOR_T:
        for _ in range(7):
            c, c2 = rng.sample(COLORS, 2)
            lines.append(t.format(c=c, c2=c2))
    for t in COUNTRY_T:
        for _ in range(7):
            k, k2 = rng.sample(COUNTRIES, 2)
            lines.append(t.format(k=k, k2=k2))
    stem = [w for ws in STEM_WORDS.values() for w in ws]
    for t in STEM_T:
        for _ in range(9):
            w, w2 = rng.sample(stem, 2)
            lines.append(t.format(w=w, w2=w2).replace(" a e", " an e").replace(" a a", " an a").replace(" a i", " an i"))
    lines += GENERAL
    for t in GENERAL_EXTRA_T:
        for _ in range(10):
            lines.append(t.format(n=rng.choice(NAMES), o=rng.choice(OBJECTS)))
    lines = list(dict.fromkeys(lines))
    rng.shuffle(lines)
    out = Path(__file__).resolve().parents[1] / "src/guidetune/data/corpus"
    out.mkdir(parents=True, exist_ok=True)
    (out / "topics.txt").write_text("\n".join(lines) + "\n")
    concepts = {"colors": COLORS, "countries": COUNTRIES, "STEM": stem}
    text = "# guidetune's concepts for the built-in corpus: {concept: [keywords]} (whole words, any case)\n"
    for name, words in concepts.items():
        text += f"{name}: [{', '.join(words)}]\n"
    (out / "concepts.yaml").write_text(text)
    print(len(lines), "sentences")


if __name__ == "__main__":
    main()
