"""Synthetic ToolWOZ goals sampled from the databases: the `synth` split, extra bootstrap data only.

As ConvLab's goal generator does for MultiWOZ: 1 or 2 domains, one DB entity per domain, search
constraints that entity meets, optional booking slots, a doomed first request (`fail_info` / `fail_book`)
and requested attributes. Frequencies are the ones of MultiWOZ 2.1's validation goals (counted once, in
the comments below), so a synthetic goal looks like a real one to the rule user, the teacher and the
reward code; its ground truth is derived by the same code as the real tasks' (`tasks.tasks_from_goals`), and
`factory toolwoz build` adds them.
Deterministic for a seed. Never evaluated on: `test` and `val_*` stay the benchmark and the harvest pool.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from toolwoz.schemas import DAYS, UID_KEY
from toolwoz.tasks import GoalEntry

SPLIT = "synth"
DEFAULT_COUNT = 2000  # room for `factory loop --iterations 3` at 600 harvest tasks each
DEFAULT_SEED = 0  # what `factory toolwoz build` samples with (recorded in the loop's loop.json)
PREFIX = "SYN"
# Per-task domain frequencies on val (793 goals): train 0.61, restaurant 0.43, hotel 0.40, attraction 0.37;
# 82% of goals have two domains.
DOMAIN_WEIGHTS = {"train": 0.61, "restaurant": 0.43, "hotel": 0.40, "attraction": 0.37}
TWO_DOMAINS = 0.82
# Search slots a goal may constrain (train always departure, destination, day and one time).
SLOTS = {"restaurant": ("food", "area", "pricerange"),
         "hotel": ("type", "area", "pricerange", "stars", "parking", "internet"),
         "attraction": ("type", "area")}
NAME_ONLY = {"restaurant": 0.22, "hotel": 0.28, "attraction": 0.23}  # goals that give just the entity's name
N_SLOTS = {"restaurant": ((2, 0.56), (3, 0.44)), "hotel": ((3, 0.48), (4, 0.52)),
           "attraction": ((1, 0.50), (2, 0.50))}
BOOK = {"restaurant": 0.60, "hotel": 0.61, "train": 0.56}
FAIL_INFO = {"restaurant": 0.37, "hotel": 0.29, "attraction": 0.34}  # of the goals with slot constraints
FAIL_BOOK = {"restaurant": 0.23, "hotel": 0.12}  # of the goals with a booking
ARRIVE_BY = 0.58  # train goals with an arrival time (else a departure time)
REQT = {"restaurant": {"phone": 0.22, "postcode": 0.20, "address": 0.19},
        "hotel": {"phone": 0.14, "address": 0.12, "postcode": 0.11, "parking": 0.09, "stars": 0.09},
        "attraction": {"entrance fee": 0.41, "phone": 0.41, "address": 0.37, "postcode": 0.36, "area": 0.18},
        "train": {"price": 0.23, "duration": 0.23, "trainID": 0.13, "leaveAt": 0.13}}
SAME_DAY = 0.5  # a second booked domain reuses the first one's day and group size
NOUN = {"restaurant": "restaurant", "hotel": "place to stay", "attraction": "attraction", "train": "train"}


def _quarter(minutes: int) -> str:
    minutes = max(0, min(minutes, 23 * 60 + 45))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str) -> int:
    hours, _, mins = text.partition(":")
    return int(hours) * 60 + int(mins)


def _values(rows: Sequence[Mapping[str, Any]], slot: str) -> list[str]:
    return sorted({str(r[slot]) for r in rows if r.get(slot) not in (None, "", "?")})


class GoalSampler:
    """MultiWOZ-shaped goals over the raw DB rows (`MultiWOZ.dbs`)."""

    def __init__(self, dbs: Mapping[str, Sequence[Mapping[str, Any]]], seed: int = 0):
        self.dbs, self.rng = dbs, random.Random(seed)

    def goal(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(goal, booked): the goal dict and, per booked domain, the record a wizard would have booked."""
        rng = self.rng
        names = list(DOMAIN_WEIGHTS)
        first = rng.choices(names, weights=[DOMAIN_WEIGHTS[d] for d in names])[0]
        domains = [first]
        if rng.random() < TWO_DOMAINS:
            rest = [d for d in names if d != first]
            domains.append(rng.choices(rest, weights=[DOMAIN_WEIGHTS[d] for d in rest])[0])
        goal: dict[str, Any] = {}
        booked: dict[str, Any] = {}
        shared: dict[str, str] = {}
        for domain in domains:
            entity = dict(rng.choice(self.dbs[domain]))
            g = self._train(entity) if domain == "train" else self._place(domain, entity)
            if domain in BOOK and rng.random() < BOOK[domain]:
                g["book"], g["fail_book"] = self._book(domain, shared)
                booked[domain] = {UID_KEY[domain]: entity[UID_KEY[domain]],
                                  "reference": f"{rng.getrandbits(32):08X}"}
            reqt = [r for r, p in REQT[domain].items() if rng.random() < p]
            if reqt:
                g["reqt"] = reqt
            goal[domain] = g
        goal["message"] = [sentence for d in domains for sentence in _message(d, goal[d])]
        return goal, booked

    def _place(self, domain: str, entity: Mapping[str, Any]) -> dict[str, Any]:
        rng = self.rng
        if rng.random() < NAME_ONLY[domain]:
            return {"info": {"name": entity["name"]}, "fail_info": {}}
        usable = [s for s in SLOTS[domain] if entity.get(s) not in (None, "", "?")]
        counts, weights = zip(*N_SLOTS[domain])
        n = min(rng.choices(counts, weights=weights)[0], len(usable))
        info = {s: str(entity[s]) for s in rng.sample(usable, n)}
        fail: dict[str, str] = {}
        if info and rng.random() < FAIL_INFO[domain]:
            slot = rng.choice(sorted(info))
            others = [v for v in _values(self.dbs[domain], slot) if v != info[slot]]
            if others:
                fail = {**info, slot: rng.choice(others)}
        return {"info": info, "fail_info": fail}

    def _train(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        rng = self.rng
        info = {"departure": entity["departure"], "destination": entity["destination"], "day": entity["day"]}
        if rng.random() < ARRIVE_BY:  # a latest arrival at or after this train's (quarter hours, as MultiWOZ)
            arrive = _minutes(entity["arriveBy"])
            info["arriveBy"] = _quarter(-(-arrive // 15) * 15 + 15 * rng.randint(0, 4))
        else:  # an earliest departure at or before this train's
            info["leaveAt"] = _quarter(_minutes(entity["leaveAt"]) // 15 * 15 - 15 * rng.randint(0, 4))
        return {"info": info, "fail_info": {}}

    def _book(self, domain: str, shared: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        rng = self.rng
        same = bool(shared) and rng.random() < SAME_DAY
        people = shared["people"] if same else str(rng.choice((1, 2, 2, 3, 4, 5, 6, 7, 8)))
        book = {"people": people}
        if domain != "train":
            book["day"] = shared["day"] if same and "day" in shared else rng.choice(DAYS)
        if domain == "restaurant":
            book["time"] = _quarter(rng.randint(11 * 4, 21 * 4) * 15)
        if domain == "hotel":
            book["stay"] = str(rng.choice((1, 2, 2, 3, 3, 4, 5)))
        shared.update({k: v for k, v in book.items() if k in ("people", "day")})
        fail: dict[str, str] = {}
        if domain in FAIL_BOOK and rng.random() < FAIL_BOOK[domain]:
            slot = "time" if domain == "restaurant" and rng.random() < 0.7 else "day"
            if slot == "time":
                fail = {"time": _quarter(_minutes(book["time"]) + 60 * rng.choice((-2, -1, 1, 2)))}
            else:
                fail = {"day": rng.choice([d for d in DAYS if d != book["day"]])}
            if fail == {k: book.get(k) for k in fail}:
                fail = {}
        return book, fail


def _message(domain: str, g: Mapping[str, Any]) -> list[str]:
    """Instruction sentences in MultiWOZ's style (what an `llm` user reads; the rule user finds domains in it)."""
    info = g["info"]
    parts = [f"{k} {v}" for k, v in info.items()]
    out = [f"You are looking for a {NOUN[domain]} with {', '.join(parts)}."]
    if g.get("fail_info"):
        out.insert(0, f"You first ask for a {NOUN[domain]} with "
                      f"{', '.join(f'{k} {v}' for k, v in g['fail_info'].items())}; if there is none, ask again.")
    if g.get("book"):
        out.append("Once you find it, book it for " + ", ".join(f"{k} {v}" for k, v in g["book"].items()) + ".")
    if g.get("reqt"):
        out.append("Make sure you get the " + ", ".join(g["reqt"]) + ".")
    return out


def goal_entries(dbs: Mapping[str, Sequence[Mapping[str, Any]]], count: int = DEFAULT_COUNT,
                 seed: int = DEFAULT_SEED) -> list[GoalEntry]:
    """The `synth` split's goals, ready for `tasks.tasks_from_goals`."""
    return [GoalEntry(task_id, SPLIT, [SPLIT], goal,
                      {d: {"book": {"booked": [record]}} for d, record in booked.items()})
            for task_id, goal, booked in sample_goals(dbs, count, seed)]


def sample_goals(dbs: Mapping[str, Sequence[Mapping[str, Any]]], count: int = DEFAULT_COUNT,
                 seed: int = DEFAULT_SEED) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """`count` (task_id, goal, booked) triples, ids `SYN00000.json` ... ; deterministic for `seed`."""
    sampler = GoalSampler(dbs, seed)
    return [(f"{PREFIX}{i:05d}.json", *sampler.goal()) for i in range(count)]
