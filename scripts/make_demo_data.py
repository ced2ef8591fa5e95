"""Generate pluralign's bundled demo opinion set from the phrase lists below.

Everything here is written by the project: the topics, the question and
answer templates and the three invented regions (Northvale, Southmere,
Eastholm). Nothing is copied from an upstream survey. The distributions are
drawn with a fixed seed, so running this script again rewrites
``src/pluralign/resources/demo/opinions.jsonl`` byte for byte.

Each question gets, per group, one of three shapes: a clear majority, a
polarised split between the two ends of the scale, or a near-uniform spread.
The shapes are permuted across groups per question, so for every question the
groups disagree, and every group has questions of every shape.

Run: ``.venv/bin/python scripts/make_demo_data.py [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20240531
GROUPS = ("Northvale", "Southmere", "Eastholm")
#: A group's lean when its distribution has a clear majority: which end of the scale
#: its majority tends to sit on (positive, negative, middle), so groups differ in kind.
LEANS = {"Northvale": "positive", "Southmere": "negative", "Eastholm": "middle"}
OUT = Path(__file__).resolve().parents[1] / "src/pluralign/resources/demo/opinions.jsonl"

# ----------------------------------------------------------------------- scales
# class ids follow the project's scale: 1 most negative, 3 middle, 5 most positive.

SCALES: dict[str, dict] = {
    "agree": {
        "beliefs": [(1, "Strongly disagree"), (2, "Somewhat disagree"),
                    (3, "Neither agree nor disagree"), (4, "Somewhat agree"),
                    (5, "Strongly agree")],
        "question": ["Do you agree or disagree with this statement: {Subject}.",
                     "Some people say that {subject}. Do you agree or disagree?"],
        "casual": ["Here's one for you: {subject}. Agree or disagree?",
                   "What's your take on the idea that {subject}?"],
        "answers": {
            1: ["I strongly disagree that {subject}.",
                "I completely disagree; it is simply wrong that {subject}.",
                "Strongly disagree. I reject the idea that {subject}.",
                "I firmly and strongly disagree that {subject}."],
            2: ["I somewhat disagree that {subject}, though I see the point.",
                "I tend to disagree that {subject}, but only mildly.",
                "I mostly disagree that {subject}, with some exceptions.",
                "I lean towards disagreeing that {subject}."],
            3: ["I neither agree nor disagree that {subject}; I have no strong view.",
                "I'm neutral on whether {subject}, neither for nor against.",
                "Honestly I neither agree nor disagree that {subject}; it could go either way.",
                "No firm opinion: I neither agree nor disagree that {subject}."],
            4: ["I somewhat agree that {subject}, with a few doubts.",
                "I mostly agree that {subject}, though not entirely.",
                "I tend to agree that {subject}, within limits.",
                "I lean towards agreeing that {subject}."],
            5: ["I strongly agree that {subject}.",
                "Strongly agree: {subject}, no doubt about it.",
                "Yes, I agree completely and strongly that {subject}.",
                "I wholeheartedly and strongly agree that {subject}."],
        },
    },
    "support": {
        "beliefs": [(1, "Strongly oppose"), (2, "Somewhat oppose"), (4, "Somewhat support"),
                    (5, "Strongly support")],
        "question": ["Do you support or oppose {subject}?",
                     "Would you support or oppose {subject}?"],
        "casual": ["How do you feel about {subject}, for or against?",
                   "So, {subject}: are you for it or against it?"],
        "answers": {
            1: ["I strongly oppose {subject}; it is a bad idea.",
                "I'm firmly and strongly against {subject}.",
                "{Subject}? I strongly oppose it, no way.",
                "Count me as a strong opponent of {subject}."],
            2: ["I somewhat oppose {subject}; I doubt it would work.",
                "I lean against {subject}, though it has some merit.",
                "Mildly against {subject}; the costs worry me a little.",
                "I'd cautiously oppose {subject} for now."],
            4: ["I somewhat support {subject}, with a few reservations.",
                "I lean towards supporting {subject}, though it needs care.",
                "Mildly in favour of {subject}; the details matter.",
                "I'd cautiously support {subject}."],
            5: ["I strongly support {subject}; it is long overdue.",
                "I'm fully and strongly in favour of {subject}.",
                "{Subject}? I strongly support it, without hesitation.",
                "Count me as a strong supporter of {subject}."],
        },
    },
    "problem": {
        "beliefs": [(1, "Not a problem at all"), (2, "A small problem"),
                    (4, "A moderately big problem"), (5, "A very big problem")],
        "question": ["How big a problem is {subject} where you live?",
                     "In your area, how much of a problem is {subject}?"],
        "casual": ["Is {subject} a problem around here, would you say?",
                   "Be honest: how bad is {subject} where you are?"],
        "answers": {
            1: ["{Subject} is not a problem at all here.",
                "No problem whatsoever; {subject} doesn't affect us at all.",
                "{Subject} isn't a problem here in any way.",
                "I don't see {subject} as a problem at all."],
            2: ["{Subject} is only a small problem here.",
                "It's a minor problem; {subject} rarely causes trouble.",
                "{Subject} is a small problem, nothing major.",
                "I'd say {subject} is a small problem at most."],
            4: ["{Subject} is a moderately big problem here.",
                "It's a fairly big problem; {subject} bothers quite a few people.",
                "{Subject} is a real, moderately big problem.",
                "I'd call {subject} a moderately big problem."],
            5: ["{Subject} is a very big problem here.",
                "Honestly, {subject} is a very big, serious problem for us.",
                "It's a huge problem: {subject} affects everyone here.",
                "{Subject} is one of the very biggest problems we face."],
        },
    },
    "importance": {
        "beliefs": [(1, "Not important"), (3, "Somewhat important"), (5, "Very important")],
        "question": ["How important is it to you that {subject}?",
                     "Is it important to you that {subject}?"],
        "casual": ["Does it matter to you that {subject}?",
                   "Do you care much that {subject}?"],
        "answers": {
            1: ["It is not important to me that {subject}.",
                "Not important at all; I don't mind whether {subject}.",
                "Honestly, it doesn't matter to me that {subject}; not important.",
                "That {subject} is not important to me."],
            3: ["It is somewhat important to me that {subject}, but not a priority.",
                "Somewhat important; it's nice that {subject}, but I can live without it.",
                "It matters a little to me that {subject}: somewhat important.",
                "That {subject} is somewhat important to me, no more."],
            5: ["It is very important to me that {subject}.",
                "Very important: I care a great deal that {subject}.",
                "It matters enormously to me that {subject}; very important.",
                "That {subject} is very important to me."],
        },
    },
    "future": {
        "beliefs": [(1, "Will get worse"), (3, "Will stay about the same"),
                    (5, "Will get better")],
        "question": ["Over the next ten years, will {subject} get better, get worse or stay "
                     "about the same?",
                     "Looking ahead ten years, do you expect {subject} to improve, worsen or "
                     "stay the same?"],
        "casual": ["Where do you see {subject} heading in the next decade?",
                   "Ten years from now, how will {subject} look?"],
        "answers": {
            1: ["I think {subject} will get worse.",
                "Sadly, {subject} will get worse over the decade.",
                "{Subject} is going to get worse, I fear.",
                "My guess is that {subject} will get worse, not better."],
            3: ["I think {subject} will stay about the same.",
                "Not much will change; {subject} will stay about the same.",
                "{Subject} will stay roughly the same, I expect.",
                "My guess is that {subject} will stay about the same."],
            5: ["I think {subject} will get better.",
                "Happily, {subject} will get better over the decade.",
                "{Subject} is going to get better, I'm optimistic.",
                "My guess is that {subject} will get better, not worse."],
        },
    },
    "yesno": {
        "beliefs": [(1, "No"), (5, "Yes")],
        "question": ["Do you think {subject}?", "In your view, {subject}: yes or no?"],
        "casual": ["Quick one: {subject}, yes or no?", "Yes or no, {subject}?"],
        "answers": {
            1: ["No, I don't think {subject}.",
                "No. I don't believe {subject}.",
                "My answer is no: I don't think {subject}.",
                "No, definitely not; I don't agree that {subject}."],
            5: ["Yes, I think {subject}.",
                "Yes. I believe {subject}.",
                "My answer is yes: I think {subject}.",
                "Yes, definitely; I agree that {subject}."],
        },
    },
}

# ----------------------------------------------------------------------- topics

#: (topic, subject as asked[, subject as answered: "your town" asked, "my town" answered])
TOPICS: dict[str, list[tuple[str, ...]]] = {
    "agree": [
        ("car-free centres", "cities should close their centres to cars at weekends"),
        ("cooking lessons", "children should learn to cook at school"),
        ("sunday trading", "shops should stay closed on Sundays"),
        ("working hours", "people work too many hours these days"),
        ("local news", "local newspapers are worth paying for"),
        ("waste sorting", "every household should sort its waste into five bins"),
        ("volunteer year", "young adults should spend a year volunteering"),
        ("video games", "video games are good for teenagers"),
        ("office pets", "pets should be allowed in offices"),
        ("music lessons", "music lessons should be free for all pupils"),
        ("neighbour trust", "people trust their neighbours less than they used to"),
        ("night parks", "public parks should stay open all night"),
    ],
    "support": [
        ("school week", "a four-day school week"),
        ("free transit", "free buses and trams for everyone"),
        ("cup tax", "a small tax on single-use coffee cups"),
        ("coastal wind", "building a wind farm off the coast"),
        ("firework ban", "a ban on private fireworks in towns"),
        ("school start", "later start times for secondary schools"),
        ("repair bonus", "paying people to repair old appliances"),
        ("volunteer holiday", "a public holiday for volunteers"),
        ("town speed", "a 30 km/h speed limit in town centres"),
        ("office homes", "turning empty offices into flats"),
    ],
    "problem": [
        ("traffic noise", "noise from late-night traffic"),
        ("park litter", "litter in public parks"),
        ("rent cost", "the cost of renting a home"),
        ("doctor waits", "waiting for a doctor's appointment"),
        ("slow internet", "slow internet"),
        ("street flooding", "flooding after heavy rain"),
        ("childcare places", "the shortage of childcare places"),
        ("loneliness", "loneliness among older people"),
    ],
    "importance": [
        ("town library", "your town has a public library", "my town has a public library"),
        ("local food", "your food is grown close to home", "my food is grown close to home"),
        ("car-free commute", "you can get to work without a car",
         "I can get to work without a car"),
        ("street festival", "your neighbourhood holds a festival every year",
         "my neighbourhood holds a festival every year"),
        ("street lights", "the streets are lit all night"),
        ("quiet hours", "your neighbours keep quiet after ten at night",
         "my neighbours keep quiet after ten at night"),
    ],
    "future": [
        ("school quality", "the quality of local schools"),
        ("city air", "the air in big cities"),
        ("young jobs", "job prospects for young people"),
        ("bus service", "the local bus service"),
        ("river health", "the health of rivers and lakes"),
        ("housing supply", "the supply of affordable housing"),
    ],
    "yesno": [
        ("online voting", "people should be able to vote online"),
        ("homework", "primary schools should stop giving homework"),
        ("town pools", "every town needs a public swimming pool"),
        ("tipping", "tipping in restaurants should end"),
        ("free museums", "museums should be free to enter"),
        ("uniforms", "school uniforms should be optional"),
    ],
}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, subject: str) -> str:
    return template.format(subject=subject, Subject=_cap(subject))


# ----------------------------------------------------------------- distributions


def _normalise(weights: list[float]) -> list[float]:
    """Round to 3 decimals, each >= 0.005, summing to exactly 1 (the largest absorbs it)."""
    weights = [max(w, 1e-3) for w in weights]
    total = sum(weights)
    probs = [max(round(w / total, 3), 0.005) for w in weights]
    top = max(range(len(probs)), key=probs.__getitem__)
    probs[top] = round(1.0 - sum(p for i, p in enumerate(probs) if i != top), 3)
    return probs


def _mode_index(k: int, lean: str, rng: random.Random) -> int:
    """Where a group's majority sits: mostly on its lean's side, sometimes elsewhere."""
    sides = {"positive": list(range(k // 2, k)), "negative": list(range(0, (k + 1) // 2)),
             "middle": [k // 2] if k % 2 else [k // 2 - 1, k // 2]}
    return rng.choice(sides[lean]) if rng.random() < 0.75 else rng.randrange(k)


def _shape(kind: str, k: int, lean: str, rng: random.Random) -> list[float]:
    if kind == "majority":
        mode = _mode_index(k, lean, rng)
        weights = [rng.uniform(0.5, 1.5) / (1 + abs(i - mode)) for i in range(k)]
        rest = sum(w for i, w in enumerate(weights) if i != mode)
        weights[mode] = rest * rng.uniform(1.6, 3.5)  # the mode gets 60-78% of the mass
        return _normalise(weights)
    if kind == "polarised":
        if k == 2:  # with two beliefs "polarised" is an even split
            share = rng.uniform(0.42, 0.58)
            return _normalise([share, 1.0 - share])
        ends = [rng.uniform(0.35, 0.5), rng.uniform(0.35, 0.5)]
        middle = [rng.uniform(0.01, 0.06) for _ in range(k - 2)]
        return _normalise([ends[0], *middle, ends[1]])
    weights = [rng.gammavariate(40.0, 1.0) for _ in range(k)]  # near-uniform
    return _normalise(weights)


# ----------------------------------------------------------------------- records


def build_questions(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    kinds = ["majority", "polarised", "uniform"]
    rows = []
    for scale_name, topics in TOPICS.items():
        scale = SCALES[scale_name]
        beliefs = scale["beliefs"]
        for t, (topic, subject, *answered) in enumerate(topics):
            said = answered[0] if answered else subject
            n = len(rows)
            # Rotate template variants by position so wording differs between questions.
            responses = [_fill(scale["answers"][cid][(t + i) % len(scale["answers"][cid])],
                               said) for i, (cid, _) in enumerate(beliefs)]
            order = kinds[:]
            rng.shuffle(order)  # each question: every group a different shape
            shapes = dict(zip(GROUPS, order, strict=True))
            rows.append({
                "id": f"demo-{n + 1:03d}",
                "topic": topic,
                "scale": scale_name,
                "question": _fill(scale["question"][t % 2], subject),
                "paraphrase": _fill(scale["casual"][t % 2], subject),
                "beliefs": [{"class_id": c, "description": d} for c, d in beliefs],
                "responses": responses,
                "shapes": shapes,
                "distributions": {g: _shape(shapes[g], len(beliefs), LEANS[g], rng)
                                  for g in GROUPS},
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = build_questions()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} questions to {args.out}")


if __name__ == "__main__":
    main()
