"""Hearth & Herb: a recipe site, the sandbox's stand-in for WebVoyager's Allrecipes tasks.

Search, cuisine/course/diet filters, a "Sort by" <select> (it submits on change), recipe pages
(times, servings, calories, ingredients, method) and a recipe box kept on the server
(`/__state` -> {"saved": [slug]}).
Recipes are generated from a fixed seed; each recipe is its own entity (`recipes:recipe:<slug>`).
Pages: `templates/recipes/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from random import Random
from itertools import product
from typing import Any, Callable

from evolver_core.suites.sandbox.spec import (
    Pools, TaskSpec, answer, answer_gold, click, search, state_gold, template, unique_best
)
from evolver_core.suites.sandbox.web import (
    Facet, Request, Response, Route, Site, paginate, route, save_item, unsave_item, url, words
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


class Recipes(Site):
    name = "recipes"
    title = "Hearth & Herb"
    search_action = "/recipes"
    search_label = SEARCH_LABEL
    search_placeholder = "Find a recipe"
    page_globals = {"duration": duration, "sorts": SORTS}

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

    def home(self, req: Request) -> Response:
        return self.render(
            req,
            "home",
            "Recipes for every day",
            groups=[
                (heading, [(x, url("/recipes", **{key: x})) for x in values])
                for heading, key, values in (
                    ("Cuisines", "cuisine", CUISINES),
                    ("Courses", "course", COURSES),
                    ("Diets", "diet", DIETS),
                )
            ],
            picks=[(r.title, f"/recipe/{r.slug}") for r in sorted(self.recipes, key=lambda r: r.rank)[:5]],
        )

    def results(self, req: Request) -> Response:
        q = req.arg("q")
        cuisine = req.arg("cuisine") if req.arg("cuisine") in CUISINES else ""
        course = req.arg("course") if req.arg("course") in COURSES else ""
        diet = req.arg("diet") if req.arg("diet") in DIETS else ""
        sort = req.arg("sort") if req.arg("sort") in dict(SORTS) else "relevance"
        found = [
            r
            for r in self.recipes
            if (not q or words(q) <= words(f"{r.title} {r.cuisine} {r.course} {r.author}"))
            and (not cuisine or r.cuisine == cuisine)
            and (not course or r.course == course)
            and (not diet or diet in r.diets)
        ]
        found.sort(key=_SORT_KEYS[sort])
        params: dict[str, object] = {"q": q, "cuisine": cuisine, "course": course, "diet": diet, "sort": sort}

        def href(**change: object) -> str:
            return url("/recipes", params, **change)

        named = " ".join(x for x in (diet, cuisine, course) if x)
        facets = [
            Facet(
                heading, [(anything, href(**{key: ""}))] + [(x, href(**{key: x})) for x in values], chosen or anything
            )
            for heading, key, values, anything, chosen in (
                ("Cuisine", "cuisine", CUISINES, "All cuisines", cuisine),
                ("Course", "course", COURSES, "All courses", course),
                ("Diet", "diet", DIETS, "Any diet", diet),
            )
        ]
        return self.render(
            req,
            "results",
            f"Recipes matching “{q}”" if q else f"{named} recipes" if named else "All recipes",
            page=paginate(found, req.page_number(), PER_PAGE),
            params=params,
            sort=sort,
            facets=facets,
        )

    def recipe(self, req: Request, slug: str) -> Response:
        r = self.by_slug.get(slug)
        if r is None:
            return self.not_found(req)
        return self.render(req, "recipe", r.title, r=r, saved=slug in req.state["saved"])

    def saved(self, req: Request) -> Response:
        links = [(self.by_slug[s].title, f"/recipe/{s}") for s in req.state["saved"]]
        return self.render(req, "saved", "My recipe box", links=links, empty="Your recipe box is empty.")

    def save(self, req: Request) -> Response:
        r = self.by_slug.get(req.form.get("slug", ""))
        if r is None:
            return self.not_found(req)
        return save_item(req, "saved", r.slug, f"Saved {r.title} to your recipe box.", f"/recipe/{r.slug}")

    def unsave(self, req: Request) -> Response:
        slug = req.form.get("slug", "")
        return unsave_item(req, "saved", slug, f"/recipe/{slug}" if slug in self.by_slug else "/saved")

    # --- tasks ---------------------------------------------------------------------------

    def _of(self, cuisine: str, course: str = "", diet: str = "") -> list[Recipe]:
        """The recipes of a cuisine, of one course or diet where given (as the results page filters)."""
        return [
            r
            for r in self.recipes
            if r.cuisine == cuisine and (not course or r.course == course) and (not diet or diet in r.diets)
        ]

    def opening(self, r: Recipe) -> list[dict[str, Any]]:
        return [
            search(SEARCH_LABEL, r.title, f"I'll search for the {r.title} recipe."),
            click(r.title, "The recipe is in the results; I'll open it."),
        ]

    @template("cook-time")
    def _cook_time_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"What is the cook time of the {r.title} recipe on Hearth & Herb?",
                answer_gold(duration(r.cook), *duration_aliases(r.cook)),
                answer(duration(r.cook), duration(r.cook), f"The recipe lists a cook time of {duration(r.cook)}."),
            )
            for r in self.recipes
            if r.cook > 0
        ]

    @template("ingredient-amount")
    def _amount_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"How much {ing.item} does the {r.title} recipe call for?",
                answer_gold(ing.quantity, f"{ing.amount} {UNITS[ing.unit]}"),
                answer(ing.quantity, ing.line(), f"The ingredient list says {ing.line()}."),
            )
            for r in self.recipes
            for ing in [Random(r.slug).choice([i for i in r.ingredients if i.unit])]
        ]

    def _browse_sorted(
        self, query: str, best: Recipe, narrow: dict[str, Any], sort: str, puts_first: str, found: str
    ) -> TaskSpec:
        """A task answered by the first result after browsing `best`'s cuisine, narrowing it
        (the step `narrow`) and picking `sort` in the Sort by menu."""
        return TaskSpec(
            query,
            answer_gold(best.title),
            (best.key,),
            (
                click(best.cuisine, f"I'll browse the {best.cuisine} recipes."),
                narrow,
                click(sort, f"I'll pick {sort} in the Sort by menu to put {puts_first} first.", role="option"),
                answer(best.title, best.title, found),
            ),
        )

    @template("quickest")
    def _quickest_drafts(self) -> list[TaskSpec]:
        return [
            self._browse_sorted(
                f"Which {cuisine} {course.lower()} recipe on Hearth & Herb takes the least total time?",
                best,
                click(course, f"I'll narrow them to the {course} course."),
                "Quickest",
                "the shortest total time",
                f"The first result, {best.title}, takes {duration(best.total)} in total.",
            )
            for cuisine, course in product(CUISINES, COURSES)
            if (best := unique_best(self._of(cuisine, course=course), key=lambda r: r.total))
        ]

    @template("calories")
    def _calorie_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"How many calories per serving are in the {r.title}?",
                answer_gold(str(r.calories), f"{r.calories} kcal", f"{r.calories} calories"),
                answer(str(r.calories), f"{r.calories} kcal", f"The recipe shows {r.calories} kcal per serving."),
            )
            for r in self.recipes
        ]

    @template("save-recipe")
    def _save_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"Save the {r.title} recipe to my recipe box.",
                state_gold(saved=[r.slug]),
                click("Save recipe", "I'll save it to the recipe box.", role="button"),
                answer(
                    f"Saved {r.title} to the recipe box.",
                    "to your recipe box",
                    "The page confirms it was saved, so I'm done.",
                ),
            )
            for r in self.recipes
        ]

    @template("top-rated-diet", test_only=True)
    def _top_rated_drafts(self) -> list[TaskSpec]:
        return [
            self._browse_sorted(
                f"What is the highest-rated {diet.lower()} {cuisine} recipe on Hearth & Herb?",
                best,
                click(diet, f"I'll keep only {diet.lower()} recipes."),
                "Top rated",
                "the highest-rated recipe",
                f"The top result is {best.title}, rated {best.rating / 10:.1f} stars.",
            )
            for diet, cuisine in product(DIETS, CUISINES)
            if (best := unique_best(self._of(cuisine, diet=diet), key=lambda r: -r.rating))
        ]

    @template("ingredient-count", test_only=True)
    def _count_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                r,
                f"How many ingredients does the {r.title} recipe use?",
                answer_gold(str(len(r.ingredients))),
                answer(
                    str(len(r.ingredients)),
                    f"Ingredients ({len(r.ingredients)})",
                    f"The ingredients heading says there are {len(r.ingredients)}.",
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
