"""Regenerate guidetune's built-in mini belief bank (src/guidetune/data/minibank/), in BeliefBank's format.

Everything here is the project's own: a small taxonomy of animals, plants and artifacts, the
properties each category implies (yes_yes) or excludes (yes_no), and entities placed in it. Silver
facts are derived from the constraints, so they are consistent by construction: for every entity, the
nodes its category chain implies are "yes", the nodes a yes_no constraint excludes are "no", and
categories outside its chain are "no". Every forward yes_yes link also gets its contrapositive
``back`` link, as in the BeliefBank release.
"""
import json
import random
from pathlib import Path

PARENT = {  # category -> parent category
    "animal": "living thing", "plant": "living thing",
    "mammal": "animal", "bird": "animal", "fish": "animal", "reptile": "animal", "insect": "animal",
    "amphibian": "animal", "tree": "plant", "flower": "plant",
    "vehicle": "artifact", "tool": "artifact", "furniture": "artifact", "container": "artifact",
}
IMPLIES = {  # category -> nodes it implies
    "living thing": ["CapableOf,grow", "HasProperty,alive", "MadeOf,cells", "CapableOf,die"],
    "animal": ["CapableOf,move", "CapableOf,breathe", "CapableOf,eat", "HasPart,brain", "HasPart,heart"],
    "mammal": ["HasA,fur", "HasProperty,warm blooded", "HasA,backbone", "CapableOf,feed milk to young"],
    "bird": ["HasA,feathers", "HasA,wings", "HasA,beak", "CapableOf,lay eggs", "HasProperty,warm blooded",
             "HasA,backbone", "HasA,two legs"],
    "fish": ["HasA,gills", "HasA,fins", "CapableOf,swim", "HasA,scales", "HasProperty,cold blooded",
             "HasA,backbone"],
    "reptile": ["HasA,scales", "HasProperty,cold blooded", "CapableOf,lay eggs", "HasA,backbone"],
    "insect": ["HasA,six legs", "HasA,antennae", "HasA,exoskeleton", "CapableOf,lay eggs"],
    "amphibian": ["HasProperty,cold blooded", "CapableOf,swim", "HasA,backbone", "HasA,moist skin"],
    "plant": ["HasA,roots", "CapableOf,make food from sunlight", "HasProperty,green"],
    "tree": ["HasPart,trunk", "HasPart,branches", "MadeOf,wood", "HasA,bark"],
    "flower": ["HasA,petals", "CapableOf,bloom", "HasPart,stem"],
    "artifact": ["HasProperty,man made"],
    "vehicle": ["CapableOf,carry people", "HasPart,seats", "CapableOf,move"],
    "tool": ["HasPart,handle", "CapableOf,help people work"],
    "furniture": ["CapableOf,hold weight", "HasProperty,found in homes"],
    "container": ["CapableOf,hold things", "HasPart,opening"],
}
EXCLUDES = {  # category -> nodes it rules out
    "living thing": ["IsA,artifact", "HasProperty,man made"],
    "animal": ["IsA,plant", "HasA,roots", "CapableOf,make food from sunlight"],
    "mammal": ["HasA,feathers", "HasA,gills", "IsA,bird", "IsA,fish", "IsA,reptile", "IsA,insect",
               "HasProperty,cold blooded"],
    "bird": ["HasA,fur", "HasA,gills", "IsA,mammal", "IsA,fish", "IsA,reptile", "IsA,insect",
             "HasProperty,cold blooded"],
    "fish": ["HasA,fur", "HasA,feathers", "IsA,mammal", "IsA,bird", "IsA,reptile", "HasA,two legs",
             "HasProperty,warm blooded"],
    "reptile": ["HasA,fur", "HasA,feathers", "IsA,mammal", "IsA,bird", "IsA,fish", "HasProperty,warm blooded"],
    "insect": ["HasA,backbone", "HasA,fur", "IsA,mammal", "IsA,bird", "IsA,fish", "HasA,feathers"],
    "amphibian": ["HasA,fur", "HasA,feathers", "IsA,mammal", "IsA,bird", "HasProperty,warm blooded"],
    "plant": ["IsA,animal", "CapableOf,breathe", "HasPart,brain", "CapableOf,walk"],
    "tree": ["IsA,flower"],
    "flower": ["IsA,tree", "MadeOf,wood"],
    "artifact": ["IsA,living thing", "HasProperty,alive", "CapableOf,grow", "MadeOf,cells", "CapableOf,breathe",
                 "CapableOf,die", "CapableOf,eat"],
    "vehicle": ["IsA,tool", "IsA,furniture"],
    "tool": ["IsA,vehicle", "IsA,furniture", "CapableOf,carry people"],
    "furniture": ["IsA,vehicle", "IsA,tool"],
    "container": ["IsA,vehicle"],
}
ENTITIES = {  # entity -> (category, its own implied nodes, its own excluded nodes)
    "dog": ("mammal", ["CapableOf,bark", "HasA,tail", "HasA,four legs", "CapableOf,run"], ["CapableOf,fly"]),
    "cat": ("mammal", ["CapableOf,meow", "HasA,whiskers", "HasA,tail", "HasA,four legs", "HasA,claws"], ["CapableOf,fly"]),
    "horse": ("mammal", ["HasA,hooves", "HasA,mane", "HasA,four legs", "CapableOf,run"], ["CapableOf,fly"]),
    "cow": ("mammal", ["HasA,hooves", "HasA,four legs", "CapableOf,feed milk to young"], ["CapableOf,fly"]),
    "whale": ("mammal", ["CapableOf,swim", "HasA,fins"], ["HasA,four legs", "CapableOf,walk"]),
    "dolphin": ("mammal", ["CapableOf,swim", "HasA,fins"], ["HasA,four legs", "CapableOf,walk"]),
    "bat": ("mammal", ["CapableOf,fly", "HasA,wings"], ["HasA,feathers"]),
    "mouse": ("mammal", ["HasA,tail", "HasA,whiskers", "HasA,four legs"], ["CapableOf,fly"]),
    "lion": ("mammal", ["HasA,mane", "HasA,claws", "CapableOf,hunt", "HasA,four legs"], ["CapableOf,fly"]),
    "elephant": ("mammal", ["HasA,trunk", "HasA,four legs", "HasA,tusks"], ["CapableOf,fly", "CapableOf,jump"]),
    "sparrow": ("bird", ["CapableOf,fly", "CapableOf,sing"], ["CapableOf,swim"]),
    "eagle": ("bird", ["CapableOf,fly", "HasA,claws", "CapableOf,hunt"], []),
    "penguin": ("bird", ["CapableOf,swim", "CapableOf,walk"], ["CapableOf,fly"]),
    "owl": ("bird", ["CapableOf,fly", "CapableOf,hunt"], []),
    "duck": ("bird", ["CapableOf,fly", "CapableOf,swim", "CapableOf,walk"], []),
    "chicken": ("bird", ["CapableOf,walk"], ["CapableOf,swim"]),
    "salmon": ("fish", ["CapableOf,jump"], ["CapableOf,walk", "CapableOf,fly"]),
    "shark": ("fish", ["HasA,teeth", "CapableOf,hunt"], ["CapableOf,walk", "CapableOf,fly"]),
    "goldfish": ("fish", [], ["CapableOf,walk", "CapableOf,fly"]),
    "tuna": ("fish", [], ["CapableOf,walk", "CapableOf,fly"]),
    "snake": ("reptile", ["CapableOf,crawl"], ["HasA,four legs", "CapableOf,fly", "HasA,two legs"]),
    "lizard": ("reptile", ["HasA,tail", "HasA,four legs", "CapableOf,crawl"], ["CapableOf,fly"]),
    "crocodile": ("reptile", ["HasA,teeth", "CapableOf,swim", "HasA,four legs"], ["CapableOf,fly"]),
    "turtle": ("reptile", ["HasA,shell", "CapableOf,swim"], ["CapableOf,fly", "CapableOf,run"]),
    "frog": ("amphibian", ["CapableOf,jump", "CapableOf,lay eggs"], ["CapableOf,fly", "HasA,tail"]),
    "bee": ("insect", ["CapableOf,fly", "CapableOf,sting", "HasA,wings", "CapableOf,make honey"], ["CapableOf,swim"]),
    "ant": ("insect", ["CapableOf,carry heavy loads", "CapableOf,crawl"], ["CapableOf,swim"]),
    "butterfly": ("insect", ["CapableOf,fly", "HasA,wings"], ["CapableOf,sting"]),
    "mosquito": ("insect", ["CapableOf,fly", "HasA,wings", "CapableOf,bite"], []),
    "oak": ("tree", ["HasA,acorns", "HasA,leaves"], ["HasA,needles"]),
    "pine": ("tree", ["HasA,needles", "HasA,cones"], ["HasA,acorns"]),
    "maple": ("tree", ["HasA,leaves"], ["HasA,needles"]),
    "rose": ("flower", ["HasA,thorns", "HasA,leaves"], []),
    "tulip": ("flower", ["HasA,leaves"], ["HasA,thorns"]),
    "daisy": ("flower", ["HasA,leaves"], ["HasA,thorns"]),
    "car": ("vehicle", ["HasA,wheels", "HasA,engine", "MadeOf,metal"], ["CapableOf,fly", "MadeOf,wood"]),
    "bicycle": ("vehicle", ["HasA,wheels", "HasA,pedals", "MadeOf,metal"], ["HasA,engine", "CapableOf,fly"]),
    "airplane": ("vehicle", ["CapableOf,fly", "HasA,wings", "HasA,engine", "MadeOf,metal"], []),
    "boat": ("vehicle", ["CapableOf,float"], ["HasA,wheels", "CapableOf,fly"]),
    "hammer": ("tool", ["MadeOf,metal"], ["HasA,blade", "CapableOf,cut things"]),
    "knife": ("tool", ["HasA,blade", "CapableOf,cut things", "MadeOf,metal"], []),
    "saw": ("tool", ["HasA,blade", "CapableOf,cut things"], []),
    "chair": ("furniture", ["HasA,four legs", "HasPart,seat"], ["CapableOf,carry people"]),
    "table": ("furniture", ["HasA,four legs"], []),
    "bookcase": ("furniture", ["HasPart,shelves", "MadeOf,wood", "CapableOf,hold things"], []),
    "bottle": ("container", ["HasPart,neck"], ["MadeOf,wood"]),
    "basket": ("container", ["HasA,handle"], ["MadeOf,metal"]),
}
CALIBRATION = {"wolf": "mammal", "parrot": "bird", "trout": "fish", "iguana": "reptile", "wasp": "insect",
               "birch": "tree", "truck": "vehicle"}


