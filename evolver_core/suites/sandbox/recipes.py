"""Hearth & Herb: a recipe site, the sandbox's stand-in for WebVoyager's Allrecipes tasks.

Search, cuisine/course/diet filters, a "Sort by" <select> (it submits on change), recipe pages (times, servings, calories,
ingredients, method) and a recipe box kept on the server (`/__state` -> {"saved": [slug]}).
Recipes are generated from a fixed seed; each recipe is its own entity (`recipes:recipe:<slug>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from random import Random
from typing import Any, Callable

from evolver_core.suites.sandbox.spec import Pools, TaskSpec, answer, answer_gold, click, search, state_gold, template
from evolver_core.suites.sandbox.web import (
    Request, Response, Route, Site, counted, esc, link_list, pager, paginate, post_button, route, save_item,
    unsave_item, url
)

SEED = 202
PER_COMBO = 4  # recipes per cuisine and course
PER_PAGE = 10
SEARCH_LABEL = "Search recipes"

CUISINES = {
    "Italian": ("Tuscan", "Roman", "Sicilian", ("olive oil", "garlic", "basil", "parmesan", "tomatoes", "oregano")),
    "Mexican": (
        "Chipotle",
        "Oaxacan",
        "Ranchero",
        ("cumin", "lime", "cilantro", "black beans", "corn tortillas", "jalapeno"),
    ),
    "Indian": (
        "Masala",
        "Kerala",
        "Punjabi",
        ("garam masala", "turmeric", "ginger", "coconut milk", "ghee", "basmati rice"),
    ),
    "Thai": (
        "Lemongrass",
        "Bangkok",
        "Chiang Mai",
        ("fish sauce", "lemongrass", "coconut milk", "Thai basil", "lime", "rice noodles"),
    ),
    "Japanese": (
        "Miso",
        "Kyoto",
        "Teriyaki",
        ("soy sauce", "miso paste", "rice vinegar", "mirin", "scallions", "sesame oil"),
    ),
    "French": (
        "Provencal",
        "Parisian",
        "Normandy",
        ("butter", "shallots", "thyme", "Dijon mustard", "white wine", "creme fraiche"),
    ),
    "Greek": (
        "Aegean",
        "Cretan",
        "Athenian",
        ("feta", "oregano", "lemon juice", "kalamata olives", "Greek yogurt", "dill"),
    ),
    "Moroccan": (
        "Marrakesh",
        "Harissa",
        "Atlas",
        ("cumin", "cinnamon", "preserved lemon", "couscous", "harissa paste", "dried apricots"),
    ),
}
COURSES = {
    "Breakfast": (
        ("Pancakes", "Porridge", "Omelette", "Hash", "Toast"),
        ("Oat", "Banana", "Egg", "Ricotta", "Blueberry", "Sweet Potato"),
        (5, 25),
    ),
    "Soup": (
        ("Soup", "Broth", "Chowder", "Bisque"),
        ("Chickpea", "Lentil", "Mushroom", "Chicken", "Tomato", "Pumpkin"),
        (20, 60),
    ),
    "Salad": (
        ("Salad", "Slaw", "Grain Bowl"),
        ("Cucumber", "Chickpea", "Halloumi", "Shrimp", "Beetroot", "Quinoa"),
        (0, 15),
    ),
    "Main Course": (
        ("Curry", "Stew", "Skillet", "Bake", "Tacos", "Risotto", "Stir-Fry"),
        ("Chicken", "Salmon", "Tofu", "Eggplant", "Beef", "Cauliflower", "Pork", "Lamb"),
        (15, 95),
    ),
    "Dessert": (
        ("Tart", "Cake", "Pudding", "Crumble", "Cookies"),
        ("Lemon", "Chocolate", "Almond", "Apple", "Pear", "Coconut", "Pistachio"),
        (10, 60),
    ),
}
MAIN_ITEMS = {
    "Oat": "rolled oats",
    "Banana": "bananas",
    "Egg": "eggs",
    "Ricotta": "ricotta",
    "Blueberry": "blueberries",
    "Sweet Potato": "sweet potatoes",
    "Chickpea": "chickpeas",
    "Lentil": "red lentils",
    "Mushroom": "mushrooms",
    "Chicken": "chicken",
    "Tomato": "tomatoes",
    "Pumpkin": "pumpkin",
    "Cucumber": "cucumbers",
    "Halloumi": "halloumi",
    "Shrimp": "shrimp",
    "Beetroot": "beetroot",
    "Quinoa": "quinoa",
    "Salmon": "salmon",
    "Tofu": "tofu",
    "Eggplant": "eggplant",
    "Beef": "beef",
    "Cauliflower": "cauliflower",
    "Pork": "pork",
    "Lamb": "lamb",
    "Lemon": "lemons",
    "Chocolate": "dark chocolate",
    "Almond": "ground almonds",
    "Apple": "apples",
    "Pear": "pears",
    "Coconut": "shredded coconut",
    "Pistachio": "pistachios",
}
ADJECTIVES = (
    "Smoky",
    "Herby",
    "Spiced",
    "Creamy",
    "Zesty",
    "Rustic",
    "Golden",
    "Charred",
    "Silky",
    "Easy",
    "Weeknight",
    "Classic",
)
COURSE_PANTRY = {
    "Breakfast": ("eggs", "milk", "maple syrup", "butter", "flour"),
    "Soup": ("vegetable broth", "onion", "carrots", "celery", "bay leaves"),
    "Salad": ("red onion", "mixed greens", "cherry tomatoes", "lemon juice", "pumpkin seeds"),
    "Main Course": ("onion", "garlic", "rice", "bell pepper", "chicken stock"),
    "Dessert": ("sugar", "flour", "butter", "eggs", "vanilla extract", "heavy cream"),
}
MEAT = {"chicken", "beef", "pork", "lamb", "chicken stock"}
FISH = {"salmon", "shrimp", "fish sauce"}
ANIMAL = (
    MEAT
    | FISH
    | {
        "parmesan",
        "butter",
        "feta",
        "greek yogurt",
        "ghee",
        "creme fraiche",
        "heavy cream",
        "milk",
        "halloumi",
        "ricotta",
        "eggs",
    }
)
GLUTEN = {"flour", "soy sauce", "couscous"}
UNITS = {
    "g": "grams",
    "ml": "millilitres",
    "tbsp": "tablespoons",
    "tsp": "teaspoons",
    "cups": "cups",
    "cup": "cup",
    "cloves": "cloves",
    "": "",
}
LIQUIDS = ("milk", "broth", "stock", "oil", "sauce", "juice", "wine", "cream", "vinegar", "mirin", "syrup", "extract")
SEASONINGS = (
    "cumin",
    "turmeric",
    "cinnamon",
    "masala",
    "oregano",
    "thyme",
    "dill",
    "basil",
    "cilantro",
    "mustard",
    "paste",
    "ginger",
    "lemongrass",
)
COUNTED = (
    "eggs",
    "bananas",
    "lemons",
    "lime",
    "onion",
    "red onion",
    "shallots",
    "jalapeno",
    "bay leaves",
    "apples",
    "pears",
    "cucumbers",
    "carrots",
    "celery",
    "bell pepper",
)
DIETS = ("Vegetarian", "Vegan", "Gluten-Free")
SORTS = (("relevance", "Relevance"), ("rating", "Top rated"), ("quickest", "Quickest"), ("calories", "Fewest calories"))
AUTHORS = (
    "Maya Lindqvist",
    "Tomas Ferreira",
    "Aiko Tanaka",
    "Samir Haddad",
    "Lucia Moretti",
    "Grace Obi",
    "Nikos Petrakis",
    "Hannah Cole",
)


@dataclass(frozen=True)
class Ingredient:
    amount: str
    unit: str
    item: str

    @property
    def quantity(self) -> str:
        return f"{self.amount} {self.unit}".strip()

    def line(self) -> str:
        return f"{self.quantity} {self.item}"


@dataclass(frozen=True)
class Recipe:
    slug: str
    title: str
    cuisine: str
    course: str
    author: str
    prep: int
    cook: int
    servings: int
    calories: int
    rating: int  # tenths of a star
    reviews: int
    ingredients: tuple[Ingredient, ...]
    rank: int  # relevance order

    @property
    def total(self) -> int:
        return self.prep + self.cook

    @property
    def diets(self) -> tuple[str, ...]:
        items = {i.item.lower() for i in self.ingredients}
        out = []
        if not items & (MEAT | FISH):
            out.append("Vegetarian")
        if not items & ANIMAL:
            out.append("Vegan")
        if not items & GLUTEN:
            out.append("Gluten-Free")
        return tuple(out)

    @property
    def key(self) -> str:
        return f"recipes:recipe:{self.slug}"


def duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} hr {rest} min" if rest else f"{hours} hr"


def duration_aliases(minutes: int) -> tuple[str, ...]:
    hours, rest = divmod(minutes, 60)
    out = [f"{minutes} minutes", f"{minutes} min", f"{minutes} mins"]
    if hours:
        unit = "hour" if hours == 1 else "hours"
        out += [f"{hours} {unit} {rest} minutes", f"{hours} {unit} and {rest} minutes"] if rest else [f"{hours} {unit}"]
    return tuple(out)


def make_recipes(seed: int = SEED) -> list[Recipe]:
    rng = Random(seed)
    titles: set[str] = set()
    recipes: list[Recipe] = []
    for cuisine, (*flavours, pantry) in CUISINES.items():
        for course, (dishes, mains, cook_range) in COURSES.items():
            for _ in range(PER_COMBO):
                title, main = "", ""
                while not title or title in titles:
                    main = rng.choice(mains)
                    title = f"{rng.choice((*flavours, *ADJECTIVES))} {main} {rng.choice(dishes)}"
                titles.add(title)
                items = [
                    MAIN_ITEMS[main],
                    *rng.sample(pantry, 3),
                    *rng.sample(COURSE_PANTRY[course], rng.randint(2, 5)),
                ]
                ingredients = tuple(Ingredient(*_amount(rng, item), item) for item in dict.fromkeys(items))
                cook = rng.randint(*cook_range) // 5 * 5
                recipes.append(
                    Recipe(
                        slug=re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
                        title=title,
                        cuisine=cuisine,
                        course=course,
                        author=rng.choice(AUTHORS),
                        prep=rng.choice((5, 10, 15, 20, 25, 30)),
                        cook=cook,
                        servings=rng.choice((2, 4, 4, 6, 8)),
                        calories=rng.randint(18, 150) * 5,
                        rating=rng.randint(30, 50),
                        reviews=rng.randint(2, 900),
                        ingredients=ingredients,
                        rank=rng.randint(0, 10_000),
                    )
                )
    return recipes


def _amount(rng: Random, item: str) -> tuple[str, str]:
    """A plausible (amount, unit) for an ingredient."""
    if any(w in item for w in LIQUIDS):
        return rng.choice((("2", "tbsp"), ("3", "tbsp"), ("1", "cup"), ("250", "ml"), ("500", "ml")))
    if any(w in item for w in SEASONINGS):
        return rng.choice((("1", "tsp"), ("2", "tsp"), ("1", "tbsp"), ("2", "tbsp")))
    if item == "garlic":
        return str(rng.randint(2, 4)), "cloves"
    if item in COUNTED:
        return str(rng.randint(2, 4)), ""
    return rng.choice((("100", "g"), ("150", "g"), ("200", "g"), ("400", "g"), ("1", "cup"), ("2", "cups")))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


class Recipes(Site):
    name = "recipes"
    title = "Hearth & Herb"
    search_action = "/recipes"
    search_label = SEARCH_LABEL
    search_placeholder = "Find a recipe"

    def __init__(self, seed: int = SEED):
        self.recipes = make_recipes(seed)
        self.by_slug = {r.slug: r for r in self.recipes}
        self.pools = Pools(self.name, (r.key for r in self.recipes))

    # --- serving -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("GET", "/", self.home),
            route("GET", "/recipes", self.results),
            route("GET", r"/recipe/(?P<slug>[\w-]+)", self.recipe),
            route("GET", "/saved", self.saved),
            route("POST", "/saved/add", self.save),
            route("POST", "/saved/remove", self.unsave),
        ]

    def initial_state(self) -> dict[str, Any]:
        return {"saved": []}

    def accent_css(self) -> str:
        return "header{background:#7a3b1d}"

    def nav(self, req: Request) -> str:
        return (
            '<nav aria-label="Main"><a href="/recipes">All recipes</a>'
            f'<a href="/saved">My recipe box ({len(req.state["saved"])})</a></nav>'
        )

    def home(self, req: Request) -> Response:
        latest = sorted(self.recipes, key=lambda r: r.rank)[:5]
        main = (
            "<h1>What are you cooking today?</h1>"
            f"<h2>Cuisines</h2>{link_list([(c, url('/recipes', cuisine=c)) for c in CUISINES], label='Cuisines')}"
            f"<h2>Courses</h2>{link_list([(c, url('/recipes', course=c)) for c in COURSES], label='Courses')}"
            f"<h2>Diets</h2>{link_list([(d, url('/recipes', diet=d)) for d in DIETS], label='Diets')}"
            "<h2>Editors' picks</h2>" + link_list([(r.title, f"/recipe/{r.slug}") for r in latest])
        )
        return Response(self.page("Recipes for every day", main, req))

    def results(self, req: Request) -> Response:
        q = req.arg("q")
        cuisine = req.arg("cuisine") if req.arg("cuisine") in CUISINES else ""
        course = req.arg("course") if req.arg("course") in COURSES else ""
        diet = req.arg("diet") if req.arg("diet") in DIETS else ""
        sort = req.arg("sort") if req.arg("sort") in dict(SORTS) else "relevance"
        found = [
            r
            for r in self.recipes
            if (not q or _words(q) <= _words(f"{r.title} {r.cuisine} {r.course} {r.author}"))
            and (not cuisine or r.cuisine == cuisine)
            and (not course or r.course == course)
            and (not diet or diet in r.diets)
        ]
        found.sort(key=_SORT_KEYS[sort])
        shown, page_no, pages = paginate(found, req.page_number(), PER_PAGE)
        params: dict[str, object] = {"q": q, "cuisine": cuisine, "course": course, "diet": diet, "sort": sort}

        def href(**change: object) -> str:
            return url("/recipes", **{**params, **change})

        chosen = " ".join(x for x in (diet, cuisine, course) if x)
        heading = f"Recipes matching “{q}”" if q else f"{chosen} recipes" if chosen else "All recipes"
        hidden = "".join(
            f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in params.items() if v and k != "sort"
        )
        options = "".join(
            f'<option value="{key}"{" selected" if key == sort else ""}>{esc(label)}</option>' for key, label in SORTS
        )
        items = "".join(
            f'<li><h3><a href="/recipe/{r.slug}">{esc(r.title)}</a></h3>'
            f"<p>{r.cuisine} · {r.course} · ★ {r.rating / 10:.1f} ({r.reviews}) · "
            f"Total {duration(r.total)} · {r.calories} kcal</p></li>"
            for r in shown
        )
        main = (
            f"<h1>{esc(heading)}</h1><p>{counted(len(found), 'recipe')}</p>"
            f'<form class="bar" action="/recipes" method="get">{hidden}'
            f'<label for="sort">Sort by</label><select id="sort" name="sort" onchange="this.form.submit()">{options}</select>'
            '<button type="submit">Apply</button></form>'
            f'<ol class="results plain">{items}</ol>{pager("/recipes", params, page_no, pages)}'
        )
        aside = (
            "<h2>Cuisine</h2>"
            + link_list(
                [("All cuisines", href(cuisine=""))] + [(c, href(cuisine=c)) for c in CUISINES],
                cuisine or "All cuisines",
            )
            + "<h2>Course</h2>"
            + link_list(
                [("All courses", href(course=""))] + [(c, href(course=c)) for c in COURSES], course or "All courses"
            )
            + "<h2>Diet</h2>"
            + link_list([("Any diet", href(diet=""))] + [(d, href(diet=d)) for d in DIETS], diet or "Any diet")
        )
        return Response(self.page(heading, main, req, aside))

    def recipe(self, req: Request, slug: str) -> Response:
        r = self.by_slug.get(slug)
        if r is None:
            return self.not_found(req)
        saved = slug in req.state["saved"]
        action, label = ("/saved/remove", "Remove from recipe box") if saved else ("/saved/add", "Save recipe")
        tags = " · ".join(esc(t) for t in (r.cuisine, r.course, *r.diets))
        ingredients = "".join(f"<li>{esc(i.line())}</li>" for i in r.ingredients)
        steps = "".join(f"<li>{esc(s)}</li>" for s in _method(r))
        main = (
            f"<h1>{esc(r.title)}</h1><p>By {esc(r.author)} · ★ {r.rating / 10:.1f} ({r.reviews} reviews)</p><p>{tags}</p>"
            f'<dl class="facts"><dt>Prep time</dt><dd>{duration(r.prep)}</dd><dt>Cook time</dt><dd>{duration(r.cook)}</dd>'
            f"<dt>Total time</dt><dd>{duration(r.total)}</dd><dt>Servings</dt><dd>{r.servings}</dd>"
            f"<dt>Calories</dt><dd>{r.calories} kcal per serving</dd></dl>"
            + post_button(action, label, slug=r.slug)
            + f"<h2>Ingredients ({len(r.ingredients)})</h2><ul>{ingredients}</ul><h2>Method</h2><ol>{steps}</ol>"
        )
        return Response(self.page(r.title, main, req))

    def saved(self, req: Request) -> Response:
        items = [self.by_slug[s] for s in req.state["saved"]]
        body = (
            link_list([(r.title, f"/recipe/{r.slug}") for r in items]) if items else "<p>Your recipe box is empty.</p>"
        )
        return Response(self.page("My recipe box", f"<h1>My recipe box</h1>{body}", req))

    def save(self, req: Request) -> Response:
        r = self.by_slug.get(req.form.get("slug", ""))
        if r is None:
            return self.not_found(req)
        return save_item(req, "saved", r.slug, f"Saved {r.title} to your recipe box.", f"/recipe/{r.slug}")

    def unsave(self, req: Request) -> Response:
        slug = req.form.get("slug", "")
        return unsave_item(req, "saved", slug, f"/recipe/{slug}" if slug in self.by_slug else "/saved")

    # --- tasks ---------------------------------------------------------------------------

    def _open(self, r: Recipe) -> list[dict[str, Any]]:
        return [
            search(SEARCH_LABEL, r.title, f"I'll search for the {r.title} recipe."),
            click(r.title, "The recipe is in the results; I'll open it."),
        ]

    @template("cook-time")
    def _cook_time_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                "cook-time",
                f"What is the cook time of the {r.title} recipe on Hearth & Herb?",
                answer_gold(duration(r.cook), *duration_aliases(r.cook)),
                (r.key,),
                (
                    *self._open(r),
                    answer(duration(r.cook), duration(r.cook), f"The recipe lists a cook time of {duration(r.cook)}."),
                ),
            )
            for r in self.recipes
            if r.cook > 0
        ]

    @template("ingredient-amount")
    def _amount_drafts(self) -> list[TaskSpec]:
        drafts = []
        for r in self.recipes:
            ing = Random(r.slug).choice([i for i in r.ingredients if i.unit])
            full = f"{ing.amount} {UNITS[ing.unit]}"
            drafts.append(
                TaskSpec(
                    "ingredient-amount",
                    f"How much {ing.item} does the {r.title} recipe call for?",
                    answer_gold(ing.quantity, full),
                    (r.key,),
                    (*self._open(r), answer(ing.quantity, ing.line(), f"The ingredient list says {ing.line()}.")),
                )
            )
        return drafts

    @template("quickest")
    def _quickest_drafts(self) -> list[TaskSpec]:
        drafts = []
        for cuisine in CUISINES:
            for course in COURSES:
                group = sorted(
                    (r for r in self.recipes if r.cuisine == cuisine and r.course == course), key=lambda r: r.total
                )
                if group[0].total == group[1].total:
                    continue
                best = group[0]
                drafts.append(
                    TaskSpec(
                        "quickest",
                        f"Which {cuisine} {course.lower()} recipe on Hearth & Herb takes the least total time?",
                        answer_gold(best.title),
                        (best.key,),
                        (
                            click(cuisine, f"I'll browse the {cuisine} recipes."),
                            click(course, f"I'll narrow them to the {course} course."),
                            click(
                                "Quickest",
                                "I'll pick Quickest in the Sort by menu to put the shortest total time first.",
                                role="option",
                            ),
                            answer(
                                best.title,
                                best.title,
                                f"The first result, {best.title}, takes {duration(best.total)} in total.",
                            ),
                        ),
                    )
                )
        return drafts

    @template("calories")
    def _calorie_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                "calories",
                f"How many calories per serving are in the {r.title}?",
                answer_gold(str(r.calories), f"{r.calories} kcal", f"{r.calories} calories"),
                (r.key,),
                (
                    *self._open(r),
                    answer(str(r.calories), f"{r.calories} kcal", f"The recipe shows {r.calories} kcal per serving."),
                ),
            )
            for r in self.recipes
        ]

    @template("save-recipe")
    def _save_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                "save-recipe",
                f"Save the {r.title} recipe to my recipe box.",
                state_gold(saved=[r.slug]),
                (r.key,),
                (
                    *self._open(r),
                    click("Save recipe", "I'll save it to the recipe box.", role="button"),
                    answer(
                        f"Saved {r.title} to the recipe box.",
                        "to your recipe box",
                        "The page confirms it was saved, so I'm done.",
                    ),
                ),
            )
            for r in self.recipes
        ]

    @template("top-rated-diet", test_only=True)
    def _top_rated_drafts(self) -> list[TaskSpec]:
        drafts = []
        for diet in DIETS:
            for cuisine in CUISINES:
                group = sorted(
                    (r for r in self.recipes if r.cuisine == cuisine and diet in r.diets), key=lambda r: -r.rating
                )
                if len(group) < 2 or group[0].rating == group[1].rating:
                    continue
                best = group[0]
                drafts.append(
                    TaskSpec(
                        "top-rated-diet",
                        f"What is the highest-rated {diet.lower()} {cuisine} recipe on Hearth & Herb?",
                        answer_gold(best.title),
                        (best.key,),
                        (
                            click(cuisine, f"I'll browse the {cuisine} recipes."),
                            click(diet, f"I'll keep only {diet.lower()} recipes."),
                            click(
                                "Top rated",
                                "I'll pick Top rated in the Sort by menu to put the highest-rated recipe first.",
                                role="option",
                            ),
                            answer(
                                best.title,
                                best.title,
                                f"The top result is {best.title}, rated {best.rating / 10:.1f} stars.",
                            ),
                        ),
                    )
                )
        return drafts

    @template("ingredient-count", test_only=True)
    def _count_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                "ingredient-count",
                f"How many ingredients does the {r.title} recipe use?",
                answer_gold(str(len(r.ingredients))),
                (r.key,),
                (
                    *self._open(r),
                    answer(
                        str(len(r.ingredients)),
                        f"Ingredients ({len(r.ingredients)})",
                        f"The ingredients heading says there are {len(r.ingredients)}.",
                    ),
                ),
            )
            for r in self.recipes
        ]


_SORT_KEYS: dict[str, Callable[[Recipe], Any]] = {
    "relevance": lambda r: r.rank,
    "rating": lambda r: (-r.rating, -r.reviews),
    "quickest": lambda r: (r.total, r.rank),
    "calories": lambda r: (r.calories, r.rank),
}


def _method(r: Recipe) -> list[str]:
    first, *rest = [i.item for i in r.ingredients]
    return [
        f"Prepare the {first} and measure out the remaining ingredients.",
        f"Combine the {', '.join(rest[:3])} in a large pan over medium heat.",
        f"Add the {first} and cook for {duration(max(r.cook, 5))}, stirring now and then.",
        f"Taste, adjust the seasoning and serve {r.servings} portions.",
    ]
