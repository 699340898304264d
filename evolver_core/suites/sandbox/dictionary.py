"""Wordwell: a dictionary, the sandbox's stand-in for WebVoyager's Cambridge Dictionary tasks.

Search (an exact match jumps to the entry), an A-Z browse index with pagination, a word of
the day, entries (pronunciation, part of speech, numbered senses with examples, synonyms,
inflections, etymology, first known use) and a word list kept on the server
(`/__state` -> {"wordlist": [word]}). The words are invented from a fixed seed, so an agent
cannot answer from memory. Each word is its own entity (`dictionary:word:<word>`); synonyms
are drawn from the same pool, so a test word never names a train word. Pages:
`templates/dictionary/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from string import ascii_lowercase
from typing import Any, Iterable
from urllib.parse import quote

from evolver_core.suites.sandbox.spec import Pools, TaskSpec, answer, answer_gold, click, search, state_gold, template
from evolver_core.suites.sandbox.web import (
    Request, Response, Route, Site, paginate, redirect, route, save_item, unsave_item
)

SEED = 404
N_WORDS = 160
PER_PAGE = 20
SEARCH_LABEL = "Search Wordwell"

ONSETS = (
    "b",
    "br",
    "c",
    "cl",
    "d",
    "dr",
    "f",
    "fl",
    "g",
    "gr",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "pl",
    "qu",
    "r",
    "s",
    "sc",
    "sl",
    "st",
    "t",
    "tr",
    "v",
    "w",
    "z",
)
NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "y")
CODAS = ("", "", "", "n", "r", "l", "m", "st", "nd", "sk", "th", "ct")
ENDINGS = {
    "noun": ("ment", "ity", "on", "el", "ance", "ard", ""),
    "verb": ("ate", "ify", "en", "ize", ""),
    "adjective": ("ous", "ive", "ic", "al", "ish"),
    "adverb": ("ously", "ively", "ically", "ishly"),
}
SENSES = {
    "noun": (
        "a small {material} tool used to {task}",
        "the feeling of {feeling} after {event}",
        "a person who {habit}",
        "a narrow {place} where {creatures} gather",
        "an old custom of {doing} at {event}",
    ),
    "verb": (
        "to {task} carefully before {event}",
        "to move {manner} through the {place}",
        "to speak {manner} about {topic}",
        "to gather {creatures} in the {place}",
    ),
    "adjective": (
        "feeling {feeling} in a way that others notice",
        "made of {material} and easily broken",
        "typical of the {place} at dusk",
        "slightly too fond of {topic}",
    ),
    "adverb": ("in a {manner} way", "with great {feeling}", "as if walking through the {place}"),
}
SLOTS = {
    "material": ("copper", "birch", "clay", "woollen", "glass", "reed", "bone"),
    "task": ("mend nets", "sort seeds", "polish lanterns", "stack firewood", "tune bells", "trim candles", "fold maps"),
    "doing": (
        "mending nets",
        "sorting seeds",
        "polishing lanterns",
        "stacking firewood",
        "tuning bells",
        "folding maps",
    ),
    "feeling": ("quiet pride", "mild regret", "restless joy", "sleepy calm", "nervous hope", "gentle envy"),
    "event": (
        "a long journey",
        "a winter storm",
        "a village feast",
        "the first frost",
        "a family quarrel",
        "the harvest",
    ),
    "habit": (
        "collects broken clocks",
        "hums while working",
        "arrives too early",
        "keeps lists of clouds",
        "never finishes soup",
    ),
    "place": ("valley", "harbour", "orchard", "stairwell", "marsh", "attic", "bridge"),
    "creatures": ("sparrows", "moths", "goats", "herons", "beetles", "otters"),
    "manner": ("slowly", "cheerfully", "stubbornly", "quietly", "clumsily", "briskly"),
    "topic": ("old maps", "weather", "rare stamps", "tea", "gossip", "bridges"),
}
EXAMPLES = {
    "noun": "Nobody expected to find a {word} in the {place}.",
    "verb": "We had to {word} before anyone reached the {place}.",
    "adjective": "The {place} looked oddly {word} that morning.",
    "adverb": "He walked {word} towards the {place}.",
}
LANGUAGES = (
    "Old Norse",
    "Middle French",
    "Latin",
    "Ancient Greek",
    "Old English",
    "Middle Dutch",
    "Italian",
    "Old Irish",
)
GLOSSES = ("to bind", "small fire", "river bank", "to whisper", "grey cloth", "sharp edge", "a gathering", "salt marsh")


@dataclass(frozen=True)
class Word:
    word: str
    pos: str
    syllables: tuple[str, ...]
    senses: tuple[tuple[str, str], ...]  # (definition, example)
    language: str
    root: str
    gloss: str
    first_use: int
    inflection: str  # plural for nouns, past tense for verbs, comparative note otherwise ("")

    @property
    def key(self) -> str:
        return f"dictionary:word:{self.word}"


def _fill(template: str, rng: Random) -> str:
    return template.format(**{k: rng.choice(v) for k, v in SLOTS.items()})


def _plural(word: str) -> str:
    if word.endswith(("s", "x", "sh", "ch", "th")):
        return f"{word}es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{word[:-1]}ies"
    if word.endswith("on"):
        return f"{word[:-2]}a"  # a Greek-style plural, for realism
    return f"{word}s"


def _past(word: str) -> str:
    if word.endswith("e"):
        return f"{word}d"
    if word.endswith("y"):
        return f"{word[:-1]}ied"
    return f"{word}ed"


def _make_word(rng: Random, pos: str) -> tuple[str, tuple[str, ...]]:
    parts = [rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS) for _ in range(rng.randint(1, 2))]
    ending = rng.choice(ENDINGS[pos])
    if ending:
        parts.append(ending)
    return "".join(parts), tuple(parts)


def make_words(seed: int = SEED) -> list[Word]:
    rng = Random(seed)
    seen: set[str] = set()
    definitions: set[str] = set()
    words: list[Word] = []
    while len(words) < N_WORDS:
        pos = rng.choice(("noun", "noun", "verb", "verb", "adjective", "adverb"))
        word, syllables = _make_word(rng, pos)
        if word in seen or not 5 <= len(word) <= 12:
            continue
        senses = tuple(dict.fromkeys(_fill(t, rng) for t in rng.sample(SENSES[pos], rng.randint(1, 3))))
        if senses[0] in definitions:
            continue
        seen.add(word)
        definitions.add(senses[0])
        examples = tuple(EXAMPLES[pos].format(word=word, place=rng.choice(SLOTS["place"])) for _ in senses)
        words.append(
            Word(
                word=word,
                pos=pos,
                syllables=syllables,
                senses=tuple(zip(senses, examples, strict=True)),
                language=rng.choice(LANGUAGES),
                root=word[: max(3, len(word) - 3)] + rng.choice(("a", "us", "ir", "os")),
                gloss=rng.choice(GLOSSES),
                first_use=rng.randint(1290, 1985),
                inflection=_plural(word) if pos == "noun" else _past(word) if pos == "verb" else "",
            )
        )
    return words


def _synonyms(words: list[Word], pools: Pools) -> dict[str, tuple[str, ...]]:
    """2-3 synonyms per word: other words of the same part of speech and the same pool."""
    rng = Random(f"{SEED}:synonyms")
    out = {}
    for w in words:
        peers = [v.word for v in words if v.pos == w.pos and v.word != w.word and pools.of(v.key) == pools.of(w.key)]
        out[w.word] = tuple(rng.sample(peers, min(len(peers), rng.randint(2, 3))))
    return out


class Dictionary(Site):
    name = "dictionary"
    title = "Wordwell Dictionary"
    brand = "Wordwell"
    search_label = SEARCH_LABEL
    search_placeholder = "Look up a word"
    page_globals = {"letters": [(c.upper(), f"/browse/{c}") for c in ascii_lowercase]}

    def __init__(self, seed: int = SEED):
        self.words = sorted(make_words(seed), key=lambda w: w.word)
        self.by_word = {w.word: w for w in self.words}
        self.pools = Pools(self.name, (w.key for w in self.words))
        self.synonyms = _synonyms(self.words, self.pools)
        self.word_of_the_day = Random(seed).choice(self.words)

    # --- serving -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("GET", "/", self.home),
            route("GET", "/search", self.search_page),
            route("GET", r"/browse/(?P<letter>[a-z])", self.browse),
            route("GET", r"/define/(?P<word>[a-z]+)", self.entry),
            route("GET", "/wordlist", self.wordlist),
            route("POST", "/wordlist/add", self.add_word),
            route("POST", "/wordlist/remove", self.remove_word),
        ]

    def initial_state(self) -> dict[str, Any]:
        return {"wordlist": []}

    def home(self, req: Request) -> Response:
        recent = _links(w.word for w in self.words[::23])
        return self.render(req, "home", "Dictionary", w=self.word_of_the_day, recent=recent)

    def search_page(self, req: Request) -> Response:
        q = req.arg("q").lower()
        if q in self.by_word:
            return redirect(f"/define/{quote(q)}")
        close = [w.word for w in self.words if q and (w.word.startswith(q[:3]) or q in w.word)][:15]
        return self.render(req, "search", f"Search: {q}", q=q, close=_links(close))

    def browse(self, req: Request, letter: str) -> Response:
        found = [w.word for w in self.words if w.word.startswith(letter)]
        page = paginate(found, req.page_number(), PER_PAGE)
        links = _links(page.items)
        return self.render(req, "browse", f"Browse {letter.upper()}", letter=letter, page=page, links=links)

    def entry(self, req: Request, word: str) -> Response:
        w = self.by_word.get(word)
        if w is None:
            return self.not_found(req)
        listed = word in req.state["wordlist"]
        return self.render(req, "entry", w.word, w=w, listed=listed, synonyms=_links(self.synonyms[word]))

    def wordlist(self, req: Request) -> Response:
        links = _links(req.state["wordlist"])
        return self.render(req, "saved", "My word list", links=links, empty="Your word list is empty.")

    def add_word(self, req: Request) -> Response:
        word = req.form.get("word", "")
        if word not in self.by_word:
            return self.not_found(req)
        return save_item(req, "wordlist", word, f"Added {word} to your word list.", f"/define/{word}")

    def remove_word(self, req: Request) -> Response:
        word = req.form.get("word", "")
        return unsave_item(req, "wordlist", word, f"/define/{word}" if word in self.by_word else "/wordlist")

    # --- tasks ---------------------------------------------------------------------------

    def opening(self, w: Word) -> list[dict[str, Any]]:
        return [search(SEARCH_LABEL, w.word, f"I'll look up '{w.word}' in the dictionary.")]

    @template("part-of-speech")
    def _pos_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                w,
                f"What part of speech is the word '{w.word}' according to Wordwell?",
                answer_gold(w.pos),
                answer(w.pos, w.pos, f"The entry labels '{w.word}' as a {w.pos}."),
            )
            for w in self.words
        ]

    @template("first-definition")
    def _definition_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                w,
                f"What is the first definition of '{w.word}' in the Wordwell dictionary?",
                answer_gold(w.senses[0][0]),
                answer(w.senses[0][0], w.senses[0][0], f"The first sense listed is: {w.senses[0][0]}."),
            )
            for w in self.words
        ]

    @template("first-known-use")
    def _first_use_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                w,
                f"In what year was the word '{w.word}' first used, according to Wordwell?",
                answer_gold(str(w.first_use)),
                answer(
                    str(w.first_use),
                    f"First known use: {w.first_use}",
                    f"The word history gives {w.first_use} as the first known use.",
                ),
            )
            for w in self.words
        ]

    @template("synonym")
    def _synonym_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                f"Give one synonym of '{w.word}' listed on Wordwell.",
                answer_gold(syns[0], *syns[1:]),
                (w.key, *(self.by_word[s].key for s in syns)),
                (
                    *self.opening(w),
                    answer(syns[0], syns[0], f"The entry lists {', '.join(syns)} as synonyms; {syns[0]} is one."),
                ),
            )
            for w in self.words
            if (syns := self.synonyms[w.word])
        ]

    @template("save-word")
    def _save_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                w,
                f"Add the word '{w.word}' to my Wordwell word list.",
                state_gold(wordlist=[w.word]),
                click("Add to word list", "I'll add the word to my word list.", role="button"),
                answer(
                    f"Added {w.word} to the word list.",
                    "to your word list",
                    "The page confirms the word was added, so I'm done.",
                ),
            )
            for w in self.words
        ]

    @template("etymology", test_only=True)
    def _etymology_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                w,
                f"From which language does the word '{w.word}' come, according to Wordwell?",
                answer_gold(w.language),
                answer(w.language, f"from {w.language}", f"The etymology says it comes from {w.language}."),
            )
            for w in self.words
        ]

    @template("plural", test_only=True)
    def _plural_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                w,
                f"What is the plural form of the noun '{w.word}'?",
                answer_gold(w.inflection),
                answer(w.inflection, f"Plural: {w.inflection}", f"The entry gives the plural as {w.inflection}."),
            )
            for w in self.words
            if w.pos == "noun"
        ]


def _links(words: Iterable[str]) -> list[tuple[str, str]]:
    """Each word with the address of its entry."""
    return [(w, f"/define/{w}") for w in words]
