"""Seeded generators of the shipped samples.

`generate_reviews`: short English reviews labelled positive or negative. The
sample is synthetic but deliberately not trivial: ten domains with their own
aspects, many sentence shapes, negation that flips polarity, mixed reviews whose
label follows the explicit verdict or the final clause, light surface noise and
a few flipped labels, so a fine-tuned classifier should not score 100%.

`generate_seq2seq`: customer-support messages, each paired with a short
structured summary ("return request: blue kettle, arrived broken") to generate.
Paraphrased requests, other products mentioned in passing, negated
alternatives and dropped punctuation keep a small model from a perfect score.

`generate_causal`: the same kind of support messages as prompts, each answered
by a short agent reply (at most 20 words) for causal-LM fine-tuning. The reply
names the item and follows the request, so it must be read from the prompt; its
wording is drawn from several phrasings, so no model can match it word for word.

`generate_multilabel`: messages about a device, each raising 1 to 3 of eight
topics (`MULTILABEL_LABELS`), labelled with all of them, sorted and joined by
"|". Paraphrases without the topic's keyword, other topics' words in passing
("the charging port was bent"), topics mentioned only to say they are fine
("no problem with the delivery", no label) and a few rows missing one true
label keep a small model from a perfect score.

`generate_ratings`: product reviews in the domains of `generate_reviews`, each
with a rating from 1.0 to 5.0 (one decimal) for regression. The rating is read
from the review: which aspects it praises or criticises and how strongly
("really", "a bit", "outstanding" or "decent"), negations ("not terrible" is
faint praise) and a closing verdict, averaged, so mixed reviews land in the
middle; Gaussian noise on top keeps a fine-tuned model short of a perfect fit.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pandas as pd

SAMPLE_PATH: Path = Path(__file__).parent / "resources" / "sample_reviews.csv"
SEQ2SEQ_SAMPLE_PATH: Path = Path(__file__).parent / "resources" / "sample_seq2seq.csv"
CAUSAL_SAMPLE_PATH: Path = Path(__file__).parent / "resources" / "sample_causal.csv"
MULTILABEL_SAMPLE_PATH: Path = Path(__file__).parent / "resources" / "sample_multilabel.csv"
RATINGS_SAMPLE_PATH: Path = Path(__file__).parent / "resources" / "sample_ratings.csv"
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


# The seq2seq sample: a customer-support message -> "intent: item, detail".

COLOURS = _opts("black|white|grey|blue|red|green|silver|yellow|pink|brown|purple|orange|gold")
# Only devices can stop working or be repaired; any product can arrive broken or late.
DEVICES = _opts("kettle|lamp|speaker|keyboard|monitor|watch|camera|printer|clock|radio|fan|drill|scanner"
                "|tablet|laptop|microwave|flashlight|coffee maker|desk lamp|vacuum cleaner")
PRODUCTS = DEVICES + _opts("mug|backpack|jacket|sweater|umbrella|chair|pillow|blanket|wallet|suitcase|bicycle"
                           "|helmet|tent|scarf|mirror|water bottle|phone case|yoga mat|laptop bag|rain jacket"
                           "|office chair")
# How a message names its product; the summary always says "{colour} {product}".
ITEM_FORMS = _opts("the {c} {p}|my {c} {p}|the {c} {p} i ordered|my new {c} {p}|the {p}, the {c} one,"
                   "|the {c} {p} from your shop|a {p} in {c}|the {p} in {c}")
WHEN = _opts("last week|last month|a few days ago|on monday|on friday|for my birthday|on sale|in your spring sale"
             "|as a gift|for my son|for my daughter")
DURATION = _opts("three days|five days|a week|ten days|two weeks|three weeks|a month")
STREET = _opts("maple|oak|elm|pine|cedar|park|river|lake|hill|church|mill|station|king|queen|bridge|market"
               "|garden|forest|spring|north|south|west|east|high")
ROAD = _opts("street|road|avenue|lane")
NAMES = _opts("anna|mark|sara|tom|james|maria|david|lisa|peter|emma|john|kate|paul|laura|mike|nina")
# An intro names the item, after which the core clause says "it". Delivery talks about
# how long ago the order was placed, so it only takes intros without a time.
INTRO_TIMED = _opts("i ordered {item} {when}|i bought {item} from you {when}|i got {item} {when}"
                    "|so i ordered {item} {when}")
INTRO = _opts("this is about {item}|i am writing about {item}|quick message about {item}"
              "|i have a problem with an order, {item}")
# Questions usually come before a purchase.
INTRO_QUESTION = _opts("i am looking at {item} on your site|i am thinking of buying {item}"
                       "|i have a question about {item}|i saw {item} in your shop")
GREETING = _opts("hi,|hello,|hey,|hi there,|hello team,|good morning,|dear support,|hey there,|hello.")
SIGNOFF = _opts("thanks.|thank you.|thanks in advance.|cheers.|many thanks.|regards, {name}|thanks, {name}"
                "|best, {name}|cheers, {name}")
# Sentences that mention other products or say nothing useful: the summary must ignore them.
DISTRACTORS = _opts("i also ordered {other_a} {when} and it is fine|{other_the} from the same order is perfect"
                    "|my {other} from you still works great|last year i returned {other_a} without any trouble"
                    "|my friend has {other_a} and loves it|i have been a customer for years"
                    "|this is my first time writing to you|i tried calling but nobody picked up"
                    "|sorry for the long message|my sister recommended your shop"
                    "|i have the order email if you need it|i was very excited about this one"
                    "|the weather here has been awful, not that it matters"
                    "|i was going to order {other_a} too but now i am not sure")
FILLERS = _opts("um|so|basically|honestly|ok so|well")

# Problems a product can have, shared by returns and replacements: (summary, message clauses).
PROBLEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("arrived broken", _opts("{item} arrived broken|{item} came smashed|{item} was cracked when i opened the box"
                             "|{item} was already broken when it got here|{item} showed up in pieces")),
    ("wrong item sent", _opts("{item} turned out to be the wrong product|i got the wrong product when i ordered {item}"
                              "|the box for {item} had a different product inside"
                              "|{item} is not what i ordered, you sent the wrong one")),
    ("stopped working", _opts("{item} stopped working after a week|{item} died after two days|{item} no longer works"
                              "|{item} quit working last night")),
    ("not as described", _opts("{item} looks nothing like the photos|{item} is not what the website described"
                               "|the description of {item} was misleading|{item} is very different from the listing")),
    ("missing parts", _opts("{item} came with parts missing|half the pieces of {item} were not in the box"
                            "|{item} arrived without all of its parts")),
)

# Per topic: the summary's intent, its details as (summary detail, message clauses),
# requests that make the intent explicit, and alternatives the customer turns down.
# "item": False marks a topic whose summary names no product.
TOPICS: dict[str, dict] = {
    # "refund" is not one word in the uncased BERT vocabulary (it splits into "ref ##und"); "return" is.
    "return": dict(intent="return request", details=PROBLEMS, asks=_opts(
        "i would like my money back|can i get my money back?|i want to return it and get my money back"
        "|i just want my money back|how do i return it for my money back?|please pay me back"
        "|i want to send it back for my money"),
        declined=_opts("i do not want a replacement|please do not send another one|no replacement please")),
    "replacement": dict(intent="replacement request", details=PROBLEMS, asks=_opts(
        "can you send me a new one?|i would like a replacement|please send a replacement"
        "|could you swap it for a new one?|i need another one sent out|i would like it exchanged"),
        declined=_opts("i do not want my money back|no money back please, just a new one|i do not want to return it")),
    "repair": dict(intent="repair request", details=(
        ("will not turn on", _opts("{item} will not turn on|{item} does not power on anymore"
                                   "|nothing happens when i switch {item} on")),
        ("makes a loud noise", _opts("{item} makes a loud noise|{item} started making a grinding sound"
                                     "|{item} is very noisy now")),
        ("button stuck", _opts("the button on {item} is stuck|a button on {item} will not move"
                               "|the main button on {item} got stuck")),
        ("keeps shutting off", _opts("{item} keeps shutting off|{item} turns itself off every few minutes"
                                     "|{item} switches off on its own")),
        ("battery drains fast", _opts("the battery in {item} drains in an hour|{item} runs out of battery very fast"
                                      "|the battery of {item} barely lasts")),
    ), asks=_opts("can you fix it? it is still under guarantee|i would like it repaired|can someone repair it?"
                  "|where can i send it for repair?|is a repair possible?|please have it fixed"),
        declined=_opts("i do not want my money back, just a repair|i would rather not replace it")),
    "delivery": dict(intent="late delivery", details=(
        ("ordered {dur} ago", _opts("i ordered {item} {dur} ago and it has not arrived"
                                    "|{item} still has not shown up, i ordered it {dur} ago"
                                    "|it has been {dur} since i ordered {item} and nothing yet"
                                    "|i placed the order for {item} {dur} ago and still no sign of it")),
        ("tracking not updated", _opts("the tracking for {item} has not changed in days"
                                       "|tracking on {item} has been stuck for a while"
                                       "|{item} has shown in transit forever")),
        # A missing parcel is its own intent, so the detail carries the intent with it.
        ("@missing package|marked as delivered", _opts(
            "the tracking says {item} was delivered but it is not here"
            "|{item} shows as delivered but i never got it"
            "|i was told {item} was delivered, but there is nothing at my door")),
    ), asks=_opts("where is my order?|can you check on it?|please look into this|when will it arrive?"
                  "|can you find out what happened?"),
        declined=_opts("i do not want to cancel yet|i do not want my money back yet")),
    "cancellation": dict(intent="cancel order", details=(
        ("ordered by mistake", _opts("i ordered {item} by mistake|i clicked buy on {item} by accident"
                                     "|{item} was an accidental order")),
        ("found it cheaper", _opts("i found {item} cheaper somewhere else|another shop sells {item} for less"
                                   "|i saw {item} at a lower price elsewhere")),
        ("no longer needed", _opts("i do not need {item} anymore|my plans changed and i no longer need {item}"
                                   "|turns out i do not need {item} after all")),
        ("delivery too slow", _opts("the delivery date for {item} is too far away|{item} will take too long to arrive"
                                    "|i cannot wait that long for {item}")),
    ), asks=_opts("please cancel the order|can you cancel it before it ships?|i want to cancel|please stop the order"
                  "|cancel it please|i would like to cancel"),
        declined=_opts("no need to ship it|i do not want to return it later")),
    "billing": dict(intent="billing issue", details=(
        ("charged twice", _opts("i was charged twice for {item}|my card shows two payments for {item}"
                                "|you took the money for {item} two times")),
        ("wrong price charged", _opts("i paid more for {item} than the listed price"
                                      "|i was charged more for {item} than the website said"
                                      "|{item} was on sale but i was charged full price")),
        # Mentions a return and money back, yet the customer is chasing a payment, not asking to return.
        ("return not paid", _opts("i returned {item} but never got my money back"
                                  "|{item} went back weeks ago but the money never reached my account"
                                  "|i sent {item} back weeks ago and still no money")),
    ), asks=_opts("please fix the charge|can you check my bill?|please sort out the payment"
                  "|i would like this corrected|can you look at my account?"),
        declined=()),
    "account": dict(intent="account issue", item=False, details=(
        ("cannot log in", _opts("i cannot log in to my account|my account will not let me sign in"
                                "|the site says my password is wrong every time")),
        ("no password reset email", _opts("the password reset email never arrives|i asked for a reset link but nothing came"
                                          "|i never get the email to reset my password")),
        ("close account", _opts("i want my account deleted|please close my account|i would like to remove my account")),
        ("change email address", _opts("i need to change the email on my account|my email address has changed"
                                       "|please update the email address on my account")),
    ), asks=_opts("can you help?|please help|what should i do?|can someone look into it?"),
        declined=()),
    "address": dict(intent="address change", details=(
        ("to {street}", _opts("please send {item} to {street} instead|i moved, so {item} should go to {street}"
                              "|can you change the address for {item} to {street}?|the new address for {item} is {street}"
                              "|could {item} be delivered to {street} please?")),
    ), asks=_opts("it has not shipped yet i think|please update the order|thanks for changing it"),
        # The old street is a second street in the message; the summary wants the new one.
        declined=_opts("i no longer live on {old_street}|my old address on {old_street} is not valid anymore"
                       "|do not send it to {old_street}")),
    "question": dict(intent="product question", details=(
        ("can it get wet", _opts("is {item} safe in the rain?|can {item} get wet?|will {item} survive the rain?")),
        ("guarantee length", _opts("how long is the guarantee on {item}?|what guarantee comes with {item}?"
                                   "|is {item} covered by a guarantee, and for how long?")),
        ("other colors available", _opts("does {item} come in other colors?|can i get {item} in a different color?"
                                         "|are there more colors of {item}?")),
        ("back in stock date", _opts("when will {item} be back in stock?|{item} is sold out, when will you have more?"
                                     "|any news on {item} coming back in stock?")),
        ("how to clean", _opts("how do i clean {item}?|what is the best way to clean {item}?"
                               "|is there a safe way to wash {item}?")),
    ), asks=_opts("thanks for any info|just curious before i buy|i could not find it on the website"),
        declined=()),
    "feedback": dict(intent="positive feedback", details=(
        ("fast delivery", _opts("{item} arrived much sooner than expected|delivery of {item} was super fast"
                                "|{item} got here in a day")),
        ("great quality", _opts("{item} is really well made|the quality of {item} is excellent|{item} feels very solid")),
        ("helpful support", _opts("your support team helped me set {item} up"
                                  "|the person on the phone was very helpful with {item}"
                                  "|your staff answered all my questions about {item}")),
        ("good packaging", _opts("{item} was packed really well|the packaging on {item} was perfect"
                                 "|{item} came wrapped with great care")),
    ), asks=_opts("just wanted to say thanks|keep up the good work|great job|thank you so much"),
        declined=()),
}
# Details that only make sense for a device (a scarf does not stop working).
DEVICE_DETAILS = {"stopped working", "will not turn on", "makes a loud noise", "button stuck", "keeps shutting off",
                  "battery drains fast"}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _sentence(clause: str) -> str:
    # Questions carry their own "?" in the templates above.
    return clause if clause.endswith(("?", ".", "!")) else clause + "."


def _support_case(rng: random.Random, topic: str) -> tuple[str, dict]:
    """One message for `topic` and what it is about: intent, colour, product, detail (raw and filled), fields."""
    spec = TOPICS[topic]
    detail, clauses = rng.choice(spec["details"])
    intent = spec["intent"]
    if detail.startswith("@"):
        intent, detail = detail[1:].split("|")
    colour = rng.choice(COLOURS)
    product = rng.choice(DEVICES if detail in DEVICE_DETAILS else PRODUCTS)
    # Other products in the message are never the summarised one, but may share its colour.
    other = f"{rng.choice(COLOURS)} {rng.choice([p for p in PRODUCTS if p != product])}"
    street = rng.choice(STREET)
    old_street = rng.choice([s for s in STREET if s != street])
    fields = dict(when=rng.choice(WHEN), dur=rng.choice(DURATION), name=rng.choice(NAMES),
                  street=f"{street} {rng.choice(ROAD)}", old_street=f"{old_street} {rng.choice(ROAD)}",
                  other=other, other_a=_article(other), other_the=f"the {other}")
    clause = rng.choice(clauses)
    use_intro = spec.get("item", True) and rng.random() < 0.35
    forms = ITEM_FORMS
    if topic == "question":  # asked before buying: not "my lamp" or "the lamp i ordered"
        forms = tuple(f for f in forms if not f.startswith("my ") and "i ordered" not in f)
    elif use_intro or "ordered {item}" in clause:  # not "i ordered the lamp i ordered"
        forms = tuple(f for f in forms if "i ordered" not in f)
    item = re.sub(r"^a (?=[aeiou])", "an ", rng.choice(forms).format(c=colour, p=product))

    if use_intro:
        # Name the item in an intro, then refer to it as "it".
        intros = {"delivery": INTRO, "question": INTRO_QUESTION}.get(topic, INTRO + INTRO_TIMED)
        core = [rng.choice(intros).format(item=item, **fields), clause.format(item="it", **fields)]
    else:
        core = [clause.format(item=item, **fields)]
    # Some topics state the request in the detail itself ("please close my account").
    if rng.random() < (0.4 if topic in ("account", "question", "address") else 0.75):
        core.insert(rng.choice((0, len(core))), rng.choice(spec["asks"]))
    if spec["declined"] and rng.random() < 0.3:
        core.insert(rng.randrange(len(core) + 1), rng.choice(spec["declined"]).format(**fields))
    for distractor in rng.sample(DISTRACTORS, rng.choices((0, 1, 2), weights=(0.4, 0.45, 0.15))[0]):
        core.insert(rng.randrange(len(core) + 1), distractor.format(**fields))
    sentences = [_sentence(c) for c in core]
    # Surface noise, independent of the topic so it carries no signal.
    if rng.random() < 0.1:
        i = rng.randrange(len(sentences))
        sentences[i] = f"{rng.choice(FILLERS)} {sentences[i]}"
    if rng.random() < 0.5:
        sentences.insert(0, rng.choice(GREETING))
    if rng.random() < 0.5:
        sentences.append(rng.choice(SIGNOFF).format(**fields))
    # "the lamp, the green one," can end a sentence: drop the comma before the full stop.
    text = re.sub(r",([.?!])", r"\1", " ".join(sentences))
    if rng.random() < 0.2:
        text = re.sub(r"\s+", " ", re.sub(r"[.,?!]", " ", text)).strip()

    return text, dict(intent=intent, colour=colour, product=product, key=detail, detail=detail.format(**fields),
                      fields=fields)


def _summary(topic: str, case: dict) -> str:
    """The structured summary of a support case: what seq2seq learns to write."""
    if TOPICS[topic].get("item", True):
        return f"{case['intent']}: {case['colour']} {case['product']}, {case['detail']}"
    return f"{case['intent']}: {case['detail']}"


def _support_cases(rng: random.Random, n_rows: int, what: str):
    """`(topic, message, case)` for `n_rows` distinct support messages (10 to 40 words, distinct even ignoring
    punctuation), topics balanced. A generator: a caller may draw from `rng` between rows, and the order holds."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 10:
        raise ValueError(f"n_rows must be an integer >= 10, got {n_rows!r}")
    topics = [list(TOPICS)[i % len(TOPICS)] for i in range(n_rows)]
    rng.shuffle(topics)
    seen: set[str] = set()  # membership only; never iterated, so order cannot leak in
    for made, topic in enumerate(topics):
        for _ in range(1000):
            text, case = _support_case(rng, topic)
            key = _KEY.sub(" ", text).strip()
            if 10 <= len(text.split()) <= 40 and key not in seen:
                break
        else:
            raise RuntimeError(f"could not produce {n_rows} distinct {what}; got {made}")
        seen.add(key)
        yield topic, text, case