def chain(category):
    """The category and its ancestors."""
    out = [category]
    while out[-1] in PARENT:
        out.append(PARENT[out[-1]])
    return out


def main():
    links, nodes = [], set()

    def link(s, t, weight):
        links.append({"weight": weight, "direction": "forward", "score": 10, "source": s, "target": t})
        nodes.update([s, t])

    for cat, parent in PARENT.items():
        link(f"IsA,{cat}", f"IsA,{parent}", "yes_yes")
    for cat, props in IMPLIES.items():
        for p in props:
            link(f"IsA,{cat}", p, "yes_yes")
    for cat, props in EXCLUDES.items():
        for p in props:
            link(f"IsA,{cat}", p, "yes_no")
    everyone = {**{e: v[0] for e, v in ENTITIES.items()}, **CALIBRATION}
    for ent, cat in everyone.items():
        link(f"IsA,{ent}", f"IsA,{cat}", "yes_yes")
    for ent, (cat, yes, no) in ENTITIES.items():
        for p in yes:
            link(f"IsA,{ent}", p, "yes_yes")
        for p in no:
            link(f"IsA,{ent}", p, "yes_no")
    for ln in list(links):  # contrapositives, as in the release
        if ln["weight"] == "yes_yes":
            links.append({"weight": "yes_yes", "direction": "back", "score": 0.7,
                          "source": ln["target"], "target": ln["source"]})

    categories = set(PARENT) | set(PARENT.values())

    def facts_for(ent, cat, own_yes=(), own_no=()):
        yes, no = {f"IsA,{ent}"}, set()
        for c in chain(cat):
            yes.add(f"IsA,{c}")
            yes.update(IMPLIES.get(c, []))
            no.update(EXCLUDES.get(c, []))
        yes.update(own_yes)
        no.update(own_no)
        no.update(f"IsA,{c}" for c in categories if f"IsA,{c}" not in yes)
        others = [e for e in ENTITIES if e != ent]
        no.update(f"IsA,{e}" for e in random.Random(ent).sample(others, 6))
        no -= yes
        return {**{n: "yes" for n in sorted(yes)}, **{n: "no" for n in sorted(no)}}

    silver = {e: facts_for(e, *v) for e, v in ENTITIES.items()}
    calibration = {e: facts_for(e, c) for e, c in CALIBRATION.items()}
    for facts in list(silver.values()) + list(calibration.values()):
        nodes.update(facts)
    graph = {"directed": True, "multigraph": False, "graph": {},
             "nodes": [{"id": n} for n in sorted(nodes)], "links": links}
    out = Path(__file__).resolve().parents[1] / "src/guidetune/data/minibank"
    out.mkdir(parents=True, exist_ok=True)
    (out / "constraints_v2.json").write_text(json.dumps(graph, indent=1))
    (out / "silver_facts.json").write_text(json.dumps(silver, indent=1))
    (out / "calibration_facts.json").write_text(json.dumps(calibration, indent=1))
    (out / "non_countable.txt").write_text("\n".join(sorted(
        ["fur", "wood", "metal", "bark", "moist skin", "honey", "food", "water", "glass", "plastic"])) + "\n")
    (out / "README.md").write_text(
        "# guidetune's mini belief bank\n\nWritten by the guidetune authors (scripts/make_minibank.py) in the "
        "BeliefBank release format: a small taxonomy of animals, plants and artifacts, consistent by "
        "construction. Used by the demo and the tests; not a substitute for the real release.\n")
    n_yes = sum(v == "yes" for f in silver.values() for v in f.values())
    n_all = sum(len(f) for f in silver.values())
    print(f"entities {len(silver)}, nodes {len(nodes)}, links {len(links)} "
          f"(yes_yes {sum(ln['weight'] == 'yes_yes' for ln in links)}, yes_no {sum(ln['weight'] == 'yes_no' for ln in links)}), "
          f"facts {n_all} ({n_yes} yes)")


if __name__ == "__main__":
    main()
