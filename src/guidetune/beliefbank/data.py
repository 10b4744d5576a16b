"""BeliefBank: read a release directory, phrase facts as yes/no questions, split them.

A release directory holds ``silver_facts.json`` ({entity: {"Relation,object": "yes"|"no"}}),
``constraints_v2.json`` (a networkx node-link directed graph whose links carry ``weight``
yes_yes|yes_no and ``direction`` forward|back), ``calibration_facts.json`` (same shape as the silver
facts) and ``non_countable.txt`` (mass nouns phrased without an article). The raw release and the
package's own mini belief bank (``guidetune:minibank``) have this layout.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import GuidetuneError

RELATIONS = ("IsA", "HasA", "HasPart", "HasProperty", "CapableOf", "MadeOf")
WEIGHTS = ("yes_yes", "yes_no")
DIRECTIONS = ("forward", "back")
FILES = ("silver_facts.json", "constraints_v2.json", "calibration_facts.json", "non_countable.txt")
MINIBANK = "guidetune:minibank"

# Templates are ours. {S} is the subject with its article, {O} the object (with its article where
# the relation takes one). Negated phrasings flip the answer; their negation words are marked.
_POSITIVE = {
    "IsA": "Is {S} {O}?",
    "HasA": "Does {S} have {O}?",
    "HasPart": "Does {S} have {O}?",
    "HasProperty": "Is {S} {O}?",
    "CapableOf": "Can {S} {O}?",
    "MadeOf": "Is {S} made of {O}?",
}
_NEGATED = {
    "IsA": "Is it true that {S} is not {O}?",
    "HasA": "Is it true that {S} does not have {O}?",
    "HasPart": "Is it true that {S} does not have {O}?",
    "HasProperty": "Is it true that {S} is not {O}?",
    "CapableOf": "Is it true that {S} cannot {O}?",
    "MadeOf": "Is it true that {S} is not made of {O}?",
}
NEGATION_WORDS = ("not", "cannot")
_OBJECT_ARTICLE = {"IsA", "HasA", "HasPart"}  # "a mammal", "a tail"; not "a alive", "a fly", "a wood"
_AN_EXCEPTIONS = ("uni", "use", "usu", "eu", "one", "once")
_AN_SILENT_H = ("hour", "honest", "honor", "heir")


def with_article(noun: str, non_countable: set[str]) -> str:
    """``a dog``, ``an eagle``, ``water`` (mass noun), ``leaves`` (plural)."""
    if noun in non_countable or _looks_plural(noun):
        return noun
    first = noun.split()[0]
    vowel = first[0] in "aeiou" and not first.startswith(_AN_EXCEPTIONS)
    return ("an " if vowel or first.startswith(_AN_SILENT_H) else "a ") + noun


def _looks_plural(noun: str) -> bool:
    last = noun.split()[-1]
    return len(last) > 3 and last.endswith("s") and not last.endswith(("ss", "us", "is", "ous"))


@dataclass(frozen=True)
class Question:
    """One yes/no question about ``subject`` and node ``target`` (``"Relation,object"``)."""

    text: str
    answer: bool  # gold answer to *this phrasing* (flipped when negated)
    subject: str
    target: str
    negated: bool = False
    subject_span: tuple[int, int] = (0, 0)  # character span of the subject noun (no article)
    object_span: tuple[int, int] = (0, 0)
    negation_spans: tuple[tuple[int, int], ...] = ()

    @property
    def source(self) -> str:
        return f"IsA,{self.subject}"

    @property
    def belief(self) -> bool:
        """What answering ``answer`` says about the positive fact."""
        return self.answer != self.negated


def phrase(subject: str, target: str, non_countable: set[str], negated: bool = False, answer: bool = True) -> Question:
    """The question "does ``subject`` have property ``target``", positive or negated."""
    relation, obj = target.split(",", 1)
    template = (_NEGATED if negated else _POSITIVE)[relation]
    s_text = with_article(subject, non_countable)
    o_text = with_article(obj, non_countable) if relation in _OBJECT_ARTICLE else obj
    s_at = template.index("{S}")
    text = template.replace("{S}", s_text, 1)
    o_at = text.index("{O}")
    text = text.replace("{O}", o_text, 1)
    s_start = s_at + len(s_text) - len(subject)
    o_start = o_at + len(o_text) - len(obj)
    if o_at < s_at:  # no template puts the object first, but keep spans right if one does
        s_start += len(o_text) - 3
    neg = tuple(_word_spans(text, NEGATION_WORDS)) if negated else ()
    return Question(text, answer != negated, subject, target, negated, (s_start, s_start + len(subject)),
                    (o_start, o_start + len(obj)), neg)


def _word_spans(text: str, words: tuple[str, ...]):
    pos = 0
    for token in text.replace("?", " ").split(" "):
        if token in words:
            yield (pos, pos + len(token))
        pos += len(token) + 1


@dataclass(frozen=True)
class Link:
    source: str
    target: str
    weight: str  # yes_yes | yes_no
    direction: str  # forward | back
    score: float = 0.0


@dataclass
class BeliefBank:
    facts: dict[str, dict[str, bool]]
    calibration: dict[str, dict[str, bool]]
    nodes: list[str]
    links: list[Link]
    non_countable: set[str] = field(default_factory=set)
    directory: str = ""

    @classmethod
    def load(cls, directory: str | Path) -> "BeliefBank":
        """Read and check a release directory (or ``guidetune:minibank``)."""
        path = _resolve(directory)
        missing = [f for f in FILES if not (path / f).is_file()]
        if missing:
            raise GuidetuneError(f"BeliefBank file '{missing[0]}' is missing from '{directory}' "
                                 f"(a release directory holds {', '.join(FILES)})")
        graph = _read_json(path / "constraints_v2.json")
        if not isinstance(graph, dict) or "nodes" not in graph or "links" not in graph:
            raise GuidetuneError(f"{path / 'constraints_v2.json'}: expected a node-link graph with 'nodes' and 'links'")
        nodes = [n["id"] for n in graph["nodes"]]
        for n in nodes:
            _check_node(n, path / "constraints_v2.json")
        links = []
        for i, ln in enumerate(graph["links"]):
            where = f"{path / 'constraints_v2.json'}: links[{i}]"
            for key, allowed in (("weight", WEIGHTS), ("direction", DIRECTIONS)):
                if ln.get(key) not in allowed:
                    raise GuidetuneError(f"{where}: unknown {key} {ln.get(key)!r}; allowed: {', '.join(allowed)}")
            links.append(Link(ln["source"], ln["target"], ln["weight"], ln["direction"], float(ln.get("score", 0))))
        return cls(
            facts=_read_facts(path / "silver_facts.json"),
            calibration=_read_facts(path / "calibration_facts.json"),
            nodes=nodes,
            links=links,
            non_countable={w.strip() for w in (path / "non_countable.txt").read_text().splitlines() if w.strip()},
            directory=str(path),
        )

    def question(self, subject: str, target: str, negated: bool = False, answer: bool = True) -> Question:
        return phrase(subject, target, self.non_countable, negated, answer)

    def fact_questions(self, facts: dict[str, dict[str, bool]] | None = None) -> list[Question]:
        """Every fact as a positive question, in file order."""
        facts = self.facts if facts is None else facts
        return [self.question(e, t, False, a) for e, items in facts.items() for t, a in items.items()]

    def edge_questions(self) -> list[Question]:
        """One question per forward constraint link from an IsA node, deduplicated on (source, target).

        "IsA,tree" -> "CapableOf,grow" asks "Can a tree grow?"; the gold answer is yes for a yes_yes link
        and no for a yes_no link. Back links restate forward ones as contrapositives and add no question.
        """
        seen, out = set(), []
        for ln in self.links:
            if ln.direction != "forward" or not ln.source.startswith("IsA,") or (ln.source, ln.target) in seen:
                continue
            seen.add((ln.source, ln.target))
            subject = ln.source.split(",", 1)[1]
            out.append(self.question(subject, ln.target, False, ln.weight == "yes_yes"))
        return out


def split_facts(facts: dict[str, dict[str, bool]], seed: int, fractions=(0.8, 0.1, 0.1)):
    """(train, val, test) fact dicts: each entity's facts shuffled (seeded) and cut 80/10/10 (floors).

    Per-entity cutting keeps every entity in training, as in SpARC; the result depends only on the seed
    and the facts, not on anything else in the run.
    """
    parts: tuple[dict, dict, dict] = ({}, {}, {})
    for entity in sorted(facts):
        items = sorted(facts[entity].items())
        random.Random(f"{seed}:{entity}").shuffle(items)
        a = int(fractions[0] * len(items))
        b = a + int(fractions[1] * len(items))
        for part, chunk in zip(parts, (items[:a], items[a:b], items[b:])):
            if chunk:
                part[entity] = dict(chunk)
    return parts


def negate_some(questions: list[Question], mode: str, fraction: float, seed: int, nc: set[str]) -> list[Question]:
    """Re-phrase some questions negated (answer flips).

    ``balance``: negate just enough questions of the majority answer to even out yes and no (SpARC's
    preprocessing); ``fraction``: negate that fraction at random; ``none``: leave all positive.
    """
    if mode == "none":
        return questions
    rng = random.Random(f"negate:{seed}")
    if mode == "fraction":
        chosen = set(rng.sample(range(len(questions)), int(fraction * len(questions))))
    else:
        yes = [i for i, q in enumerate(questions) if q.answer]
        no = [i for i, q in enumerate(questions) if not q.answer]
        major = yes if len(yes) > len(no) else no
        chosen = set(rng.sample(major, (abs(len(yes) - len(no))) // 2))
    return [phrase(q.subject, q.target, nc, True, q.belief) if i in chosen else q for i, q in enumerate(questions)]


def _resolve(directory: str | Path) -> Path:
    if str(directory).startswith("guidetune:"):
        return Path(str(resources.files("guidetune") / "data" / str(directory).split(":", 1)[1]))
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise GuidetuneError(f"BeliefBank directory not found: '{directory}'")
    return path


def _read_json(path: Path):
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise GuidetuneError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} (char {e.pos}): {e.msg}") from None


def _check_node(node: str, where: Path) -> None:
    relation = node.split(",", 1)[0]
    if "," not in node or relation not in RELATIONS:
        raise GuidetuneError(f"{where}: unknown relation {relation!r} in {node!r}; allowed: {', '.join(RELATIONS)}")


def _read_facts(path: Path) -> dict[str, dict[str, bool]]:
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise GuidetuneError(f"{path}: expected {{entity: {{\"Relation,object\": \"yes\"|\"no\"}}}}")
    out = {}
    for entity, items in raw.items():
        facts = {}
        for node, label in items.items():
            _check_node(node, path)
            if label not in ("yes", "no"):
                raise GuidetuneError(f"{path}: fact {entity!r} / {node!r} has label {label!r}; allowed: yes, no")
            facts[node] = label == "yes"
        out[entity] = facts
    return out
