"""Northwind Outfitters: an outdoor-gear shop, the sandbox's stand-in for WebVoyager's shops.

Search, department pages, sidebar filters (department, colour, customer review, price), a sort
bar, pagination, product pages with a specifications table, and a cart kept on the server
(`/__state` -> {"cart": {sku: quantity}}). Products are generated from a fixed seed. Entities
are pooled by department and colour (`shop:combo:<department>:<colour>`), so everything the test
split asks about blue backpacks, say, never appears in training. Pages: `templates/shop/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from random import Random
from itertools import product
from typing import Any, Callable, NamedTuple

from evolver_core.suites.sandbox.spec import (
    Pools, TaskSpec, answer, answer_gold, click, fill, search, state_gold, template, unique_best
)
from evolver_core.suites.sandbox.web import (
    Facet, Request, Response, Route, Site, counted, paginate, redirect, route, url, words
)

SEED = 101
PER_DEPARTMENT = 24
PER_PAGE = 10
SEARCH_LABEL = "Search Northwind"


@dataclass(frozen=True)
class Department:
    slug: str
    name: str
    kinds: tuple[str, ...]
    dollars: tuple[int, int]
    grams: tuple[int, int]
    uses: tuple[str, ...]


DEPARTMENTS = (
    Department(
        "backpacks",
        "Backpacks",
        ("Daypack", "Backpack", "Travel Pack"),
        (25, 220),
        (450, 2100),
        ("day hikes", "commuting", "multi-day treks"),
    ),
    Department(
        "tents",
        "Tents",
        ("Tent", "Shelter", "Bivy"),
        (60, 520),
        (900, 4200),
        ("backpacking", "car camping", "alpine nights"),
    ),
    Department(
        "jackets",
        "Jackets",
        ("Rain Jacket", "Softshell", "Down Jacket"),
        (45, 380),
        (180, 900),
        ("wet trails", "cold mornings", "windy ridges"),
    ),
    Department(
        "hiking-boots",
        "Hiking Boots",
        ("Hiking Boot", "Trail Boot", "Mid Boot"),
        (55, 260),
        (700, 1600),
        ("rocky trails", "long approaches", "muddy paths"),
    ),
    Department(
        "sleeping-bags",
        "Sleeping Bags",
        ("Sleeping Bag", "Quilt", "Mummy Bag"),
        (40, 450),
        (600, 2400),
        ("summer camping", "shoulder seasons", "winter trips"),
    ),
    Department(
        "water-bottles",
        "Water Bottles",
        ("Water Bottle", "Insulated Bottle", "Flask"),
        (8, 55),
        (90, 650),
        ("hydration on the go", "long drives", "hot days"),
    ),
    Department(
        "headlamps",
        "Headlamps",
        ("Headlamp", "Head Torch", "Trail Light"),
        (12, 120),
        (40, 220),
        ("night hikes", "camp chores", "early starts"),
    ),
    Department(
        "trekking-poles",
        "Trekking Poles",
        ("Trekking Poles", "Hiking Staff", "Trail Poles"),
        (20, 190),
        (220, 640),
        ("steep descents", "river crossings", "long treks"),
    ),
)
COLORS = ("Black", "Blue", "Red", "Green", "Grey", "Orange")
BRANDS = ("Alpenwerk", "Ridgeline", "Northpeak", "Cascadia", "Trailhand", "Summitry")
MODELS = (
    "Vista",
    "Summit",
    "Ember",
    "Drift",
    "Quest",
    "Alto",
    "Boreal",
    "Cirrus",
    "Dune",
    "Fjord",
    "Glade",
    "Halo",
    "Kestrel",
    "Lumen",
    "Mesa",
    "Nomad",
    "Orbit",
    "Pika",
    "Sierra",
    "Talus",
    "Umbra",
    "Vale",
    "Zephyr",
    "Aspen",
    "Basalt",
    "Cobalt",
    "Delta",
    "Echo",
    "Flint",
    "Granite",
    "Harbor",
    "Juniper",
)
FEATURES = (
    "Water-resistant recycled fabric",
    "Lifetime warranty",
    "Reflective details for low light",
    "Packs into its own pocket",
    "Adjustable fit system",
    "Tested in the Cascades",
    "Repair kit included",
    "Bluesign-approved materials",
)
PRICES = (
    ("Under $25", None, 2500),
    ("$25 to $50", 2500, 5000),
    ("$50 to $100", 5000, 10000),
    ("$100 to $200", 10000, 20000),
    ("$200 & Above", 20000, None),
)
REVIEWS = (("4 Stars & Up", 40), ("3 Stars & Up", 30))
SORTS = (
    ("featured", "Featured"),
    ("price-asc", "Price: Low to High"),
    ("price-desc", "Price: High to Low"),
    ("rating", "Avg. Customer Review"),
    ("newest", "Newest Arrivals"),
)
FIRST_DAY = date(2023, 1, 9)
REVIEWERS = ("Sam K.", "Alex P.", "Jordan M.", "Riley T.", "Casey L.", "Morgan D.", "Jamie R.", "Taylor B.")
REVIEW_TITLES = ("Does the job", "Great for the price", "Solid and well made", "Better than expected", "A few quirks")
REVIEW_LINES = (
    "Held up well on {use}.",
    "Fits exactly as described.",
    "Good value for the price.",
    "Lighter than I expected.",
    "The color is just like the photos.",
    "Would buy again.",
    "Took a while to arrive but worth it.",
    "The stitching came loose after a month.",
    "Customer service sorted out a sizing issue quickly.",
)


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    brand: str
    department: Department
    color: str
    cents: int
    rating: int  # tenths of a star
    reviews: int
    grams: int
    stock: int
    added: date
    rank: int  # "featured" order
    use: str
    features: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{combo_key(self.department, self.color)}/product:{self.sku}"


def combo_key(dept: Department, color: str) -> str:
    return f"shop:combo:{dept.slug}:{color.lower()}"


def money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


def plain_money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def weight(grams: int) -> str:
    return f"{grams / 1000:.2f} kg" if grams >= 1000 else f"{grams} g"


def stars(rating: int) -> str:
    return f"{rating / 10:.1f} out of 5 stars"


def make_products(seed: int = SEED) -> list[Product]:
    rng = Random(seed)
    names: set[str] = set()
    products: list[Product] = []
    for dept in DEPARTMENTS:
        for i in range(PER_DEPARTMENT):
            name = ""
            while not name or name in names:
                name = f"{rng.choice(BRANDS)} {rng.choice(MODELS)} {rng.choice(dept.kinds)}"
            names.add(name)
            dollars = rng.randint(*dept.dollars)
            products.append(
                Product(
                    sku=f"NW-{1000 + len(products) * 7 + rng.randint(0, 6)}",
                    name=name,
                    brand=name.split()[0],
                    department=dept,
                    color=COLORS[(i + rng.randint(0, 5)) % len(COLORS)],
                    cents=dollars * 100 - rng.choice((1, 1, 1, 51, 5)),
                    rating=rng.choice((28, 31, 33, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49)),
                    reviews=rng.randint(3, 2400),
                    grams=rng.randint(*dept.grams) // 5 * 5,
                    stock=rng.choice((0, 2, 3, 8, 25, 40, 60, 120)),
                    added=FIRST_DAY + timedelta(days=rng.randint(0, 700)),
                    rank=rng.randint(0, 10_000),
                    use=rng.choice(dept.uses),
                    features=tuple(rng.sample(FEATURES, 3)),
                )
            )
    return products


class Review(NamedTuple):
    title: str
    stars: int
    name: str
    text: str


class Shop(Site):
    name = "shop"
    title = "Northwind Outfitters"
    search_label = SEARCH_LABEL
    search_placeholder = "Search products"
    page_globals = {"money": money, "stars": stars, "weight": weight}

    def __init__(self, seed: int = SEED):
        self.products = make_products(seed)
        self.by_sku = {p.sku: p for p in self.products}
        self._words = {
            p.sku: words(f"{p.name} {p.department.name} {p.color} {p.brand}", stem=True) for p in self.products
        }
        self.pools = Pools(self.name, (combo_key(d, c) for d in DEPARTMENTS for c in COLORS))

    # --- serving -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("GET", "/", self.home),
            route("GET", "/search", self.results),
            route("GET", r"/product/(?P<sku>[\w-]+)", self.product),
            route("GET", "/cart", self.cart),
            route("POST", "/cart/add", self.add_to_cart),
            route("POST", "/cart/remove", self.remove_from_cart),
        ]

    def initial_state(self) -> dict[str, Any]:
        return {"cart": {}}

    def home(self, req: Request) -> Response:
        return self.render(
            req,
            "home",
            "Outdoor gear and clothing",
            departments=[(d.name, url("/search", department=d.slug)) for d in DEPARTMENTS],
            favourites=sorted(self.products, key=lambda p: (-p.rating, -p.reviews))[:5],
        )

    def results(self, req: Request) -> Response:
        dept = next((d for d in DEPARTMENTS if d.slug == req.arg("department")), None)
        color = req.arg("color").title() if req.arg("color").title() in COLORS else ""
        review = next((r for r in REVIEWS if str(r[1] // 10) == req.arg("rating")), None)
        price = next((p for p in PRICES if _price_slug(p) == req.arg("price")), None)
        sort = req.arg("sort") if req.arg("sort") in dict(SORTS) else "featured"
        q = req.arg("q")
        found = [p for p in self.products if self._match(p, q, dept, color, review, price)]
        found.sort(key=_SORT_KEYS[sort])
        params: dict[str, object] = {
            "q": q,
            "department": dept.slug if dept else "",
            "color": color.lower(),
            "rating": review[1] // 10 if review else "",
            "price": _price_slug(price) if price else "",
            "sort": sort,
        }

        def href(**change: object) -> str:
            return url("/search", params, **change)

        facets = [
            Facet(
                "Department",
                [("Any department", href(department="", page=""))]
                + [(d.name, href(department=d.slug)) for d in DEPARTMENTS],
                dept.name if dept else "Any department",
            ),
            Facet("Color", [(c, href(color=c.lower())) for c in COLORS], color),
            Facet(
                "Customer Review", [(label, href(rating=v // 10)) for label, v in REVIEWS], review[0] if review else ""
            ),
            Facet("Price", [(p[0], href(price=_price_slug(p))) for p in PRICES], price[0] if price else ""),
        ]
        return self.render(
            req,
            "results",
            f"Results for “{q}”" if q else (dept.name if dept else "All departments"),
            q=q,
            page=paginate(found, req.page_number(), PER_PAGE),
            params=params,
            sorts=[(label, href(sort=key)) for key, label in SORTS],
            sort=dict(SORTS)[sort],
            facets=facets,
        )

    def _match(
        self,
        p: Product,
        q: str,
        dept: Department | None,
        color: str,
        review: tuple[str, int] | None,
        price: tuple[str, int | None, int | None] | None,
    ) -> bool:
        if q and not words(q, stem=True) <= self._words[p.sku]:
            return False
        if (dept and p.department != dept) or (color and p.color != color) or (review and p.rating < review[1]):
            return False
        return not price or ((price[1] is None or p.cents >= price[1]) and (price[2] is None or p.cents < price[2]))

    def product(self, req: Request, sku: str) -> Response:
        p = self.by_sku.get(sku)
        if p is None:
            return self.not_found(req)
        return self.render(req, "product", p.name, p=p, reviews=_reviews(p))

    def cart(self, req: Request) -> Response:
        lines = [(self.by_sku[sku], qty) for sku, qty in req.state["cart"].items()]
        return self.render(req, "cart", "Shopping Cart", lines=lines, total=sum(p.cents * qty for p, qty in lines))

    def add_to_cart(self, req: Request) -> Response:
        p = self.by_sku.get(req.form.get("sku", ""))
        if p is None or p.stock == 0:
            return self.not_found(req)
        qty_text = req.form.get("qty", "").strip() or "1"
        qty = min(10, max(1, int(qty_text))) if qty_text.isdigit() else 1
        req.state["cart"][p.sku] = req.state["cart"].get(p.sku, 0) + qty
        req.state["_flash"] = f"Added {qty} × {p.name} to your cart."
        return redirect("/cart")

    def remove_from_cart(self, req: Request) -> Response:
        req.state["cart"].pop(req.form.get("sku", ""), None)
        return redirect("/cart")

    # --- tasks ---------------------------------------------------------------------------

    def opening(self, p: Product) -> list[dict[str, Any]]:
        return [
            search(SEARCH_LABEL, p.name, f"I'll search the shop for the {p.name}."),
            click(p.name, f"The {p.name} is in the results; I'll open its product page."),
        ]

    def _of(self, dept: Department, color: str = "", brand: str = "", rating: int = 0) -> list[Product]:
        """The products of a department, of one colour or brand where given, rated `rating` or more."""
        return [
            p
            for p in self.products
            if p.department == dept and (not color or p.color == color) and (not brand or p.brand == brand)
            and p.rating >= rating
        ]

    def _in_stock(self) -> list[Product]:
        return [p for p in self.products if p.stock > 0]

    @template("product-price")
    def _price_drafts(self) -> list[TaskSpec]:
        phrasings = ("What is the price of the {}?", "How much does the {} cost?", "Find the {} and tell me its price.")
        return [
            self.about(
                p,
                Random(p.sku).choice(phrasings).format(p.name),
                answer_gold(plain_money(p.cents), money(p.cents)),
                answer(plain_money(p.cents), money(p.cents), f"The product page shows the price: {money(p.cents)}."),
            )
            for p in self.products
        ]

    @template("product-weight")
    def _weight_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                p,
                f"How much does the {p.name} weigh?",
                answer_gold(weight(p.grams), f"{p.grams} g", f"{p.grams} grams"),
                answer(
                    weight(p.grams),
                    weight(p.grams),
                    f"The product details list the item weight as {weight(p.grams)}.",
                    seek="the item weight in the product details",
                ),
            )
            for p in self.products
        ]

    @template("cheapest-filtered")
    def _cheapest_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                f"What is the price of the cheapest {color.lower()} item in {dept.name} "
                "with a customer rating of 4 stars or more?",
                answer_gold(plain_money(best.cents), money(best.cents)),
                (combo_key(dept, color),),
                (
                    click(dept.name, f"I'll open the {dept.name} department."),
                    click(color, f"Now I'll filter the {dept.name} by the color {color}."),
                    click("4 Stars & Up", "Next I'll keep only items rated 4 stars and up."),
                    click("Price: Low to High", "Sorting by price from low to high puts the cheapest item first."),
                    answer(
                        plain_money(best.cents),
                        money(best.cents),
                        f"The first result, the {best.name}, is the cheapest at {money(best.cents)}.",
                    ),
                ),
            )
            for dept, color in product(DEPARTMENTS, COLORS)
            if (best := unique_best(self._of(dept, color=color, rating=40), key=lambda p: p.cents))
        ]

    @template("top-rated-brand")
    def _top_rated_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                f"Which {brand} product in {dept.name} has the highest average customer rating?",
                answer_gold(best.name),
                (best.key,),
                (
                    search(SEARCH_LABEL, f"{brand} {dept.name}", f"I'll search for {brand} {dept.name.lower()}."),
                    click(
                        "Avg. Customer Review", "Sorting by average customer review puts the best-rated product first."
                    ),
                    answer(best.name, best.name, f"The top result is the {best.name}, rated {stars(best.rating)}."),
                ),
            )
            for dept, brand in product(DEPARTMENTS, BRANDS)
            if (best := unique_best(self._of(dept, brand=brand), key=lambda p: -p.rating))
        ]

    @template("add-to-cart")
    def _add_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                p,
                f"Add the {p.name} to my shopping cart.",
                state_gold(cart={p.sku: 1}),
                click("Add to cart", "I'll add it to the cart.", role="button"),
                answer(
                    f"The {p.name} is in the cart.",
                    "to your cart",
                    "The cart confirms the item was added, so I'm done.",
                ),
            )
            for p in self._in_stock()
        ]

    @template("add-quantity", test_only=True)
    def _add_quantity_drafts(self) -> list[TaskSpec]:
        return [
            self.about(
                p,
                f"Put {n} units of the {p.name} in my cart.",
                state_gold(cart={p.sku: n}),
                fill("Quantity", str(n), f"I'll set the quantity to {n}."),
                click("Add to cart", "Now I'll add them to the cart.", role="button"),
                answer(
                    f"Added {n} × {p.name} to the cart.",
                    "to your cart",
                    f"The cart confirms {n} were added, so I'm done.",
                ),
            )
            for p in self._in_stock()
            for n in [Random(p.sku).randint(2, 4)]
        ]

    @template("count-color", test_only=True)
    def _count_drafts(self) -> list[TaskSpec]:
        return [
            TaskSpec(
                f"How many {color.lower()} products does Northwind sell in {dept.name}?",
                answer_gold(str(n)),
                (combo_key(dept, color),),
                (
                    click(dept.name, f"I'll open the {dept.name} department."),
                    click(color, f"I'll filter by the color {color}; the result count answers the question."),
                    answer(
                        str(n),
                        f"of {counted(n, 'result')}",
                        f"The page reports {n} results for {color.lower()} {dept.name.lower()}.",
                    ),
                ),
            )
            for dept, color in product(DEPARTMENTS, COLORS)
            if (n := len(self._of(dept, color=color)))
        ]


def _price_slug(price: tuple[str, int | None, int | None]) -> str:
    low, high = price[1], price[2]
    return f"{(low or 0) // 100}-{high // 100}" if high is not None else f"{(low or 0) // 100}-up"


_SORT_KEYS: dict[str, Callable[[Product], Any]] = {
    "featured": lambda p: p.rank,
    "price-asc": lambda p: (p.cents, p.rank),
    "price-desc": lambda p: (-p.cents, p.rank),
    "rating": lambda p: (-p.rating, -p.reviews),
    "newest": lambda p: (-p.added.toordinal(), p.rank),
}


def _reviews(p: Product) -> list[Review]:
    """Three short customer reviews, seeded by the product."""
    rng = Random(f"reviews:{p.sku}")
    out = []
    for name in rng.sample(REVIEWERS, 3):
        text = " ".join(line.format(use=p.use) for line in rng.sample(REVIEW_LINES, 2))
        title = rng.choice(REVIEW_TITLES)  # drawn in this order: the seed's sequence is the data
        out.append(Review(title, rng.randint(3, 5), name, text))
    return out
