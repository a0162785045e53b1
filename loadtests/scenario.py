"""What the load test says: fixed English texts in three lengths, and the parsers for its options.

Pure Python, no server and no locust needed, so the unit tests import it directly.

The texts are committed and fixed (not generated) so that every run asks for the same utterances:
runs compare with each other, and the correctness check can cache one reference per (voice, text).
All ASCII, words espeak-ng speaks without surprises.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

# 2-5 words: what an assistant says to acknowledge or prompt.
SHORT = (
    "Hello there.",
    "Yes, of course.",
    "Good morning, everyone.",
    "Please hold on.",
    "Thank you very much.",
    "Turn left here.",
    "That sounds great.",
    "See you tomorrow.",
    "One moment, please.",
    "Your order is ready.",
    "It is raining.",
    "Welcome back home.",
)

# One sentence, 8-25 words.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to bring your umbrella, because the forecast says it will rain all afternoon.",
    "Our next train to the city centre leaves from platform four in about ten minutes.",
    "She opened the window and listened to the birds singing in the garden below.",
    "The meeting has been moved to Thursday at three o'clock, in the small room on the second floor.",
    "If you would like to hear these options again, please say repeat or press the star key.",
    "A warm cup of tea on a cold winter evening is one of life's simple pleasures.",
    "The museum is open every day except Monday, from nine in the morning until six at night.",
    "He parked the car, locked the doors, and walked slowly towards the old stone bridge.",
    "Streaming speech starts playing before the whole sentence has been computed.",
    "Turn right at the next junction, then continue straight ahead for two hundred metres.",
    "The library will close early today because of the public holiday tomorrow.",
)

# Several sentences: a long answer or a paragraph read aloud.
PARAGRAPHS = (
    "The village lay at the foot of a green hill, with a narrow river running along its edge. Every morning the baker "
    "opened his shop before sunrise, and the smell of fresh bread drifted down the main street. Children walked to "
    "school past the old church, and farmers brought their vegetables to the market square. In the evening the lights "
    "came on one by one, and the whole valley grew quiet.",
    "Thank you for calling our customer service line. Your call is important to us, and one of our advisers will be "
    "with you shortly. While you wait, you may find the answer to your question on our website, where you can also "
    "track your order and change your delivery address. If you would prefer a call back, please stay on the line and "
    "we will arrange one at a time that suits you.",
    "Weather for the coming week: tomorrow starts cloudy with a few light showers in the north, clearing by the "
    "afternoon. Wednesday and Thursday will be dry and bright, with temperatures a little above average for the time "
    "of year. A band of heavier rain is expected to arrive on Friday evening, bringing strong winds to coastal areas. "
    "The weekend looks mostly settled again.",
    "To reset your password, first open the settings page and choose the section called account. Then select the "
    "option to change your password and enter your current one. Type the new password twice, making sure it has at "
    "least twelve characters. Finally, press save, and sign in again on each of your devices.",
)

CATEGORIES: dict[str, tuple[str, ...]] = {"short": SHORT, "sentence": SENTENCES, "paragraph": PARAGRAPHS}

# Named text mixes (category weights).  "mix" is the default: mostly short turns and single sentences, as in a
# conversational assistant, with the occasional paragraph that keeps a stream busy for seconds.
MIXES: dict[str, dict[str, float]] = {
    "mix": {"short": 50, "sentence": 40, "paragraph": 10},
    "short": {"short": 1},
    "sentence": {"sentence": 1},
    "paragraph": {"paragraph": 1},
}


@dataclass(frozen=True)
class Weighted(Generic[T]):
    """Items with positive weights; :meth:`pick` draws one in proportion to its weight."""

    items: tuple[T, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.items or len(self.items) != len(self.weights):
            raise ValueError("need at least one item and one weight per item")
        if any(w <= 0 for w in self.weights):
            raise ValueError(f"weights must be > 0, got {list(self.weights)}")

    def pick(self, rng: random.Random) -> T:
        return rng.choices(self.items, weights=self.weights)[0]

    def share(self, item: T) -> float:
        """The probability of drawing ``item``."""
        return sum(w for i, w in zip(self.items, self.weights, strict=True) if i == item) / sum(self.weights)


def parse_weights(spec: str, *, what: str = "item") -> Weighted[str]:
    """``"a:3,b:1"`` or ``"a,b"`` (weight 1 each) → :class:`Weighted`.  Names may not repeat."""
    names: list[str] = []
    weights: list[float] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, weight = part.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"empty {what} name in {spec!r}")
        if name in names:
            raise ValueError(f"{what} {name!r} given twice in {spec!r}")
        try:
            w = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"weight of {what} {name!r} is not a number: {weight!r}") from None
        if not w > 0:  # also refuses NaN
            raise ValueError(f"weight of {what} {name!r} must be > 0, got {weight!r}")
        names.append(name)
        weights.append(w)
    if not names:
        raise ValueError(f"no {what} in {spec!r}")
    return Weighted(tuple(names), tuple(weights))


@dataclass(frozen=True)
class TextMix:
    """Draws a text: first a category by weight, then a text of that category uniformly."""

    categories: Weighted[str]
    texts: dict[str, tuple[str, ...]]

    def pick(self, rng: random.Random) -> str:
        return rng.choice(self.texts[self.categories.pick(rng)])

    def all_texts(self) -> list[str]:
        return [t for c in self.categories.items for t in self.texts[c]]


def parse_text_mix(spec: str) -> TextMix:
    """A text mix from ``--texts``:

    - a name in :data:`MIXES` (``mix``, ``short``, ``sentence``, ``paragraph``);
    - category weights, e.g. ``short:6,sentence:3,paragraph:1``;
    - ``@path``: a UTF-8 file with one text per line (blank lines and ``#`` comments skipped), drawn uniformly.
    """
    spec = spec.strip()
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ValueError(f"cannot read texts file {path}: {e}") from e
        texts = tuple(line for line in lines if line.strip() and not line.lstrip().startswith("#"))
        if not texts:
            raise ValueError(f"texts file {path} has no texts")
        return TextMix(Weighted(("file",), (1.0,)), {"file": texts})
    if spec in MIXES:
        weights = MIXES[spec]
        return TextMix(Weighted(tuple(weights), tuple(weights.values())), CATEGORIES)
    categories = parse_weights(spec, what="text category")
    unknown = [c for c in categories.items if c not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown text category {unknown[0]!r}; use a mix name ({', '.join(MIXES)}), "
                         f"weights over {', '.join(CATEGORIES)}, or @file")
    return TextMix(categories, CATEGORIES)


def parse_range(spec: str, *, what: str = "range") -> tuple[float, float]:
    """``"MIN,MAX"`` or a single ``"X"`` (= ``X,X``) → ``(min, max)`` with ``0 <= min <= max``."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) not in (1, 2) or not all(parts):
        raise ValueError(f"{what} must be MIN,MAX or one number, got {spec!r}")
    try:
        lo, hi = float(parts[0]), float(parts[-1])
    except ValueError:
        raise ValueError(f"{what} must be numbers, got {spec!r}") from None
    if not 0 <= lo <= hi:  # also refuses NaN
        raise ValueError(f"{what} needs 0 <= MIN <= MAX, got {spec!r}")
    return lo, hi
