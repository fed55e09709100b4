"""The critique's natural-language tasks (for models trained on simple stories); any tokenizer.

* ``pronoun``: ``when {name} {action},`` -> ``" he"`` (A, a male name) / ``" she"`` (B, a female name).
* ``ioi``: ``when {name1} {action}, {name2} {verb}`` -> ``" him"``/``" her"``, the pronoun of name1.
  ``train``/``val``/``test`` use opposite-gender names (A: male then female, B: the same two names
  swapped), as for pruning; ``split="ood"`` uses same-gender names (A: two male names, B: two female
  names), where "the pronoun that does not match name2" fails. The two never share a prompt.
* ``nonsense``: ``when {name} {action},`` -> ``" is"`` for a male name, ``" when"`` for a female one:
  an arbitrary rule a pruned circuit should not find in a model that was never trained on it.
  Its default loss is full-vocabulary cross-entropy, as in the critique.

The names are the critique's; the openings and actions vary so the splits hold many distinct prompts.
"""

from __future__ import annotations

import random
from typing import Any

from sparselens.tasks.base import PromptPair, Task
from sparselens.tasks.templates import TemplateTask

MALE = ["Leo", "Samuel", "Jose", "Peter", "Alex"]
FEMALE = ["Mia", "Rita", "Kim", "Maria", "Lily"]
OPENINGS = ["when", "after", "as soon as", "once", "because"]
ACTIONS = ["ran to the beach", "went to the park", "came home", "saw the dog", "found a shell", "opened the door",
           "ate the cake", "climbed the tree", "lost the ball", "heard the bird", "walked to school", "fed the cat",
           "woke up", "got a letter", "built a sand castle", "painted the fence", "missed the bus", "won the race",
           "dropped the cup", "finished the book", "looked at the stars", "planted a seed", "fell asleep",
           "cleaned the room", "baked a pie", "flew the kite", "lost a tooth", "met a frog", "sang a song",
           "drew a map"]
VERBS = ["waved at", "smiled at", "called", "thanked", "hugged", "looked at", "yelled at", "talked to", "laughed at",
         "helped", "followed", "found", "saw", "told", "asked", "visited"]


def _story_templates() -> list[str]:
    return [f"{opening} {{name}} {{action}}," for opening in OPENINGS]


def pronoun(tokenizer: Any = None) -> Task:
    """``when Leo ran to the beach,`` -> ``" he"``; the same with a female name -> ``" she"``."""
    return TemplateTask("pronoun", _story_templates(), (" he", " she"), a={"name": MALE}, b={"name": FEMALE},
                        shared={"action": ACTIONS}, tokenizer=tokenizer, description="' he'/' she' from the name's gender")


def nonsense(tokenizer: Any = None) -> Task:
    """``when Leo ran to the beach,`` -> ``" is"``; with a female name -> ``" when"`` (loss: full CE)."""
    return TemplateTask("nonsense", _story_templates(), (" is", " when"), a={"name": MALE}, b={"name": FEMALE},
                        shared={"action": ACTIONS}, tokenizer=tokenizer, default_kind="ce",
                        description="arbitrary: male -> ' is', female -> ' when' (control task)")


def ioi(tokenizer: Any = None) -> Task:
    """Simplified indirect-object identification; splits train/val/test opposite-gender, ood same-gender."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        opening, action, verb = rng.choice(OPENINGS), rng.choice(ACTIONS), rng.choice(VERBS)
        if split == "ood":
            (m1, m2), (f1, f2) = rng.sample(MALE, 2), rng.sample(FEMALE, 2)
            a_names, b_names = (m1, m2), (f1, f2)
        else:
            m, f = rng.choice(MALE), rng.choice(FEMALE)
            a_names, b_names = (m, f), (f, m)
        a = f"{opening} {a_names[0]} {action}, {a_names[1]} {verb}"
        b = f"{opening} {b_names[0]} {action}, {b_names[1]} {verb}"
        return PromptPair(a, b, " him", " her")

    return Task("ioi", gen, [" him", " her"], tokenizer, extra_splits=("ood",),
                description="' him'/' her' for the first name; split='ood' has same-gender names")


LANGUAGE_TASKS = {"pronoun": pronoun, "ioi": ioi, "nonsense": nonsense}
