"""A seeded generator of the shipped sample: short English reviews labelled positive or negative.

The sample is synthetic but deliberately not trivial: ten domains with their own
aspects, many sentence shapes, negation that flips polarity, mixed reviews whose
label follows the explicit verdict or the final clause, light surface noise and
a few flipped labels, so a fine-tuned classifier should not score 100%.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pandas as pd

SAMPLE_PATH: Path = Path(__file__).parent / "resources" / "sample_reviews.csv"
POSITIVE, NEGATIVE = "positive", "negative"


def _opts(spec: str) -> tuple[str, ...]:
    return tuple(spec.split("|"))


# Per domain: items, a context sentence, the "again" phrase, negative verdicts, and
# aspects as (name, a clause praising it, a clause criticising it).
DOMAINS: dict[str, dict] = {
    "electronics": dict(items=_opts("phone|laptop|pair of headphones|smartwatch|tablet|bluetooth speaker"),
        intro="I bought this {item} {when}", again="buy it again",
        back=_opts("returning it|sending it back tomorrow|I want a refund"), aspects=(
        ("battery", "the battery easily lasts two days", "the battery dies by noon"),
        ("screen", "the screen is bright and sharp", "the screen scratches if you look at it"),
        ("sound", "the sound is crisp and full", "the sound crackles at any volume"),
        ("build quality", "it feels solid in the hand", "the casing creaked after a week"),
        ("setup", "setup took five minutes", "setup took an entire afternoon"))),
    "books": dict(items=_opts("novel|thriller|memoir|cookbook|biography|short story collection"),
        intro="I read this {item} {when}", again="read another book by this author",
        back=_opts("I gave up halfway|it went straight to the donation box|I want those hours back"), aspects=(
        ("plot", "the plot kept me guessing until the last page", "the plot goes nowhere"),
        ("writing", "the prose is clean and vivid", "the prose is clumsy and repetitive"),
        ("characterization", "every character feels like a real person", "the characters are cardboard cutouts"),
        ("pacing", "I finished it in two evenings", "the middle drags on for a hundred pages"),
        ("ending", "the ending is deeply satisfying", "the ending just stops"))),
    "restaurants": dict(items=_opts("restaurant|bistro|pizza place|sushi bar|diner|cafe"),
        intro="We had dinner at this {item} {when}", again="eat here again",
        back=_opts("we will not be back|we left hungry and annoyed|never again"), aspects=(
        ("food", "every dish came out hot and full of flavour", "the pasta was cold and bland"),
        ("service", "our waiter was attentive and friendly", "we waited forty minutes for a menu"),
        ("atmosphere", "the room is cosy and calm", "the room is so loud we had to shout"),
        ("price", "the portions are generous for the price", "the bill was outrageous for what we got"),
        ("dessert", "the dessert was the highlight of the night", "the dessert tasted like the fridge"))),
    "hotels": dict(items=_opts("hotel|resort|guesthouse|hostel|inn|boutique hotel"),
        intro="We stayed at this {item} {when}", again="stay here again",
        back=_opts("we checked out a day early|we will book elsewhere next time|never staying here again"), aspects=(
        ("room", "the room was spacious and spotless", "the room smelled of smoke"),
        ("staff", "the staff remembered our names", "the staff ignored every request"),
        ("breakfast", "breakfast had something for everyone", "breakfast was stale bread and weak coffee"),
        ("location", "everything is within walking distance", "it is miles from anything worth seeing"),
        ("bed", "I slept like a baby", "the mattress sagged in the middle"))),
    "apps": dict(items=_opts("app|budgeting app|photo editor|language app|meditation app|note-taking app"),
        intro="I installed this {item} {when}", again="download it again",
        back=_opts("uninstalled|I cancelled the subscription|deleted it the same day"), aspects=(
        ("interface", "the interface is clean and intuitive", "the interface is a cluttered mess"),
        ("sync", "sync between devices just works", "sync loses my data every other day"),
        ("performance", "it opens instantly", "it freezes every few minutes"),
        ("support", "support answered within the hour", "support never replied"),
        ("pricing", "the free tier is genuinely useful", "every feature hides behind a paywall"))),
    "clothing": dict(items=_opts("jacket|pair of jeans|dress|sweater|pair of sneakers|shirt"),
        intro="I ordered this {item} {when}", again="order it again",
        back=_opts("sending it back|it goes back in the box|returning it"), aspects=(
        ("fit", "it fits like it was made for me", "it fits like a tent"),
        ("fabric", "the fabric is soft and breathable", "the fabric is scratchy and thin"),
        ("stitching", "the stitching is neat and tight", "a seam came apart after one wash"),
        ("color", "the color is exactly as pictured", "the color faded after two washes"),
        ("sizing", "the sizing is spot on", "the sizing is way off"))),
    "movies": dict(items=_opts("movie|film|comedy|documentary|sequel|drama"),
        intro="I watched this {item} {when}", again="watch it again",
        back=_opts("I walked out halfway|I want my two hours back|I fell asleep"), aspects=(
        ("plot", "the story grips you from the first scene", "the story makes no sense"),
        ("acting", "the lead gives a career-best performance", "the acting is wooden"),
        ("soundtrack", "the soundtrack gave me chills", "the soundtrack drowns out the dialogue"),
        ("pacing", "two and a half hours flew by", "it drags for the entire second act"),
        ("cinematography", "every shot looks like a painting", "half the scenes are too dark to see"))),
    "airlines": dict(items=_opts("airline|carrier|budget airline"),
        intro="I flew with this {item} {when}", again="fly with them again",
        back=_opts("never flying with them again|I am booking a different airline next time"), aspects=(
        ("seating", "the seats had plenty of legroom", "my knees were pressed into the seat in front"),
        ("crew", "the crew was warm and helpful", "the crew was rude from start to finish"),
        ("catering", "the meal was surprisingly tasty", "the meal was inedible"),
        ("punctuality", "we landed twenty minutes early", "the flight was delayed five hours"),
        ("baggage handling", "my bag was first on the belt", "they lost my suitcase"))),
    "games": dict(items=_opts("game|shooter|puzzle game|RPG|racing game|strategy game"),
        intro="I played this {item} {when}", again="play it again",
        back=_opts("I refunded it|uninstalled it after two hours|it is collecting dust"), aspects=(
        ("art style", "the art style is gorgeous", "the art style looks cheap"),
        ("control scheme", "the controls feel tight and responsive", "the controls feel floaty and laggy"),
        ("story", "the story had me hooked for forty hours", "the story is forgettable"),
        ("multiplayer", "online matches are smooth", "online matches lag constantly"),
        ("difficulty", "the difficulty curve is just right", "the difficulty spikes out of nowhere"))),
    "appliances": dict(items=_opts("blender|vacuum cleaner|coffee maker|washing machine|microwave|air fryer"),
        intro="I bought this {item} {when}", again="buy it again",
        back=_opts("returning it|it is going back to the store|I want a refund"), aspects=(
        ("noise level", "it is whisper quiet", "it sounds like a jet engine"),
        ("cleaning", "it takes a minute to clean", "cleaning it is a nightmare"),
        ("power", "it handles everything I throw at it", "it struggles with the simplest tasks"),
        ("design", "it looks great on the counter", "it takes up half the counter"),
        ("durability", "it still works like new after a year", "it broke within a month"))),
}

WORDS: dict[str, tuple[str, ...]] = {k: _opts(v) for k, v in {
    "pa": "great|excellent|fantastic|superb|solid|impressive|wonderful|outstanding|lovely|brilliant|amazing"
          "|terrific|top-notch|first-rate|pleasant|decent|good",
    "na": "terrible|awful|poor|disappointing|mediocre|dreadful|horrible|subpar|lousy|bad|frustrating"
          "|abysmal|underwhelming|weak|annoying|pathetic",
    "int": "|||really |very |truly |absolutely |incredibly |pretty |quite |genuinely |surprisingly |remarkably ",
    "soft": "exactly |particularly |very |that |all that |",
    "sure": "definitely |happily |gladly |",
    "lv": "love|like|adore|really like|absolutely love|enjoy",
    "hate": "hate|dislike|can't stand|really dislike|am annoyed by",
    "happy": "happy|thrilled|pleased|satisfied|delighted|impressed",
    "who": "my wife|my husband|my son|my daughter|my partner|my friends|my roommate|my mom|my whole family",
    "dur": "two days|a week|two weeks|a month|three months|half a year|a year",
    "when": "last week|a month ago|for my birthday|on a friend's advice|after reading the reviews|on sale"
            "|last summer|for a work trip|over the holidays",
    "ps": "5 stars|4 stars|five stars|four stars",
    "ns": "1 star|2 stars|one star|two stars",
}.items()}

# Plain sentences, one polarity each; sarcasm and "did not expect much" are here on purpose.
PLAIN = {
    POSITIVE: _opts("The {a} is {int}{pa}.|{pa} {a}, {pa2} {a2}.|I {lv} the {a}.|{ga}.|This {item} is {int}{pa}."
        "|Would {sure}recommend this {item} to anyone.|{ps}: {ga}.|This {item} exceeded my expectations."
        "|After {dur}, I am still {happy} with this {item}.|What a {pa} {item}!|Worth every penny; {ga}."
        "|{who} loved it as well.|I would {again} in a heartbeat.|Can't say enough good things about the {a}."
        "|Overall, a {int}{pa} experience.|Honestly, {ga}, and that alone makes it worth it."
        "|I did not expect much, but {ga}."),
    NEGATIVE: _opts("The {a} is {int}{na}.|{na} {a}, {na2} {a2}.|I {hate} the {a}.|{ba}.|This {item} is {int}{na}."
        "|Would not recommend this {item} to anyone.|{ns}: {ba}.|This {item} fell short of my expectations."
        "|After {dur}, I already regret choosing this {item}.|What a {na} {item}.|A complete waste of money; {ba}."
        "|{who} hated it as well.|I will never {again}.|Nothing but problems with the {a}."
        "|Overall, a {int}{na} experience.|Honestly, {ba}, and that alone ruins it."
        "|Great, another {item} where {ba}.|Oh wonderful, {ba}."),
}
# Negation that flips the polarity of the word it negates.
NEGATED = {
    POSITIVE: _opts("The {a} is not {na} at all.|Not bad at all; {ga}.|Never disappointed by the {a}."
        "|I can't complain about the {a}.|No complaints about the {a} whatsoever.|I was not disappointed in the slightest."
        "|I wouldn't call the {a} {na}; it is actually {pa}.|There is nothing {na} about this {item}."
        "|I never regretted choosing this {item}.|Hard to find anything wrong with the {a}."
        "|I could not ask for a better {a}.|Never had a single problem with the {a}."),
    NEGATIVE: _opts("I would not call the {a} {pa}.|The {a} is not {soft}{pa}.|The {a} is far from {pa}."
        "|Not {pa}, not even close.|I can't recommend this {item}.|There is nothing {pa} about the {a}."
        "|I did not enjoy the {a} one bit.|The {a} is hardly {pa}.|Nobody would call this {item} {pa}."
        "|Not worth the money, sadly.|I was never happy with the {a}."
        "|I could not find a single thing to like about the {a}."),
}
# Two clauses of opposite polarity: {x} first, {y} second (the second wins unless a verdict follows).
MIXED = _opts("{x}, but {y}.|{x}; however, {y}.|{x}, yet {y}.|Although {x}, {y}.|{x}. On the other hand, {y}."
              "|{x}. That said, {y}.|Sure, {x}, but {y}.")
VERDICT = {
    POSITIVE: _opts("Still, I would {again}|Overall, I am {happy} with it|Worth it overall|On balance, a keeper"
                    "|Verdict: recommended|All in all, a good choice"),
    NEGATIVE: _opts("{back}|Overall, not worth it|On balance, a disappointment|Verdict: avoid"
                    "|I would not {again}|All in all, a poor choice"),
}
_KEY = re.compile(r"[^a-z0-9]+")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(rng: random.Random, template: str, domain: str, item: str) -> str:
    d = DOMAINS[domain]
    (a, ga, ba), (a2, _, _) = rng.sample(d["aspects"], 2)
    fields = {k: rng.choice(v) for k, v in WORDS.items()}
    fields.update(a=a, a2=a2, ga=ga, ba=ba, item=item, again=d["again"], back=rng.choice(d["back"]),
                  pa2=rng.choice(WORDS["pa"]), na2=rng.choice(WORDS["na"]))
    return _cap(template.format(**fields))


def _clause(rng: random.Random, aspect: tuple[str, str, str], label: str) -> str:
    name, good, bad = aspect
    if rng.random() < 0.5:
        return good if label == POSITIVE else bad
    adj = rng.choice(WORDS["pa"] if label == POSITIVE else WORDS["na"])
    return f"the {name} is {rng.choice(WORDS['int'])}{adj}"


def _mixed(rng: random.Random, label: str, domain: str, item: str) -> list[str]:
    other = NEGATIVE if label == POSITIVE else POSITIVE
    first, second = rng.sample(DOMAINS[domain]["aspects"], 2)
    verdict = _fill(rng, rng.choice(VERDICT[label]), domain, item) if rng.random() < 0.6 else None
    if verdict is not None and rng.random() < 0.12:
        good, bad = (first, second) if label == POSITIVE else (second, first)
        return [f"Pros: the {good[0]}. Cons: the {bad[0]}.", verdict + "."]
    x, y = _clause(rng, first, other), _clause(rng, second, label)
    if verdict is not None and rng.random() < 0.5:
        x, y = y, x  # the explicit verdict decides, whichever clause comes last
    if verdict is None and rng.random() < 0.15:
        wish = "expected to hate" if label == POSITIVE else "wanted to like"
        return [f"I {wish} this {item} because {x}, but {y}."]
    body = _cap(rng.choice(MIXED).format(x=x, y=y))
    if verdict is None:
        return [body]
    if rng.random() < 0.3:
        tail = verdict if verdict.startswith("I ") else verdict[:1].lower() + verdict[1:]
        return [f"{body[:-1]}; {tail}."]
    return [body, verdict + "."]


def _typo(rng: random.Random, text: str) -> str:
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 4]
    if not spots:
        return text
    i = rng.choice(spots)
    w, j = words[i], rng.randrange(1, len(words[i]) - 1)
    words[i] = rng.choice([w[:j] + w[j + 1] + w[j] + w[j + 2:], w[:j] + w[j + 1:], w[:j] + w[j] + w[j:]])
    return " ".join(words)


def _review(rng: random.Random, label: str, domain: str) -> str:
    item = rng.choice(DOMAINS[domain]["items"])
    kind = rng.choices(("plain", "negated", "mixed"), weights=(0.42, 0.25, 0.33))[0]
    if kind == "plain":
        sentences = [_fill(rng, t, domain, item) for t in rng.sample(PLAIN[label], rng.choice((1, 2, 2, 3)))]
    elif kind == "negated":
        sentences = [_fill(rng, rng.choice(NEGATED[label]), domain, item)]
        if rng.random() < 0.4:
            sentences.insert(rng.randrange(2), _fill(rng, rng.choice(PLAIN[label]), domain, item))
    else:
        sentences = _mixed(rng, label, domain, item)
    if len(sentences) < 3 and rng.random() < 0.25:
        sentences.insert(0, _fill(rng, DOMAINS[domain]["intro"] + ".", domain, item))
    text = " ".join(sentences)
    # Surface noise is label-independent so it carries no signal.
    if rng.random() < 0.05:
        text = _typo(rng, text)
    if rng.random() < 0.1 and text.endswith("."):
        text = text[:-1] + "!"
    if rng.random() < 0.1:
        text = text.lower()
    return text


def generate_reviews(n_rows: int = 3000, seed: int = 13, label_noise: float = 0.03) -> pd.DataFrame:
    """Return `n_rows` unique reviews with columns `text`, `label` ("positive"/"negative") and `domain`.

    The same arguments always give the same frame. Before noise the classes are
    exactly balanced (one extra negative when `n_rows` is odd); then
    `round(n_rows * label_noise)` labels, chosen at random, are flipped. No two
    texts are equal, even ignoring case and punctuation.
    Raises ValueError for `n_rows < 10` or `label_noise` outside [0, 0.5).
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 10:
        raise ValueError(f"n_rows must be an integer >= 10, got {n_rows!r}")
    if not 0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5) (a fraction of labels to flip), got {label_noise!r}")
    rng = random.Random(seed)
    labels = [POSITIVE] * (n_rows // 2) + [NEGATIVE] * (n_rows - n_rows // 2)
    rng.shuffle(labels)
    domains = list(DOMAINS)
    seen: set[str] = set()  # membership only; never iterated, so order cannot leak in
    rows: list[tuple[str, str, str]] = []
    for label in labels:
        for _ in range(1000):
            domain = rng.choice(domains)
            text = _review(rng, label, domain)
            # Near-duplicates (case, punctuation) would leak across splits as surely as exact ones.
            key = _KEY.sub(" ", text.lower()).strip()
            if key not in seen:
                break
        else:
            raise RuntimeError(f"could not produce {n_rows} distinct reviews; got {len(rows)}")
        seen.add(key)
        rows.append((text, label, domain))
    frame = pd.DataFrame(rows, columns=["text", "label", "domain"])
    flip = rng.sample(range(n_rows), round(n_rows * label_noise))
    frame.loc[flip, "label"] = frame.loc[flip, "label"].map({POSITIVE: NEGATIVE, NEGATIVE: POSITIVE})
    return frame


def write_sample(path: Path, n_rows: int = 3000, seed: int = 13) -> Path:
    """Write `generate_reviews(n_rows, seed)` to `path` as UTF-8 CSV without an index; return `path`.

    Line endings are always "\\n", so the same seed gives byte-identical files on every platform.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_reviews(n_rows, seed).to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    return path


if __name__ == "__main__":
    print(write_sample(SAMPLE_PATH))
