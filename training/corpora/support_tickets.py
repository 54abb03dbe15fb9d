"""A GENERATED corpus of customer-support messages labelled by intent, shipped as code.

This is not real customer data: every message is produced by the deterministic generator below from templates, intent
keyword lists and a large synthetic vocabulary (product codes, names, filler words), so that ``textclf`` has a text
classification task with a realistic shape (about 8k distinct words, 4 to 127 words per message, a Zipf-like word
distribution, off-topic noise and some messages that mention a second intent) without downloading anything.

The same ``seed`` always yields the same messages in the same order, on every machine.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

INTENTS = ("billing", "technical", "shipping", "account")

_TEMPLATES = {
    "billing": [
        "i was charged twice for my {product} subscription this month",
        "please refund the payment for invoice {code} it was a mistake",
        "why is my bill higher than the price on the {product} plan",
        "the credit card charge for order {code} looks wrong to me",
        "can i get a receipt for the annual {product} payment",
        "you billed me after i cancelled the {product} trial",
        "there is an unknown fee on my statement for {product}",
        "how do i change the payment method used for my invoices",
    ],
    "technical": [
        "the {product} app crashes every time i open the settings page",
        "i get error {code} when i try to sync my {product} device",
        "the {product} firmware update failed and now it will not boot",
        "my {product} keeps disconnecting from the wifi network",
        "the screen on the {product} freezes after a few minutes",
        "installation of the {product} driver stops with error {code}",
        "the {product} battery drains very fast since the last update",
        "bluetooth pairing with the {product} does not work anymore",
    ],
    "shipping": [
        "my {product} order {code} has not arrived yet",
        "the tracking number for order {code} shows no updates",
        "the package with my {product} was delivered to the wrong address",
        "can you ship the {product} to a different address",
        "the {product} box arrived damaged and the courier left it outside",
        "how long does express delivery of the {product} take",
        "order {code} says delivered but i never received the parcel",
        "i want to change the delivery date for my {product}",
    ],
    "account": [
        "i cannot log in to my account after resetting the password",
        "please delete my account and all data linked to {code}",
        "how do i change the email address on my {product} profile",
        "my account was locked after too many login attempts",
        "i did not receive the verification code for my account",
        "can i merge two accounts that both own a {product}",
        "someone else may have access to my account {code}",
        "i want to turn on two factor authentication for my login",
    ],
}

_KEYWORDS = {
    "billing": "refund charge charged invoice payment bill billed fee price receipt card statement subscription "
               "overcharged discount coupon vat tax paid",
    "technical": "crash crashes error bug firmware update reboot freeze frozen wifi bluetooth driver install "
                 "battery sync screen broken slow",
    "shipping": "delivery delivered parcel package courier tracking shipped shipment address arrive arrived "
                "warehouse dispatch late lost box",
    "account": "login log password account email profile locked verification username signin authentication "
               "reset security access merge delete",
}

_FILLER = ("hello hi thanks thank you please help team support regards today yesterday again still also really "
           "very just now soon asap urgent kindly sorry issue problem question need want would could should "
           "the a an my your our this that it is was be been have has had not no yes and or but so if when").split()

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


def _pseudo_words(rng: random.Random, count: int) -> list[str]:
    """Distinct pronounceable pseudo-words (product names, places, people): the long tail of the vocabulary."""
    words: set[str] = set()
    ordered: list[str] = []
    while len(ordered) < count:
        syllables = rng.choice((2, 2, 3, 3, 4))
        word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        if rng.random() < 0.3:
            word += rng.choice(_CONSONANTS)
        if word not in words:
            words.add(word)
            ordered.append(word)
    return ordered


@dataclass(frozen=True)
class Example:
    text: str
    label: int


def generate(n: int, seed: int, tail_words: int = 7000, max_words: int = 127) -> list[Example]:
    """``n`` labelled messages; deterministic in (``n``, ``seed``, ``tail_words``, ``max_words``).

    The long-tail vocabulary is drawn from a fixed seed (independent of ``seed``) so that train, validation and test
    corpora generated with different seeds share one vocabulary.
    """
    vocab_rng = random.Random(20260101)
    tail = _pseudo_words(vocab_rng, tail_words)
    # Zipf-like weights over the long tail: a few product names are common, most are rare.
    cum_weights = list(itertools.accumulate(1.0 / (rank + 10) for rank in range(len(tail))))
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        label = rng.randrange(len(INTENTS))
        intent = INTENTS[label]
        product = rng.choices(tail, cum_weights=cum_weights)[0]
        code = f"{rng.choice(_CONSONANTS)}{rng.randrange(1000, 99999)}"
        words = rng.choice(_TEMPLATES[intent]).format(product=product, code=code).split()
        # sprinkle intent keywords, filler and long-tail words around the core sentence
        extra = rng.randrange(0, max(1, max_words - len(words)))
        extra = min(extra, rng.choice((4, 8, 16, 32, 64, 120)))
        keywords = _KEYWORDS[intent].split()
        for _ in range(extra):
            roll = rng.random()
            if roll < 0.12:
                token = rng.choice(keywords)
            elif roll < 0.55:
                token = rng.choice(_FILLER)
            else:
                token = rng.choices(tail, cum_weights=cum_weights)[0]
            words.insert(rng.randrange(len(words) + 1), token)
        # some messages mention a second intent: realistic ambiguity, keeps accuracy below 100 %
        if rng.random() < 0.15:
            other = INTENTS[rng.randrange(len(INTENTS))]
            if other != intent:
                words.insert(rng.randrange(len(words) + 1), rng.choice(_KEYWORDS[other].split()))
        words = words[:max_words]
        if rng.random() < 0.5:
            words[0] = words[0].capitalize()
        text = " ".join(words) + rng.choice((".", "!", "?", "", " thanks."))
        examples.append(Example(text, label))
    return examples


def write_jsonl(path, n: int, seed: int) -> int:
    """Write ``n`` generated messages as ``{"text": ..., "label": "<intent>"}`` lines (the format ``python -m
    training --from-pretrained ... --data`` and the sidecar read), atomically; returns the number written."""
    import json

    from common.files import atomic_write_text

    lines = [json.dumps({"text": e.text, "label": INTENTS[e.label]}) + "\n" for e in generate(n, seed)]
    atomic_write_text(path, "".join(lines))
    return len(lines)


if __name__ == "__main__":  # python -m training.corpora.support_tickets OUT.jsonl COUNT SEED
    import sys

    if len(sys.argv) != 4:
        sys.exit("usage: python -m training.corpora.support_tickets OUT.jsonl COUNT SEED")
    print(f"wrote {write_jsonl(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))} labelled messages to {sys.argv[1]}")
