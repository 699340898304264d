"""Gitforge: a code-hosting site, the sandbox's stand-in for WebVoyager's GitHub tasks.

Repository search with a language filter and a GitHub-style "Sort" disclosure menu, user and
organisation pages (their own sort menu), repository pages (About box with licence, stars,
forks, topics; latest release; README) and a Star button whose state is kept on the server
(`/__state` -> {"starred": ["owner/repo"]}). Data comes from a fixed seed. Entities are pooled
by owner (`code:owner:<handle>`, repositories as `code:owner:<handle>/repo:<name>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from random import Random
from typing import Any, Callable

from evolver_core.suites.sandbox.spec import Pools, TaskSpec, answer, answer_gold, click, search, state_gold, template
from evolver_core.suites.sandbox.web import (
    Request, Response, Route, Site, counted, esc, link_list, pager, paginate, post_button, redirect, route, url
)

SEED = 303
PER_PAGE = 10
SEARCH_LABEL = "Search Gitforge"
MENU_ROLES = ("DisclosureTriangle", "button")  # how Chromium exposes a <summary>

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


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9+]+", text.lower()))


class Code(Site):
    name = "code"
    title = "Gitforge"
    search_label = SEARCH_LABEL
    search_placeholder = "Search or jump to..."

    def __init__(self, seed: int = SEED):
        self.repos = make_repos(seed)
        self.by_full = {r.full: r for r in self.repos}
        self.owners = sorted({r.owner for r in self.repos})
        self._words = {
            r.full: _words(f"{r.full} {r.description} {' '.join(r.topics)} {r.language}") for r in self.repos
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

    def accent_css(self) -> str:
        return (
            "header{background:#161b22}details{display:inline-block;margin:4px 0}"
            "summary{cursor:pointer;border:1px solid #ccc;padding:2px 8px}"
        )

    def nav(self, req: Request) -> str:
        return '<nav aria-label="Main"><a href="/search?sort=stars">Explore</a><a href="/stars">Your stars</a></nav>'

    def home(self, req: Request) -> Response:
        trending = sorted(self.repos, key=lambda r: -r.updated.toordinal())[:6]
        main = (
            "<h1>Where small projects grow</h1><p>Find open-source repositories by name, topic or language.</p>"
            "<h2>Recently active</h2>"
            + link_list([(r.full, f"/{r.full}") for r in trending])
            + "<h2>Browse topics</h2>"
            + link_list([(t, url("/search", q=t)) for t in TOPICS], label="Topics")
        )
        return Response(self.page("Home", main, req))

    def results(self, req: Request) -> Response:
        q = req.arg("q")
        lang = req.arg("l") if req.arg("l") in LANGUAGES else ""
        sort = req.arg("sort") if req.arg("sort") in dict(SORTS) else "best-match"
        words = _words(q)
        matched = [r for r in self.repos if words <= self._words[r.full]]
        found = [r for r in matched if not lang or r.language == lang]
        found.sort(key=_SORT_KEYS[sort](q))
        shown, page_no, pages = paginate(found, req.page_number(), PER_PAGE)
        params: dict[str, object] = {"q": q, "l": lang, "sort": sort}
        users = [o for o in self.owners if q and words <= _words(o)]
        user_list = f"<h2>Users</h2>{link_list([(o, f'/{o}') for o in users])}" if users else ""
        menu = _sort_menu(
            dict(SORTS)[sort], [(label, url("/search", **{**params, "sort": key})) for key, label in SORTS]
        )
        items = "".join(
            f'<li><h3><a href="/{r.full}">{esc(r.full)}</a></h3><p>{esc(r.description)}</p>'
            f'<p class="muted">{esc(r.language)} · ★ {short_count(r.stars)} · Updated {day(r.updated)}</p></li>'
            for r in shown
        )
        main = (
            f"{user_list}<h1>{counted(len(found), 'repository result')}</h1>{menu}"
            f'<ol class="results plain">{items}</ol>{pager("/search", params, page_no, pages)}'
        )
        counts = {x: sum(1 for r in matched if r.language == x) for x in LANGUAGES}
        aside = "<h2>Languages</h2>" + link_list(
            [("Any language", url("/search", q=q, sort=sort))]
            + [(x, url("/search", q=q, l=x, sort=sort)) for x in LANGUAGES if counts[x]],
            lang or "Any language",
        )
        return Response(self.page(f"Search · {q}" if q else "Search", main, req, aside))

    def owner_page(self, req: Request, owner: str) -> Response:
        if owner not in self.owners:
            return self.not_found(req)
        sort = req.arg("sort") if req.arg("sort") in dict(OWNER_SORTS) else "updated"
        repos = sorted((r for r in self.repos if r.owner == owner), key=_OWNER_SORT_KEYS[sort])
        menu = _sort_menu(dict(OWNER_SORTS)[sort], [(label, url(f"/{owner}", sort=key)) for key, label in OWNER_SORTS])
        kind = "Organization" if owner in ORGS else "User"
        items = "".join(
            f'<li><h3><a href="/{r.full}">{esc(r.name)}</a></h3><p>{esc(r.description)}</p>'
            f'<p class="muted">{esc(r.language)} · ★ {short_count(r.stars)} · Updated on {day(r.updated)}</p></li>'
            for r in repos
        )
        main = (
            f"<h1>{esc(owner)}</h1><p>{kind} on Gitforge</p><h2>Repositories ({len(repos)})</h2>"
            f'{menu}<ol class="results plain">{items}</ol>'
        )
        return Response(self.page(owner, main, req))

    def repo_page(self, req: Request, owner: str, repo: str) -> Response:
        r = self.by_full.get(f"{owner}/{repo}")
        if r is None:
            return self.not_found(req)
        starred = r.full in req.state["starred"]
        count = r.stars + (1 if starred else 0)
        topics = " ".join(f'<a href="{esc(url("/search", q=t))}">{esc(t)}</a>' for t in r.topics)
        main = (
            f'<nav class="bar" aria-label="Breadcrumb"><a href="/{r.owner}">{esc(r.owner)}</a> / <b>{esc(r.name)}</b></nav>'
            + post_button(f"/{r.full}/star", "Unstar" if starred else "Star")
            + f"<h2>About</h2><p>{esc(r.description)}</p><p>Topics: {topics}</p>"
            f'<dl class="facts"><dt>License</dt><dd>{esc(r.license)}</dd><dt>Stars</dt><dd>{count:,} stars</dd>'
            f"<dt>Forks</dt><dd>{r.forks:,} forks</dd><dt>Issues</dt><dd>{r.issues} open issues</dd>"
            f"<dt>Language</dt><dd>{esc(r.language)}</dd></dl>"
            f"<h2>Releases</h2><p>{r.release} (Latest) · released {day(r.released)}</p>"
            f"<h2>README.md</h2><h3>{esc(r.name)}</h3><p>{esc(r.description)} Install it with your usual package manager and "
            f"read the docs folder to get started.</p><p>Last updated on {day(r.updated)}.</p>"
        )
        return Response(self.page(r.full, main, req))

    def stars(self, req: Request) -> Response:
        starred = req.state["starred"]
        body = (
            link_list([(f, f"/{f}") for f in starred])
            if starred
            else "<p>You have not starred any repositories yet.</p>"
        )
        return Response(self.page("Your stars", f"<h1>Your stars</h1>{body}", req))

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

    def _open(self, r: Repo) -> list[dict[str, Any]]:
        return [
            search(SEARCH_LABEL, r.name, f"I'll search Gitforge for {r.name}."),
            click(r.full, f"{r.full} is in the results; I'll open the repository."),
        ]

    def _open_owner(self, owner: str) -> list[dict[str, Any]]:
        return [
            search(SEARCH_LABEL, owner, f"I'll search for {owner} to find their profile."),
            click(owner, f"The user {owner} is listed; I'll open their page."),
        ]

    @template("repo-stars")
    def _stars_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                "repo-stars",
                f"How many stars does the {r.full} repository have on Gitforge?",
                answer_gold(str(r.stars)),
                (r.key,),
                (*self._open(r), answer(str(r.stars), f"{r.stars:,} stars", f"The About box shows {r.stars:,} stars.")),
            )
            for r in self.repos
        ]

    @template("top-topic-language")
    def _top_drafts(self) -> list[TaskSpec]:
        drafts = []
        for topic in TOPICS:
            for lang in LANGUAGES:
                group = sorted(
                    (r for r in self.repos if topic in r.topics and r.language == lang), key=lambda r: -r.stars
                )
                if len(group) < 2 or group[0].stars == group[1].stars:
                    continue
                best = group[0]
                drafts.append(
                    TaskSpec(
                        "top-topic-language",
                        f"Which {lang} repository about {topic} has the most stars on Gitforge?",
                        answer_gold(best.full, best.name),
                        (best.key,),
                        (
                            search(SEARCH_LABEL, topic, f"I'll search for repositories about {topic}."),
                            click(lang, f"I'll filter the results to {lang}."),
                            click("Sort: Best match", "I'll open the sort menu.", role=MENU_ROLES),
                            click("Most stars", "Sorting by most stars puts the most popular repository first."),
                            answer(
                                best.full,
                                best.full,
                                f"The top result is {best.full} with {short_count(best.stars)} stars.",
                            ),
                        ),
                    )
                )
        return drafts

    @template("owner-top-starred")
    def _owner_top_drafts(self) -> list[TaskSpec]:
        drafts = []
        for owner in self.owners:
            repos = sorted((r for r in self.repos if r.owner == owner), key=lambda r: -r.stars)
            if repos[0].stars == repos[1].stars:
                continue
            best = repos[0]
            drafts.append(
                TaskSpec(
                    "owner-top-starred",
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
            )
        return drafts

    @template("repo-license")
    def _license_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                "repo-license",
                f"Which license does {r.full} use?",
                answer_gold(r.license, *LICENSES[r.license]),
                (r.key,),
                (*self._open(r), answer(r.license, r.license, f"The About box lists the license: {r.license}.")),
            )
            for r in self.repos
        ]

    @template("star-repo")
    def _star_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                "star-repo",
                f"Star the {r.full} repository on Gitforge.",
                state_gold(starred=[r.full]),
                (r.key,),
                (
                    *self._open(r),
                    click("Star", "I'll star the repository.", role="button"),
                    answer(f"Starred {r.full}.", f"You starred {r.full}", "The page confirms the star, so I'm done."),
                ),
            )
            for r in self.repos
        ]

    @template("latest-release", test_only=True)
    def _release_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                "latest-release",
                f"What is the latest release version of {r.full}?",
                answer_gold(r.release, r.release[1:]),
                (r.key,),
                (
                    *self._open(r),
                    answer(
                        r.release, f"{r.release} (Latest)", f"The Releases section shows {r.release} as the latest."
                    ),
                ),
            )
            for r in self.repos
        ]

    @template("owner-repo-count", test_only=True)
    def _owner_count_drafts(self) -> list[TaskSpec]:
        drafts = []
        for owner in self.owners:
            n = sum(1 for r in self.repos if r.owner == owner)
            drafts.append(
                TaskSpec(
                    "owner-repo-count",
                    f"How many public repositories does {owner} have on Gitforge?",
                    answer_gold(str(n)),
                    (owner_key(owner),),
                    (
                        *self._open_owner(owner),
                        answer(str(n), f"Repositories ({n})", f"The profile lists {n} repositories."),
                    ),
                )
            )
        return drafts


def _sort_menu(current: str, options: list[tuple[str, str]]) -> str:
    """A GitHub-style sort menu: a <details> disclosure whose items are links."""
    return (
        f"<details><summary>Sort: {esc(current)}</summary>{link_list(options, current, label='Sort options')}</details>"
    )


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
