"""The Space's words, made from the model's class names (pure functions: the Space and publishing share them)."""

from __future__ import annotations

TITLE_CHARACTERS = 60  # the Hub's limit for a Space title


def page_title(labels: list[str]) -> str:
    """``Alien vs. Predator``-style for two classes, ``A, b or c`` for a few, ``N-class image classifier`` beyond."""
    if len(labels) == 2:
        title = f"{labels[0].capitalize()} vs. {labels[1].capitalize()}"
    else:
        title = (", ".join(labels[:-1]) + f" or {labels[-1]}").capitalize()
    return title if len(labels) <= 5 and len(title) <= TITLE_CHARACTERS else f"{len(labels)}-class image classifier"


def neither_text(labels: list[str]) -> str:
    """What the page says when the picture shows none of the classes."""
    if len(labels) == 2:
        a, b = (with_article(name) for name in labels)
        return f"Neither {a} nor {b}"
    return f"None of the {len(labels)} classes"


def unsure_text(label: str, probability: float) -> str:
    """What the page says when the picture scores just past the first "neither" limit."""
    return f"Not sure: looks most like {with_article(label)} ({probability:.0%}), but unlike the training pictures"


def with_article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


NAMED_CLASSES = 6  # the page names this many classes in bold; beyond, it says how many more


def class_list(labels: list[str]) -> str:
    """``**a**, **b** and **c**`` for a few classes; ``N classes, among them **a**, **b**, … **f**`` for many."""
    bold = [f"**{name}**" for name in labels[:NAMED_CLASSES]]
    if len(labels) <= NAMED_CLASSES:
        return bold[0] if len(bold) == 1 else ", ".join(bold[:-1]) + f" and {bold[-1]}"
    return f"{len(labels)} classes, among them {', '.join(bold)}"