def generate_seq2seq(n_rows: int = 2000, seed: int = 17) -> pd.DataFrame:
    """Return `n_rows` support messages with columns `text` (the message), `target` (its summary) and `topic`.

    The same arguments always give the same frame. Topics are balanced (the first
    `n_rows % 10` topics get one extra row); messages are lowercase, 10 to 40 words,
    and no two are equal, even ignoring punctuation; summaries are 3 to 12 words.
    Raises ValueError for `n_rows < 10`.
    """
    rng = random.Random(seed)
    rows = [(text, _summary(topic, case), topic) for topic, text, case in _support_cases(rng, n_rows, "messages")]
    return pd.DataFrame(rows, columns=["text", "target", "topic"])


# The causal-LM sample: a support message (the prompt) -> a short agent reply (the response).

# Per topic: what the agent says, per summary detail (as in TOPICS, unfilled), and what it does next.
# {item} is the summarised "colour product"; {p} the product alone.
_PROBLEM_SAYS = {
    "arrived broken": _opts("sorry the {item} arrived broken|sorry your {item} was damaged"),
    "wrong item sent": _opts("sorry we mixed up your {item}|sorry, that was not your {item}"),
    "stopped working": _opts("sorry your {item} stopped working|sorry the {item} failed so soon"),
    "not as described": _opts("sorry the {item} was not as described|sorry the {item} did not match the listing"),
    "missing parts": _opts("sorry the {item} came with parts missing|sorry parts of your {item} were missing"),
}
REPLIES: dict[str, dict] = {
    "return": dict(says=_PROBLEM_SAYS, does=_opts(
        "i have started your return and refund|a prepaid return label is in your email"
        "|send it back with our label for a full refund|you will be paid back once it reaches us")),
    "replacement": dict(says=_PROBLEM_SAYS, does=_opts(
        "a new one ships today at no cost|a replacement is on its way, keep the old one"
        "|a replacement should reach you in three days|we will swap it for a new one right away")),
    "repair": dict(says={
        "will not turn on": _opts("sorry your {item} will not turn on|sorry the {item} no longer powers on"),
        "makes a loud noise": _opts("sorry your {item} is so noisy|sorry about the noise from your {item}"),
        "button stuck": _opts("sorry the button on your {item} is stuck|sorry your {item} has a stuck button"),
        "keeps shutting off": _opts("sorry your {item} keeps shutting off|sorry the {item} keeps turning itself off"),
        "battery drains fast": _opts("sorry the {item} battery drains so fast|sorry the {item} runs flat so quickly"),
    }, does=_opts("it is under guarantee, so the repair is free|send it in with our label for a free fix"
                  "|a courier will collect it for a free repair")),
    "delivery": dict(says={
        "ordered {dur} ago": _opts("sorry your {item} is taking so long|sorry, {dur} is far too long to wait"),
        "tracking not updated": _opts("sorry the {item} tracking has stalled|sorry there is no news on your {item}"),
        "marked as delivered": _opts("sorry your {item} never reached you|sorry your {item} went missing"),
    }, does=_opts("i asked the courier and will email you tomorrow|i have opened a trace with the courier"
                  "|we will send another if it is not there soon")),
    "cancellation": dict(says={
        "ordered by mistake": _opts("no problem, mistakes happen|no worries at all"),
        "found it cheaper": _opts("sorry we could not beat that price|understood, thanks for letting us know"),
        "no longer needed": _opts("understood, plans change|no problem at all"),
        "delivery too slow": _opts("sorry the wait was so long|sorry it would have taken so long"),
    }, does=_opts("i have cancelled your order for the {item}|your order for the {item} is now cancelled"
                  "|the {item} is cancelled and you will not be charged")),
    "billing": dict(says={
        "charged twice": _opts("sorry you were charged twice for the {item}. i have refunded the second payment"
                               "|sorry about the double charge for the {item}. the extra payment is on its way back"),
        "wrong price charged": _opts("sorry you paid too much for the {item}. i have refunded the difference"
                                     "|sorry about the price of the {item}. the difference is back on your card"),
        "return not paid": _opts("sorry your money for the returned {item} is late. i have sent it today"
                                 "|sorry about the delay. your money for the {item} has now been paid back"),
    }, does=()),
    "account": dict(says={
        "cannot log in": _opts("sorry you cannot sign in. i have reset your password, so check your email for a link"
                               "|sorry about the login trouble. please use the reset link i just sent"),
        "no password reset email": _opts("sorry the reset email never came. i have sent a new one, so check spam too"
                                         "|sorry about that. a fresh reset link is on its way to your inbox"),
        "close account": _opts("sorry to see you go. your account is now closed"
                               "|done, your account is closed and your data will be deleted"),
        "change email address": _opts("happy to help. reply with the new address and i will update it"
                                      "|sure, please confirm the new email with the link i just sent"),
    }, does=()),
    "address": dict(says={
        "to {street}": _opts("done, your {item} now goes to {street}|no problem, the {item} will ship to {street}"),
    }, does=_opts("a new confirmation email is on its way|it will ship as planned")),
    "question": dict(says={
        "can it get wet": _opts("the {item} can handle light rain, but please do not put it under water"
                                "|yes, the {item} is fine in the rain, just dry it afterwards"),
        "guarantee length": _opts("the {item} comes with a {years} year guarantee"
                                  "|every {p} we sell has a {years} year guarantee"),
        "other colors available": _opts("the {p} also comes in {c1} and {c2}|yes, you can also get the {p} in {c1}"),
        "back in stock date": _opts("we expect the {item} back in stock within {when}"
                                    "|more of the {item} should arrive within {when}"),
        "how to clean": _opts("wipe the {item} with a damp cloth and let it dry"
                              "|a soft damp cloth is all the {item} needs, no soap"),
    }, does=()),
    "feedback": dict(says={
        "fast delivery": _opts("thank you! glad your {item} arrived so quickly"
                               "|thanks, great to hear the {item} came fast"),
        "great quality": _opts("thank you! glad you like your {item}|thanks, we are happy the {item} is so well made"),
        "helpful support": _opts("thank you! glad our team helped with your {item}"
                                 "|thanks, great to hear our team was helpful"),
        "good packaging": _opts("thank you! glad your {item} arrived well packed"
                                "|thanks, we take care packing every {p}"),
    }, does=_opts("i will pass this on to the team|enjoy it|we hope to see you again")),
}
REPLY_OPENERS = {"question": _opts("good question!|thanks for asking.|happy to help.")}
REPLY_CLOSERS = _opts("anything else, just reply here.|thanks for your patience.|let me know if you need anything else."
                      "|have a good day.")
