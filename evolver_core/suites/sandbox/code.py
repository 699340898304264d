"""Gitforge: a code-hosting site, the sandbox's stand-in for WebVoyager's GitHub tasks.

Repository search with a language filter and a GitHub-style "Sort" disclosure menu, user and
organisation pages (their own sort menu), repository pages (About box with licence, stars,
forks, topics; latest release; README) and a Star button whose state is kept on the server
(`/__state` -> {"starred": ["owner/repo"]}). Data comes from a fixed seed. Entities are pooled
by owner (`code:owner:<handle>`, repositories as `code:owner:<handle>/repo:<name>`).
Pages: `templates/code/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from random import Random
from itertools import product
from typing import Any, Callable

from evolver_core.suites.sandbox.spec import (
    Pools, TaskSpec, answer, answer_gold, click, search, state_gold, template, unique_best
)
from evolver_core.suites.sandbox.web import Facet, Request, Response, Route, Site, paginate, redirect, route, url, words

SEED = 303
PER_PAGE = 10
SEARCH_LABEL = "Search Gitforge"
MENU_ROLES = ("DisclosureTriangle", "button")  # how Chromium exposes a <summary>
WORD = r"[a-z0-9+]+"  # search words keep '+' (C++)

USERS = (
    "mkowalski",
    "ana-rivera",
    "jdubois",
    "priya-n",
    "tomekz",
    "sofia-lind",
    "kenji-m",
    "oluwaseun",
    "lena-hart",
    "rbhatt",
    "carmen-vega",
    "ivan-petrov",
    "noor-a",
    "dpark",
    "elise-moreau",
    "fionn-b",
    "yusuf-k",
    "marta-s",
)
ORGS = (
    "lunar-labs",
    "quartz-dev",
    "blueoak-io",
    "tidewater-hq",
    "ferrous-works",
    "pinecone-team",
    "helix-systems",
    "northwind-oss",
    "copperleaf",
    "stratus-org",
    "emberline",
    "kiln-project",
)
PREFIXES = (
    "fast",
    "tiny",
    "micro",
    "open",
    "simple",
    "smart",
    "quick",
    "hyper",
    "nano",
    "deep",
    "auto",
    "meta",
    "turbo",
    "lite",
    "neo",
    "zen",
)
STEMS = {
    "json": "parsing",
    "router": "web",
    "cache": "database",
    "parser": "parsing",
    "queue": "scheduling",
    "logger": "monitoring",
    "crypt": "security",
    "render": "graphics",
    "shell": "cli",
    "test": "testing",
    "lint": "compilers",
    "sync": "database",
    "graph": "graphics",
    "pixel": "games",
    "stream": "http",
    "config": "cli",
    "sched": "scheduling",
    "vault": "security",
    "bench": "testing",
    "proxy": "http",
    "engine": "games",
    "metrics": "monitoring",
    "lexer": "compilers",
    "server": "web",
}
TOPICS = (
    "cli",
    "web",
    "database",
    "parsing",
    "games",
    "http",
    "testing",
    "graphics",
    "security",
    "scheduling",
    "monitoring",
    "compilers",
)
PHRASES = {
    "cli": "command-line toolkit",
    "web": "web framework",
    "database": "storage layer",
    "parsing": "parser library",
    "games": "game engine",
    "http": "HTTP client",
    "testing": "test runner",
    "graphics": "rendering library",
    "security": "encryption toolkit",
    "scheduling": "job scheduler",
    "monitoring": "metrics collector",
    "compilers": "compiler toolchain",
}
ADJECTIVES = (
    "small",
    "fast",
    "friendly",
    "batteries-included",
    "zero-dependency",
    "modular",
    "experimental",
    "pragmatic",
)
LANGUAGES = ("Python", "JavaScript", "TypeScript", "Go", "Rust", "Java", "C++", "Ruby")
LICENSES = {
    "MIT License": ("MIT",),
    "Apache License 2.0": ("Apache 2.0", "Apache-2.0"),
    "GNU General Public License v3.0": ("GPL-3.0", "GPLv3"),
    'BSD 3-Clause "New" or "Revised" License': ("BSD-3-Clause", "BSD 3-Clause"),
    "Mozilla Public License 2.0": ("MPL-2.0", "MPL 2.0"),
    "The Unlicense": ("Unlicense",),
}
SORTS = (
    ("best-match", "Best match"),
    ("stars", "Most stars"),
    ("fewest-stars", "Fewest stars"),
    ("forks", "Most forks"),
    ("updated", "Recently updated"),
)
OWNER_SORTS = (("updated", "Last updated"), ("name", "Name"), ("stars", "Stars"))
FIRST_DAY = date(2023, 6, 1)


@dataclass(frozen=True)
class Repo:
    owner: str
    name: str
    description: str
    language: str
    topics: tuple[str, ...]
    stars: int
    forks: int
    issues: int
    updated: date
    license: str
    release: str
    released: date

    @property
    def full(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def key(self) -> str:
        return f"{owner_key(self.owner)}/repo:{self.name}"


def owner_key(owner: str) -> str:
    return f"code:owner:{owner}"


def short_count(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def day(d: date) -> str:
    return f"{d:%b} {d.day}, {d.year}"


def make_repos(seed: int = SEED) -> list[Repo]:
    rng = Random(seed)
    names: set[str] = set()
    repos: list[Repo] = []
    for owner in (*USERS, *ORGS):
        for _ in range(rng.randint(3, 8)):
            name = ""
            while not name or name in names:
                stem = rng.choice(sorted(STEMS))
                name = f"{rng.choice(PREFIXES)}-{stem}"
            names.add(name)
            topic = STEMS[stem]
            language = rng.choice(LANGUAGES)
            stars = int(10 ** rng.uniform(0.5, 4.7))
            updated = FIRST_DAY + timedelta(days=rng.randint(0, 580))
            major, minor, patch = rng.randint(0, 4), rng.randint(0, 20), rng.randint(0, 9)
            repos.append(
                Repo(
                    owner=owner,
                    name=name,
                    description=f"A {rng.choice(ADJECTIVES)} {PHRASES[topic]} written in {language}.",
                    language=language,
                    topics=(topic, *rng.sample([t for t in TOPICS if t != topic], 1)),
                    stars=stars,
                    forks=int(stars * rng.uniform(0.03, 0.3)),
                    issues=rng.randint(0, 300),
                    updated=updated,
                    license=rng.choice(sorted(LICENSES)),
                    release=f"v{major}.{minor}.{patch}",
                    released=updated - timedelta(days=rng.randint(0, 60)),
                )
            )
    return repos


class Code(Site):
    name = "code"
    title = "Gitforge"
    search_label = SEARCH_LABEL
    search_placeholder = "Search or jump to..."
    page_globals = {"short_count": short_count, "day": day}

    def __init__(self, seed: int = SEED):
        self.repos = make_repos(seed)
        self.by_full = {r.full: r for r in self.repos}
        self.owners = sorted({r.owner for r in self.repos})
        self._words = {
            r.full: words(f"{r.full} {r.description} {' '.join(r.topics)} {r.language}", WORD) for r in self.repos
        }
        self.pools = Pools(self.name, (owner_key(o) for o in self.owners))

    # --- serving -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("GET", "/", self.home),
            route("GET", "/search", self.results),
            route("GET", "/stars", self.stars),
            route("GET", r"/(?P<owner>[\w-]+)", self.owner_page),
            route("GET", r"/(?P<owner>[\w-]+)/(?P<repo>[\w.-]+)", self.repo_page),
            route("POST", r"/(?P<owner>[\w-]+)/(?P<repo>[\w.-]+)/star", self.toggle_star),
        ]

    def initial_state(self) -> dict[str, Any]:
        return {"starred": []}

    def home(self, req: Request) -> Response:
        trending = sorted(self.repos, key=lambda r: -r.updated.toordinal())[:6]
        return self.render(
            req,
            "home",
            "Home",
            recent=[(r.full, f"/{r.full}") for r in trending],
            topics=[(t, url("/search", q=t)) for t in TOPICS],
        )

    def results(self, req: Request) -> Response:
        q = req.arg("q")
        lang = req.arg("l") if req.arg("l") in LANGUAGES else ""
        sort = req.arg("sort") if req.arg("sort") in dict(SORTS) else "best-match"
        wanted = words(q, WORD)
        matched = [r for r in self.repos if wanted <= self._words[r.full]]
        found = [r for r in matched if not lang or r.language == lang]
        found.sort(key=_SORT_KEYS[sort](q))
        params: dict[str, object] = {"q": q, "l": lang, "sort": sort}
        counts = {x: sum(1 for r in matched if r.language == x) for x in LANGUAGES}
        languages = [("Any language", url("/search", q=q, sort=sort))] + [
            (x, url("/search", q=q, l=x, sort=sort)) for x in LANGUAGES if counts[x]
        ]
        return self.render(
            req,
            "results",
            f"Search · {q}" if q else "Search",
            users=[(o, f"/{o}") for o in self.owners if q and wanted <= words(o, WORD)],
            page=paginate(found, req.page_number(), PER_PAGE),
            params=params,
            sort=dict(SORTS)[sort],
            sorts=[(label, url("/search", params, sort=key)) for key, label in SORTS],
            facet=Facet("Languages", languages, lang or "Any language"),
        )

    def owner_page(self, req: Request, owner: str) -> Response:
        if owner not in self.owners:
            return self.not_found(req)
        sort = req.arg("sort") if req.arg("sort") in dict(OWNER_SORTS) else "updated"
        return self.render(
            req,
            "owner",
            owner,
            owner=owner,
            kind="Organization" if owner in ORGS else "User",
            repos=sorted((r for r in self.repos if r.owner == owner), key=_OWNER_SORT_KEYS[sort]),
            sort=dict(OWNER_SORTS)[sort],
            sorts=[(label, url(f"/{owner}", sort=key)) for key, label in OWNER_SORTS],
        )

    def repo_page(self, req: Request, owner: str, repo: str) -> Response:
        r = self.by_full.get(f"{owner}/{repo}")
        if r is None:
            return self.not_found(req)
        return self.render(req, "repo", r.full, r=r, starred=r.full in req.state["starred"])

    def stars(self, req: Request) -> Response:
        links = [(f, f"/{f}") for f in req.state["starred"]]
        return self.render(req, "saved", "Your stars", links=links, empty="You have not starred any repositories yet.")

    def toggle_star(self, req: Request, owner: str, repo: str) -> Response:
        r = self.by_full.get(f"{owner}/{repo}")
        if r is None:
            return self.not_found(req)
        if r.full in req.state["starred"]:
            req.state["starred"].remove(r.full)
            req.state["_flash"] = f"You unstarred {r.full}."
        else:
            req.state["starred"].append(r.full)
            req.state["_flash"] = f"You starred {r.full}."
        return redirect(f"/{r.full}")

    # --- tasks ---------------------------------------------------------------------------

    def opening(self, r: Repo) -> list[dict[str, Any]]:
        return [
            search(SEARCH_LABEL, r.name, f"I'll search Gitforge for {r.name}."),
            click(r.full, f"{r.full} is in the results; I'll open the repository."),
        ]

    def _open_owner(self, owner: str) -> list[dict[str, Any]]:
        return [
            search(SEARCH_LABEL, owner, f"I'll search for {owner} to find their profile."),
            click(owner, f"The user {owner} is listed; I'll open their page."),
        ]

    def _most_starred(self, keep: Callable[[Repo], bool]) -> Repo | None:
        """The kept repository with the most stars, where no other ties with it (spec.unique_best)."""
        return unique_best((r for r in self.repos if keep(r)), key=lambda r: -r.stars)

    @template("repo-stars")
    def _stars_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"How many stars does the {r.full} repository have on Gitforge?",
                answer_gold(str(r.stars)),
                answer(str(r.stars), f"{r.stars:,} stars", f"The About box shows {r.stars:,} stars."),
            )
            for r in self.repos
        ]

    @template("top-topic-language")
    def _top_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                f"Which {lang} repository about {topic} has the most stars on Gitforge?",
                answer_gold(best.full, best.name),
                (best.key,),
                (
                    search(SEARCH_LABEL, topic, f"I'll search for repositories about {topic}."),
                    click(lang, f"I'll filter the results to {lang}."),
                    click("Sort: Best match", "I'll open the sort menu.", role=MENU_ROLES),
                    click("Most stars", "Sorting by most stars puts the most popular repository first."),
                    answer(
                        best.full, best.full, f"The top result is {best.full} with {short_count(best.stars)} stars."
                    ),
                ),
            )
            for topic, lang in product(TOPICS, LANGUAGES)
            if (best := self._most_starred(lambda r: topic in r.topics and r.language == lang))
        ]

    @template("owner-top-starred")
    def _owner_top_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                f"Which of {owner}'s repositories on Gitforge has the most stars?",
                answer_gold(best.name, best.full),
                (owner_key(owner),),
                (
                    *self._open_owner(owner),
                    click("Sort: Last updated", "I'll open the sort menu of the repository list.", role=MENU_ROLES),
                    click("Stars", "Sorting by stars puts the most-starred repository first."),
                    answer(best.name, best.name, f"{best.name} is first, with {short_count(best.stars)} stars."),
                ),
            )
            for owner in self.owners
            if (best := self._most_starred(lambda r: r.owner == owner))
        ]

    @template("repo-license")
    def _license_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"Which license does {r.full} use?",
                answer_gold(r.license, *LICENSES[r.license]),
                answer(r.license, r.license, f"The About box lists the license: {r.license}."),
            )
            for r in self.repos
        ]

    @template("star-repo")
    def _star_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"Star the {r.full} repository on Gitforge.",
                state_gold(starred=[r.full]),
                click("Star", "I'll star the repository.", role="button"),
                answer(f"Starred {r.full}.", f"You starred {r.full}", "The page confirms the star, so I'm done."),
            )
            for r in self.repos
        ]

    @template("latest-release", test_only=True)
    def _release_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"What is the latest release version of {r.full}?",
                answer_gold(r.release, r.release[1:]),
                answer(r.release, f"{r.release} (Latest)", f"The Releases section shows {r.release} as the latest."),
            )
            for r in self.repos
        ]

    @template("owner-repo-count", test_only=True)
    def _owner_count_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                f"How many public repositories does {owner} have on Gitforge?",
                answer_gold(str(n)),
                (owner_key(owner),),
                (
                    *self._open_owner(owner),
                    answer(str(n), f"Repositories ({n})", f"The profile lists {n} repositories."),
                ),
            )
            for owner in self.owners
            for n in [sum(1 for r in self.repos if r.owner == owner)]
        ]


def _best_match(q: str) -> Callable[[Repo], Any]:
    wanted = q.strip().lower()
    return lambda r: (r.name != wanted and r.full != wanted, -r.stars)


_SORT_KEYS: dict[str, Callable[[str], Callable[[Repo], Any]]] = {
    "best-match": _best_match,
    "stars": lambda q: lambda r: (-r.stars, r.full),
    "fewest-stars": lambda q: lambda r: (r.stars, r.full),
    "forks": lambda q: lambda r: (-r.forks, r.full),
    "updated": lambda q: lambda r: (-r.updated.toordinal(), r.full),
}
_OWNER_SORT_KEYS: dict[str, Callable[[Repo], Any]] = {
    "updated": lambda r: (-r.updated.toordinal(), r.name),
    "name": lambda r: r.name,
    "stars": lambda r: (-r.stars, r.name),
}
