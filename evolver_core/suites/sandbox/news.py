"""The Morning Ledger: a news site, the sandbox's stand-in for WebVoyager's BBC News tasks.

Section fronts with newest/oldest sorting and a month archive, search with section facets,
articles (author, date, reading time, tags), author pages, a reading list and newsletter
sign-ups kept on the server (`/__state` -> {"saved": [slug], "subscriptions": {email: [name]}}).
Articles come from a fixed seed. Entities are pooled by author (`news:author:<slug>`, articles
as `news:author:<slug>/article:<slug>`); newsletter tasks use invented readers
(`news:reader:<email>`). Pages: `templates/news/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from random import Random
from typing import Any, Callable

from evolver_core.suites.sandbox.spec import (
    Pools, TaskSpec, answer, answer_gold, click, fill, search, state_gold, template
)
from evolver_core.suites.sandbox.web import (
    Facet, Request, Response, Route, Site, paginate, redirect, route, save_item, url, words
)

SEED = 505
N_ARTICLES = 210
PER_PAGE = 10
SEARCH_LABEL = "Search the Ledger"
YEAR = 2024

AUTHORS = {
    "World": ("Priya Raman", "Tobias Wendt", "Amara Okafor"),
    "Business": ("Helen Marsh", "Diego Salas", "Yuki Arai"),
    "Technology": ("Ravi Menon", "Clara Voss", "Owen Pryce"),
    "Science": ("Leila Haddad", "Martin Kovac", "Sara Lindholm"),
    "Sports": ("Jack Turner", "Nadia Petrova", "Ben Achebe"),
    "Culture": ("Rosa Delgado", "Felix Armitage", "Mei Chen"),
}
SLOTS = {
    "country": ("Valdoria", "Norland", "Estavia", "Kirmania", "Solvenia", "Marovia", "Tarsil", "Ostrana"),
    "company": (
        "Brightwave",
        "Corvex",
        "Halden Motors",
        "Lumina Bank",
        "Orbisoft",
        "Pellar Foods",
        "Quillon",
        "Stratacom",
        "Vantor Air",
    ),
    "product": (
        "folding phone",
        "smart thermostat",
        "electric scooter",
        "AI assistant",
        "laptop",
        "satellite router",
        "fitness ring",
    ),
    "team": (
        "Riverton Rovers",
        "Eastport Eagles",
        "Hollow Bay Hawks",
        "Kingsford United",
        "Marlow City",
        "Redcliff Rangers",
        "Stonebridge FC",
    ),
    "athlete": ("Jonah Akers", "Mila Sorensen", "Tariq Bello", "Elena Rusu", "Kai Nakamura", "Ines Duarte"),
    "city": ("Port Alder", "Greymouth", "Lindenhall", "Caspia", "Northam", "Brightwater"),
    "artist": ("Juno Vale", "The Paper Lanterns", "Oskar Brandt", "Lila Moreno", "Velvet Static"),
    "title": ("Glass Harbour", "Slow Weather", "Northern Lights", "Paper Moons", "The Long Field", "Quiet Engines"),
    "deal": ("a trade pact", "a fishing accord", "a water-sharing plan", "a rail link", "a climate pledge"),
    "thing": ("coral reefs", "ancient rivers", "the ocean floor", "glacier melt", "bird migration"),
    "habit": ("daily walking", "afternoon naps", "cold showers", "gardening", "reading aloud"),
    "outcome": ("sleep", "memory", "mood", "heart health"),
    "animal": ("whale", "sea turtle", "albatross", "seal"),
    "topic": ("maritime history", "early photography", "folk textiles", "city maps", "jazz posters"),
    "stage": ("final", "semi-finals", "quarter-finals"),
    "event": ("marathon", "10,000m", "high jump", "triathlon"),
}
HEADLINES = {
    "World": (
        "{country} and {country2} agree to {deal} after {n} weeks of talks",
        "Floods in {city} force thousands from their homes",
        "{country} opens new border crossing with {country2}",
        "{country} votes in snap election as turnout rises",
    ),
    "Business": (
        "{company} shares jump {n}% after quarterly results",
        "{company} to cut {n}00 jobs in restructuring",
        "{company} agrees to buy {company2} for ${n} billion",
        "Central bank of {country} holds rates at {n}%",
    ),
    "Technology": (
        "{company} unveils {product} to rival {company2}",
        "{company}'s new {product} promises {n}-hour battery",
        "Regulators in {country} probe {company} over data use",
        "{company} opens AI lab in {city}",
    ),
    "Science": (
        "Astronomers spot bright comet over {city}",
        "Study links {habit} to better {outcome}",
        "Researchers in {city} map {thing} in record detail",
        "Rare {animal} sighted off the coast of {country}",
    ),
    "Sports": (
        "{team} beat {team2} {n}-{m} to reach the {stage}",
        "{athlete} sets {event} record in {city}",
        "{team} sign {athlete} on {n}-year deal",
        "{athlete} retires after {n} seasons",
    ),
    "Culture": (
        "{artist}'s new album '{title}' tops the charts",
        "{city} museum opens exhibit on {topic}",
        "Review: '{title}' is a quiet triumph",
        "{artist} announces {n}-city tour",
    ),
}
TAGS = {
    "World": ("diplomacy", "elections", "climate", "migration"),
    "Business": ("markets", "jobs", "mergers", "banking"),
    "Technology": ("gadgets", "AI", "privacy", "startups"),
    "Science": ("space", "health", "oceans", "research"),
    "Sports": ("football", "athletics", "transfers", "records"),
    "Culture": ("music", "museums", "film", "books"),
}
NEWSLETTERS = ("Morning Briefing", "Market Close", "Lab Notes", "Weekend Reads")
READERS = tuple(
    f"{n}@example.com"
    for n in (
        "ada.l",
        "b.okoro",
        "c.meyer",
        "dana.k",
        "eli.r",
        "farah.s",
        "gus.t",
        "hana.w",
        "ian.p",
        "jo.m",
        "kira.v",
        "liam.d",
        "mona.f",
        "nils.h",
        "ola.b",
        "pia.c",
        "quinn.a",
        "ruth.e",
        "sami.g",
        "theo.i",
        "uma.j",
        "vic.n",
        "wen.o",
        "xavi.q",
    )
)
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True)
class Article:
    slug: str
    headline: str
    section: str
    author: str
    published: date
    minutes: int
    tags: tuple[str, ...]
    comments: int
    rank: int  # relevance order

    @property
    def key(self) -> str:
        return f"{author_key(self.author)}/article:{self.slug}"


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def author_key(author: str) -> str:
    return f"news:author:{slugify(author)}"


def long_date(d: date) -> str:
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"


def date_aliases(d: date) -> tuple[str, ...]:
    month = MONTHS[d.month - 1]
    return (
        d.isoformat(),
        f"{d.day} {month} {d.year}",
        f"{month[:3]} {d.day}, {d.year}",
        f"{d.day} {month[:3]} {d.year}",
    )


def _headline(rng: Random, section: str) -> str:
    values = {k: rng.choice(v) for k, v in SLOTS.items()}
    values["country2"] = rng.choice([c for c in SLOTS["country"] if c != values["country"]])
    values["company2"] = rng.choice([c for c in SLOTS["company"] if c != values["company"]])
    values["team2"] = rng.choice([t for t in SLOTS["team"] if t != values["team"]])
    values["n"], values["m"] = str(rng.randint(2, 9)), str(rng.randint(0, 1))
    return rng.choice(HEADLINES[section]).format(**values)


def make_articles(seed: int = SEED) -> list[Article]:
    rng = Random(seed)
    days = sorted(rng.sample(range(366), N_ARTICLES))
    authors = [(a, s) for s, names in AUTHORS.items() for a in names]
    seen: set[str] = set()
    articles = []
    for offset in days:
        author, home = rng.choice(authors)
        section = home if rng.random() < 0.75 else rng.choice(sorted(AUTHORS))
        headline = ""
        while not headline or headline in seen:
            headline = _headline(rng, section)
        seen.add(headline)
        articles.append(
            Article(
                slug=slugify(headline),
                headline=headline,
                section=section,
                author=author,
                published=date(YEAR, 1, 1) + timedelta(days=offset),
                minutes=rng.randint(3, 14),
                tags=tuple(rng.sample(TAGS[section], 2)),
                comments=rng.randint(0, 480),
                rank=rng.randint(0, 10_000),
            )
        )
    return articles


class News(Site):
    name = "news"
    title = "The Morning Ledger"
    search_label = SEARCH_LABEL
    search_placeholder = "Search news"
    page_globals = {"sections": tuple(AUTHORS), "newsletters": NEWSLETTERS, "long_date": long_date, "slugify": slugify}

    def __init__(self, seed: int = SEED):
        self.articles = make_articles(seed)
        self.by_slug = {a.slug: a for a in self.articles}
        self._words = {a.slug: words(f"{a.headline} {a.author} {a.section} {' '.join(a.tags)}") for a in self.articles}
        authors = [a for names in AUTHORS.values() for a in names]
        self.pools = Pools(self.name, [author_key(a) for a in authors] + [reader_key(r) for r in READERS])

    # --- serving -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("GET", "/", self.home),
            route("GET", "/search", self.results),
            route("GET", r"/section/(?P<slug>[a-z]+)", self.section),
            route("GET", r"/article/(?P<slug>[\w-]+)", self.article),
            route("GET", r"/author/(?P<slug>[\w-]+)", self.author),
            route("GET", "/saved", self.saved),
            route("POST", "/saved/add", self.save),
            route("GET", "/newsletters", self.newsletters),
            route("POST", "/newsletters", self.subscribe),
        ]

    def initial_state(self) -> dict[str, Any]:
        return {"saved": [], "subscriptions": {}}

    def home(self, req: Request) -> Response:
        latest = sorted(self.articles, key=lambda a: a.published, reverse=True)[:8]
        return self.render(req, "home", "News, analysis and opinion", latest=latest)

    def results(self, req: Request) -> Response:
        q = req.arg("q")
        section = req.arg("section") if req.arg("section") in AUTHORS else ""
        sort = req.arg("sort") if req.arg("sort") in ("relevance", "newest", "oldest") else "relevance"
        matched = [a for a in self.articles if q and words(q) <= self._words[a.slug]]
        found = sorted((a for a in matched if not section or a.section == section), key=_SORT_KEYS[sort])
        params: dict[str, object] = {"q": q, "section": section, "sort": sort}
        sorts = (("relevance", "Most relevant"), ("newest", "Newest first"), ("oldest", "Oldest first"))
        facets = [
            (f"{s} ({n})", url("/search", q=q, section=s, sort=sort))
            for s in AUTHORS
            if (n := sum(1 for a in matched if a.section == s))
        ]
        current = next((label for label, _ in facets if section and label.startswith(f"{section} (")), "All sections")
        return self.render(
            req,
            "list",
            f"Search: {q}",
            q=q,
            path="/search",
            page=paginate(found, req.page_number(), PER_PAGE),
            params=params,
            sorts=[(label, url("/search", params, sort=key)) for key, label in sorts],
            sort=dict(sorts)[sort],
            facet=Facet("Filter by section", [("All sections", url("/search", q=q, sort=sort))] + facets, current),
        )

    def section(self, req: Request, slug: str) -> Response:
        name = next((s for s in AUTHORS if s.lower() == slug), None)
        if name is None:
            return self.not_found(req)
        month = req.arg("month")
        sort = "oldest" if req.arg("sort") == "oldest" else "newest"
        found = sorted(
            (a for a in self.articles if a.section == name and (not month or f"{a.published:%Y-%m}" == month)),
            key=_SORT_KEYS[sort],
        )
        params: dict[str, object] = {"month": month, "sort": sort}
        path = f"/section/{slug}"
        sorts = (("newest", "Newest first"), ("oldest", "Oldest first"))
        months = [(f"{m} {YEAR}", url(path, month=f"{YEAR}-{i:02d}", sort=sort)) for i, m in enumerate(MONTHS, 1)]
        current = (
            f"{MONTHS[int(month[5:]) - 1]} {YEAR}" if re.fullmatch(rf"{YEAR}-(0[1-9]|1[0-2])", month) else "All months"
        )
        return self.render(
            req,
            "list",
            f"{name}: {current}" if month else name,
            path=path,
            page=paginate(found, req.page_number(), PER_PAGE),
            params=params,
            sorts=[(label, url(path, params, sort=key)) for key, label in sorts],
            sort=dict(sorts)[sort],
            facet=Facet("Archive", [("All months", url(path, sort=sort))] + months, current),
        )

    def article(self, req: Request, slug: str) -> Response:
        a = self.by_slug.get(slug)
        if a is None:
            return self.not_found(req)
        return self.render(req, "article", a.headline, a=a)

    def author(self, req: Request, slug: str) -> Response:
        name = next((n for names in AUTHORS.values() for n in names if slugify(n) == slug), None)
        if name is None:
            return self.not_found(req)
        mine = sorted((a for a in self.articles if a.author == name), key=_SORT_KEYS["newest"])
        return self.render(
            req, "list", name, path=f"/author/{slug}", page=paginate(mine, req.page_number(), PER_PAGE), params={}
        )

    def saved(self, req: Request) -> Response:
        return self.render(req, "saved", "Reading list", saved=[self.by_slug[s] for s in req.state["saved"]])

    def save(self, req: Request) -> Response:
        a = self.by_slug.get(req.form.get("slug", ""))
        if a is None:
            return self.not_found(req)
        return save_item(req, "saved", a.slug, "Saved to your reading list.", f"/article/{a.slug}")

    def newsletters(self, req: Request) -> Response:
        return self.render(req, "newsletters", "Newsletters")

    def subscribe(self, req: Request) -> Response:
        email = req.form.get("email", "").strip().lower()
        chosen = [n for n in req.form_values("newsletter") if n in NEWSLETTERS]
        if "@" not in email or not chosen:
            req.state["_flash"] = "Please enter your email address and pick at least one newsletter."
            return redirect("/newsletters")
        subs = req.state["subscriptions"]
        subs[email] = sorted(set(subs.get(email, [])) | set(chosen))
        req.state["_flash"] = f"You're subscribed to {', '.join(chosen)}."
        return redirect("/newsletters")

    # --- tasks ---------------------------------------------------------------------------

    def opening(self, a: Article) -> list[dict[str, Any]]:
        return [
            search(SEARCH_LABEL, a.headline, "I'll search for the article by its headline."),
            click(a.headline, "The article is in the results; I'll open it."),
        ]

    @template("article-author")
    def _author_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                a,
                f'Who wrote the Morning Ledger article "{a.headline}"?',
                answer_gold(a.author),
                answer(a.author, a.author, f"The byline says the article is by {a.author}."),
            )
            for a in self.articles
        ]

    @template("article-date")
    def _date_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                a,
                f'On what date was "{a.headline}" published?',
                answer_gold(long_date(a.published), *date_aliases(a.published)),
                answer(
                    long_date(a.published),
                    long_date(a.published),
                    f"The article was published on {long_date(a.published)}.",
                ),
            )
            for a in self.articles
        ]

    @template("latest-by-author")
    def _latest_drafts(self) -> list[TaskSpec]:
        drafts = []
        for author in (n for names in AUTHORS.values() for n in names):
            mine = [a for a in self.articles if a.author == author]
            for section in AUTHORS:
                in_section = sorted((a for a in mine if a.section == section), key=lambda a: a.published, reverse=True)
                if len(in_section) < 2:
                    continue
                latest = in_section[0]
                drafts.append(
                    TaskSpec(
                        f"What is the headline of the most recent {section} article by {author}?",
                        answer_gold(latest.headline),
                        (author_key(author),),
                        (
                            search(SEARCH_LABEL, author, f"I'll search for articles by {author}."),
                            click(
                                f"{section} ({len(in_section)})", f"I'll narrow the results to the {section} section."
                            ),
                            click("Newest first", "Sorting newest first puts the most recent article on top."),
                            answer(
                                latest.headline,
                                latest.headline,
                                f'The newest one is "{latest.headline}" from {long_date(latest.published)}.',
                            ),
                        ),
                    )
                )
        return drafts

    @template("read-time")
    def _read_time_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                a,
                f'How many minutes does it take to read "{a.headline}"?',
                answer_gold(f"{a.minutes} minutes", f"{a.minutes} min", f"{a.minutes} min read", str(a.minutes)),
                answer(
                    f"{a.minutes} minutes", f"{a.minutes} min read", f"The article says it is a {a.minutes} min read."
                ),
            )
            for a in self.articles
        ]

    @template("save-article")
    def _save_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                a,
                f'Add the article "{a.headline}" to my reading list.',
                state_gold(saved=[a.slug]),
                click("Save article", "I'll save the article to my reading list.", role="button"),
                answer(
                    "Saved the article to the reading list.",
                    "to your reading list",
                    "The page confirms it was saved, so I'm done.",
                ),
            )
            for a in self.articles
        ]

    @template("first-in-month", test_only=True)
    def _first_in_month_drafts(self) -> list[TaskSpec]:
        drafts = []
        for section in AUTHORS:
            for i, month in enumerate(MONTHS, 1):
                found = sorted(
                    (a for a in self.articles if a.section == section and a.published.month == i),
                    key=lambda a: a.published,
                )
                if len(found) < 2:
                    continue
                first = found[0]
                drafts.append(
                    TaskSpec(
                        f"What was the first {section} article the Morning Ledger published in {month} {YEAR}?",
                        answer_gold(first.headline),
                        (first.key,),
                        (
                            click(section, f"I'll open the {section} section."),
                            click(f"{month} {YEAR}", f"I'll open the archive for {month} {YEAR}."),
                            click("Oldest first", "Sorting oldest first puts the month's first article on top."),
                            answer(first.headline, first.headline, f'The first one that month is "{first.headline}".'),
                        ),
                    )
                )
        return drafts

    @template("subscribe", test_only=True)
    def _subscribe_drafts(self) -> list[TaskSpec]:
        drafts = []
        for reader in READERS:
            letter = Random(reader).choice(NEWSLETTERS)
            drafts.append(
                TaskSpec(
                    f"Sign up {reader} for the {letter} newsletter.",
                    state_gold(subscriptions={reader: [letter]}),
                    (reader_key(reader),),
                    (
                        click("Newsletters", "I'll open the newsletters page."),
                        fill("Email address", reader, f"I'll enter the email address {reader}."),
                        click(letter, f"I'll tick the {letter} newsletter.", role="checkbox"),
                        click("Subscribe", "Now I'll submit the form.", role="button"),
                        answer(
                            f"Subscribed {reader} to {letter}.",
                            "You're subscribed",
                            "The page confirms the subscription, so I'm done.",
                        ),
                    ),
                )
            )
        return drafts


def reader_key(email: str) -> str:
    return f"news:reader:{email}"


_SORT_KEYS: dict[str, Callable[[Article], Any]] = {
    "relevance": lambda a: a.rank,
    "newest": lambda a: -a.published.toordinal(),
    "oldest": lambda a: a.published.toordinal(),
}