YEARS = _opts("one|two|three")
RESPONSE_MAX_WORDS = 20
_SIGNED = re.compile(r"(?:regards|thanks|best|cheers),? ([a-z]+)$")


def _reply(rng: random.Random, topic: str, text: str, case: dict) -> str:
    """The agent's reply to `text`: what it is about, what happens next, at most `RESPONSE_MAX_WORDS` words."""
    spec = REPLIES[topic]
    colour, product, fields = case["colour"], case["product"], case["fields"]
    others = [c for c in COLOURS if c != colour]
    c1, c2 = rng.sample(others, 2)
    values = dict(item=f"{colour} {product}", p=product, street=fields["street"], dur=fields["dur"], c1=c1, c2=c2,
                  years=rng.choice(YEARS), when=rng.choice(DURATION))
    body = [_sentence(rng.choice(spec["says"][case["key"]]).format(**values))]
    if spec["does"]:
        body.append(_sentence(rng.choice(spec["does"]).format(**values)))
    signed = _SIGNED.search(text)
    greeting = f"hi {signed.group(1)}," if signed and rng.random() < 0.8 else ("hi," if rng.random() < 0.2 else "")
    opener = rng.choice(REPLY_OPENERS[topic]) if topic in REPLY_OPENERS and rng.random() < 0.5 else ""
    closer = rng.choice(REPLY_CLOSERS) if rng.random() < 0.3 else ""
    parts = dict(greeting=greeting, opener=opener, closer=closer)
    for drop in ("closer", "opener", "greeting"):  # optional parts go first when the reply runs long
        reply = " ".join(part for part in (parts["greeting"], parts["opener"], *body, parts["closer"]) if part)
        if len(reply.split()) <= RESPONSE_MAX_WORDS:
            return reply
        parts[drop] = ""
    return " ".join(body)


def generate_causal(n_rows: int = 2000, seed: int = 19) -> pd.DataFrame:
    """Return `n_rows` (prompt, response) pairs for causal-LM fine-tuning, with columns `prompt`, `response`, `intent`.

    Prompts are support messages drawn as in `generate_seq2seq` (balanced topics, lowercase, 10 to 40 words,
    distinct even ignoring punctuation); a response is a templated agent reply of at most
    `RESPONSE_MAX_WORDS` words that names the item, so a model has to read the prompt, while its wording
    varies so no model can match it exactly. The same arguments always give the same frame.
    Raises ValueError for `n_rows < 10`.
    """
    rng = random.Random(seed)
    # each reply is drawn right after its prompt: the random stream, and so the shipped file, stays as it was
    rows = [(text, _reply(rng, topic, text, case), topic) for topic, text, case in _support_cases(rng, n_rows, "prompts")]
    return pd.DataFrame(rows, columns=["prompt", "response", "intent"])


# The multi-label sample: a message about a device -> every topic it raises, as "label|label" in name order.

MULTILABEL_LABELS: tuple[str, ...] = ("account", "battery", "billing", "damaged", "praise", "refund", "screen",
                                      "shipping")
MULTILABEL_DELIMITER = "|"
ML_DEVICES = _opts("phone|tablet|laptop|smartwatch|e-reader|camera|fitness tracker|handheld console|gps unit")
ML_ITEM_FORMS = _opts("my {c} {p}|the {p}|the {c} {p} i ordered|my new {p}|the {p} i bought from you")
# Per label: clauses that raise it, some without its keyword and some with a "not" that does not negate it.
# Traps: other labels' words in passing ("charging port", "shipped") that do not raise those labels.
ML_CLAUSES: dict[str, tuple[str, ...]] = {
    "account": _opts("i cannot log in to my account|the password reset email never arrives"
                     "|my account got locked after one wrong password|i cannot change the email on my profile"
                     "|the app keeps signing me out|the login codes never reach me|my order history vanished"
                     "|the website does not recognise my username"),
    "battery": _opts("the battery dies after an hour|{item} will not hold a charge|it takes all night to charge"
                     "|{item} runs flat by lunchtime|the battery gets hot while charging"
                     "|{item} shuts down at forty percent|battery life is nowhere near what was advertised"
                     "|the battery does not last a day"),
    "billing": _opts("i was charged twice for {item}|the invoice shows the wrong amount"
                     "|my card was billed after i cancelled the subscription"
                     "|there is a charge on my statement i do not recognise"
                     "|you took payment before {item} even shipped|the price at checkout was higher than listed"
                     "|i was billed for express delivery i never chose|the discount code was not applied"),
    "damaged": _opts("{item} arrived with a cracked corner|the box was crushed and {item} has a deep scratch"
                     "|the casing is dented|{item} came with a big scratch on the back"
                     "|one of the hinges was snapped when i opened the box|the charging port was bent out of shape"
                     "|the back panel was cracked straight out of the packaging|{item} rattles like something broke"),
    "praise": _opts("i love it|your support team has always been brilliant|it is the best gadget i have owned"
                    "|thank you for the great service so far|i have recommended your shop to all my friends"
                    "|the build quality is excellent|five stars for the product itself|setup was quick and painless"),
    "refund": _opts("i want my money back|please refund me in full|i would like to return {item} for a refund"
                    "|how do i get a refund?|please send the money back to my card|i expect a full refund"
                    "|i want to send {item} back and get reimbursed|please pay me back"),
    "screen": _opts("the screen flickers constantly|there are dead pixels in one corner"
                    "|the touchscreen stops responding|the display on {item} is too dim even at full brightness"
                    "|a green line runs down the middle of the screen|the screen goes black while {item} is on"
                    "|text looks blurry whatever the settings|the screen does not respond to touch"
                    "|the picture is washed out and jumpy"),
    "shipping": _opts("{item} arrived a week late|the tracking has not updated in ten days"
                      "|the courier left the parcel at the wrong house|delivery was due on tuesday and nothing yet"
                      "|the parcel is stuck at the depot|you shipped {item} to my old address"
                      "|it took three weeks to get here|the package was marked delivered but never showed up"),
}
# One clause that raises two labels at once.
ML_COMBOS: dict[tuple[str, str], tuple[str, ...]] = {
    ("damaged", "screen"): _opts("the screen arrived cracked|{item} came with a shattered display"),
    ("billing", "refund"): _opts("i was charged twice, please refund the extra payment"
                                 "|please refund the charge i never agreed to"),
    ("damaged", "shipping"): _opts("{item} came two weeks late and scratched|the courier threw the parcel and it "
                                   "arrived dented"),
}
# A topic mentioned only to say it is fine: it does not carry the label.
MULTILABEL_NEGATIONS: dict[str, tuple[str, ...]] = {
    "account": _opts("i can log in fine|my account works fine|no issues with my account"),
    "battery": _opts("the battery is fine|no problem with the battery|battery life is not the issue"),
    "billing": _opts("the payment went through fine|billing is not the issue|i was charged the right amount"),
    "damaged": _opts("it arrived in perfect condition|nothing was damaged|there is not a scratch on it"),
    "praise": _opts("i am not impressed so far|i would not recommend it right now|i cannot say i love it"),
    "refund": _opts("i do not want a refund|i am not asking for my money back|no need for a refund"),
    "screen": _opts("the screen itself is fine|nothing wrong with the display|the screen is not the problem"),
    "shipping": _opts("no problem with the delivery|delivery was on time|the parcel arrived on time"),
}
ML_NEUTRAL = _opts("i bought {item} {when}|i have been a customer for years|this is my first time writing to you"
                   "|i tried calling but nobody picked up|sorry for the long message|my order number is in the email"
                   "|i also ordered a case for {item}|{item} was a gift for my son|i use {item} every day for work")


def _multilabel_message(rng: random.Random, labels: list[str]) -> tuple[str, str]:
    """(message, product): a message that raises exactly `labels`, maybe another topic in negation, and filler."""
    product = rng.choice(ML_DEVICES)
    first = rng.choice(ML_ITEM_FORMS).format(c=rng.choice(COLOURS), p=product)
    clauses: list[str] = []
    pending = list(labels)
    for pair, options in ML_COMBOS.items():
        if set(pair) <= set(pending) and rng.random() < 0.35:
            clauses.append(rng.choice(options))
            pending = [label for label in pending if label not in pair]
    clauses += [rng.choice(ML_CLAUSES[label]) for label in pending]
    rng.shuffle(clauses)
    if rng.random() < 0.35:
        negated = rng.choice([label for label in MULTILABEL_LABELS if label not in labels])
        clauses.insert(rng.randrange(len(clauses) + 1), rng.choice(MULTILABEL_NEGATIONS[negated]))
    for filler in rng.sample(ML_NEUTRAL, rng.choices((0, 1, 2), weights=(0.4, 0.45, 0.15))[0]):
        clauses.insert(rng.randrange(len(clauses) + 1), filler)
    named = False  # the first clause that names the item says which one; later ones say "it" or "the {p}"
    filled = []
    for clause in clauses:
        item = rng.choice(("it", f"the {product}")) if named else first
        named = named or "{item}" in clause
        filled.append(clause.format(item=item, when=rng.choice(WHEN)))
    sentences = [_sentence(c) for c in filled]
    if rng.random() < 0.4:
        sentences.insert(0, rng.choice(GREETING))
    if rng.random() < 0.4:
        sentences.append(rng.choice(SIGNOFF).format(name=rng.choice(NAMES)))
    text = " ".join(sentences)
    if rng.random() < 0.15:
        text = re.sub(r"\s+", " ", re.sub(r"[.,?!]", " ", text)).strip()
    return text, product


def generate_multilabel(n_rows: int = 2000, seed: int = 23, label_noise: float = 0.02) -> pd.DataFrame:
    """Return `n_rows` messages with columns `text`, `labels` (names from `MULTILABEL_LABELS`, sorted, joined by
    `MULTILABEL_DELIMITER`) and `product`.

    Each message raises 1 to 3 topics, in paraphrase; about a third also mention another topic only to say it is
    fine ("no problem with the delivery"), which carries no label. Then `round(n_rows * label_noise)` rows with
    two or more labels, chosen at random, lose one. Messages are lowercase and no two are equal, even ignoring
    punctuation. The same arguments always give the same frame.
    Raises ValueError for `n_rows < 10` or `label_noise` outside [0, 0.5).
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 10:
        raise ValueError(f"n_rows must be an integer >= 10, got {n_rows!r}")
    if not 0 <= label_noise < 0.5:
        raise ValueError(f"label_noise must be in [0, 0.5) (a fraction of rows to lose a label), got {label_noise!r}")
    rng = random.Random(seed)
    seen: set[str] = set()  # membership only; never iterated, so order cannot leak in
    rows: list[tuple[str, list[str], str]] = []
    for _ in range(n_rows):
        labels = sorted(rng.sample(MULTILABEL_LABELS, rng.choices((1, 2, 3), weights=(0.35, 0.42, 0.23))[0]))
        for _ in range(1000):
            text, product = _multilabel_message(rng, labels)
            key = _KEY.sub(" ", text.lower()).strip()
            if key not in seen:
                break
        else:
            raise RuntimeError(f"could not produce {n_rows} distinct messages; got {len(rows)}")
        seen.add(key)
        rows.append((text, labels, product))
    several = [labels for _, labels, _ in rows if len(labels) > 1]
    for labels in rng.sample(several, min(len(several), round(n_rows * label_noise))):
        labels.remove(rng.choice(labels))
    return pd.DataFrame([(text, MULTILABEL_DELIMITER.join(labels), product) for text, labels, product in rows],
                        columns=["text", "labels", "product"])



# The regression sample: a product review -> its rating, 1.0 to 5.0, read from how it praises and criticises.

# Adjectives for an aspect: (words, weight, weight after "not"); negative weights criticise. "Not great" is
# milder than "not good", and "not terrible" is faint praise.
RT_ADJECTIVES: tuple[tuple[tuple[str, ...], float, float], ...] = (
    (_opts("outstanding|superb|fantastic|brilliant|amazing|excellent|terrific|top-notch|first-rate"), 1.3, -0.4),
    (_opts("great|impressive|lovely|wonderful"), 1.0, -0.5),
    (_opts("good|solid|pleasant|nice"), 0.7, -0.7),
    (_opts("decent|fine|acceptable|passable"), 0.4, -0.9),
    (_opts("mediocre|underwhelming|so-so|uninspiring"), -0.5, 0.4),
    (_opts("disappointing|weak|subpar|frustrating|annoying"), -0.9, 0.5),
    (_opts("poor|bad|lousy"), -1.0, 0.5),
    (_opts("terrible|awful|dreadful|horrible|abysmal|pathetic"), -1.3, 0.3),
)
# Adverbs that scale the adjective after them: (adverb, factor); softeners only where they read naturally.
RT_STRONG = (("really ", 1.3), ("very ", 1.3), ("truly ", 1.35), ("incredibly ", 1.45), ("extremely ", 1.45))
RT_SOFT = {1: (("fairly ", 0.7), ("reasonably ", 0.7), ("mostly ", 0.75)),
           -1: (("a bit ", 0.6), ("slightly ", 0.55), ("somewhat ", 0.65), ("a little ", 0.6))}
# "I {verb} the {aspect}".
RT_VERBS = (("love", 1.2), ("adore", 1.3), ("really like", 0.9), ("like", 0.6), ("quite like", 0.5),
            ("dislike", -0.8), ("really dislike", -1.1), ("hate", -1.3), ("can't stand", -1.3))
# Negated or indirect judgements of an aspect: (template, weight).
RT_IDIOMS = (("I can't complain about the {a}", 0.7), ("no complaints about the {a}", 0.8),
             ("I never had a problem with the {a}", 0.9), ("I could not ask for a better {a}", 1.3),
             ("there is nothing good about the {a}", -1.2), ("the {a} is far from good", -1.0),
             ("I was never happy with the {a}", -1.0), ("the {a} leaves a lot to be desired", -0.8))
# A closing verdict: (template, weight); the reviewer picks the one closest to their overall tone.
RT_VERDICTS = (("I would {again} in a heartbeat", 1.4), ("Highly recommended", 1.3), ("Worth every penny", 1.2),
               ("Overall, I am {happy} with it", 1.0), ("On balance, a keeper", 0.7), ("It does the job", 0.3),
               ("It is okay, nothing special", 0.0), ("Average at best", -0.3), ("Not sure I would {again}", -0.5),
               ("Overall, not worth it", -1.0), ("{back}", -1.2), ("A complete waste of money", -1.4),
               ("I will never {again}", -1.4))
RT_NEUTRAL = _opts("{who} agrees with me|I had read mixed reviews beforehand|this is my first review"
                   "|I paid full price|I am writing this a few days later|I will keep this short")
RT_SCALE = 1.6  # rating = 3 + RT_SCALE * the weighted mean of a review's judgements, within [1, 5]
RT_NOISE_SD = 0.3  # Gaussian noise on the rating: no model can read it from the text


def _rated_clause(rng: random.Random, aspect: tuple[str, str, str], sign: int) -> tuple[str, float]:
    """A clause that praises (`sign` 1) or criticises (-1) `aspect`, and how far it moves the rating."""
    name, good, bad = aspect
    form = rng.choices(("phrase", "adjective", "verb", "negated", "idiom"), weights=(0.25, 0.35, 0.12, 0.15, 0.13))[0]
    if form == "phrase":
        return (good if sign > 0 else bad), 1.0 * sign
    if form == "verb":
        verb, weight = rng.choice([v for v in RT_VERBS if v[1] * sign > 0])
        return f"I {verb} the {name}", weight
    if form == "idiom":
        template, weight = rng.choice([i for i in RT_IDIOMS if i[1] * sign > 0])
        return template.format(a=name), weight
    if form == "negated":
        words, _, weight = rng.choice([t for t in RT_ADJECTIVES if t[2] * sign > 0])
        at_all = rng.random() < 0.3
        return f"the {name} is not {rng.choice(words)}{' at all' if at_all else ''}", weight * (1.6 if at_all else 1)
    words, weight, _ = rng.choice([t for t in RT_ADJECTIVES if t[1] * sign > 0])
    # Not "extremely fine" or "fairly outstanding".
    adverbs = (("", 1.0),) * 3 + (RT_SOFT[sign] if abs(weight) <= 1 else ()) + (RT_STRONG if abs(weight) > 0.4 else ())
    adverb, factor = rng.choice(adverbs)
    return f"the {name} is {adverb}{rng.choice(words)}", weight * factor


def _rated_review(rng: random.Random, domain: str) -> tuple[str, float]:
    """A review and its rating before noise: 3 plus the weighted mean of its judgements, within [1, 5]."""
    d = DOMAINS[domain]
    item = rng.choice(d["items"])
    tone = rng.uniform(-1, 1)  # how the reviewer feels overall: the share of aspects praised
    aspects = rng.sample(d["aspects"], rng.choices((1, 2, 3, 4), weights=(0.2, 0.35, 0.3, 0.15))[0])
    judged = [_rated_clause(rng, a, 1 if rng.random() < (1 + tone) / 2 else -1) for a in aspects]
    weights = [w for _, w in judged]
    sentences: list[str] = []
    i = 0
    while i < len(judged):
        x, wx = judged[i]
        if i + 1 < len(judged) and rng.random() < 0.5:
            y, wy = judged[i + 1]
            joint = ", and " if wx * wy > 0 else rng.choice((", but ", "; however, ", ", yet "))
            sentences.append(_cap(x + joint + y) + ".")
            i += 2
        else:
            sentences.append(_cap(x) + ".")
            i += 1
    fields = dict(again=d["again"], back=rng.choice(d["back"]), happy=rng.choice(WORDS["happy"]))
    total, count = sum(weights), len(weights)
    if rng.random() < 0.6:
        feeling = 1.4 * tone + rng.gauss(0, 0.3)
        template, weight = min(RT_VERDICTS, key=lambda v: abs(v[1] - feeling))
        sentences.insert(0 if rng.random() < 0.15 else len(sentences), _cap(template.format(**fields)) + ".")
        total, count = total + 1.5 * weight, count + 1.5
    if rng.random() < 0.3:
        sentences.insert(rng.randrange(len(sentences) + 1),
                         _cap(rng.choice(RT_NEUTRAL).format(who=rng.choice(WORDS["who"]))) + ".")
    if rng.random() < 0.4:
        sentences.insert(0, _cap(d["intro"].format(item=item, when=rng.choice(WORDS["when"]))) + ".")
    text = " ".join(sentences)
    # Surface noise is rating-independent so it carries no signal.
    if rng.random() < 0.05:
        text = _typo(rng, text)
    if rng.random() < 0.1:
        text = text.lower()
    return text, min(5.0, max(1.0, 3 + RT_SCALE * total / count))


def generate_ratings(n_rows: int = 2000, seed: int = 29) -> pd.DataFrame:
    """Return `n_rows` reviews with columns `text`, `rating` (1.0 to 5.0, one decimal) and `domain`.

    The rating follows the review: each aspect praised or criticised, how strongly (adjective, "really",
    "a bit"), negations ("not terrible"), and a closing verdict, averaged, so mixed reviews land in the
    middle; then Gaussian noise (sd `RT_NOISE_SD`) keeps any model short of a perfect fit. No two texts
    are equal, even ignoring case and punctuation. The same arguments always give the same frame.
    Raises ValueError for `n_rows < 10`.
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 10:
        raise ValueError(f"n_rows must be an integer >= 10, got {n_rows!r}")
    rng = random.Random(seed)
    domains = list(DOMAINS)
    seen: set[str] = set()  # membership only; never iterated, so order cannot leak in
    rows: list[tuple[str, float, str]] = []
    for _ in range(n_rows):
        for _ in range(1000):
            domain = rng.choice(domains)
            text, rating = _rated_review(rng, domain)
            key = _KEY.sub(" ", text.lower()).strip()
            if key not in seen:
                break
        else:
            raise RuntimeError(f"could not produce {n_rows} distinct reviews; got {len(rows)}")
        seen.add(key)
        rows.append((text, round(min(5.0, max(1.0, rating + rng.gauss(0, RT_NOISE_SD))), 1), domain))
    return pd.DataFrame(rows, columns=["text", "rating", "domain"])


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    return path


def write_sample(path: Path, n_rows: int = 3000, seed: int = 13) -> Path:
    """Write `generate_reviews(n_rows, seed)` to `path` as UTF-8 CSV without an index; return `path`.

    Line endings are always "\\n", so the same seed gives byte-identical files on every platform.
    """
    return _write_csv(generate_reviews(n_rows, seed), path)


def write_seq2seq_sample(path: Path, n_rows: int = 2000, seed: int = 17) -> Path:
    """Write `generate_seq2seq(n_rows, seed)` to `path` exactly as `write_sample` writes reviews; return `path`."""
    return _write_csv(generate_seq2seq(n_rows, seed), path)


def write_causal_sample(path: Path, n_rows: int = 2000, seed: int = 19) -> Path:
    """Write `generate_causal(n_rows, seed)` to `path` exactly as `write_sample` writes reviews; return `path`."""
    return _write_csv(generate_causal(n_rows, seed), path)


def write_multilabel_sample(path: Path, n_rows: int = 2000, seed: int = 23) -> Path:
    """Write `generate_multilabel(n_rows, seed)` to `path` exactly as `write_sample` writes reviews; return `path`."""
    return _write_csv(generate_multilabel(n_rows, seed), path)


def write_ratings_sample(path: Path, n_rows: int = 2000, seed: int = 29) -> Path:
    """Write `generate_ratings(n_rows, seed)` to `path` exactly as `write_sample` writes reviews; return `path`."""
    return _write_csv(generate_ratings(n_rows, seed), path)


# `tuneline sample --kind NAME`: each shipped sample's writer and file, by the name the CLI takes.
SAMPLES: dict[str, tuple] = {
    "reviews": (write_sample, SAMPLE_PATH), "seq2seq": (write_seq2seq_sample, SEQ2SEQ_SAMPLE_PATH),
    "causal": (write_causal_sample, CAUSAL_SAMPLE_PATH), "multilabel": (write_multilabel_sample, MULTILABEL_SAMPLE_PATH),
    "ratings": (write_ratings_sample, RATINGS_SAMPLE_PATH),
}


if __name__ == "__main__":
    for write, path in SAMPLES.values():
        print(write(path))
