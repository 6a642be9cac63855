"""Synthetic operational sources of an online retailer, with known answers.

The generator writes the three files the product ingests (customer_info.csv, product.csv,
purchase.csv) plus ground_truth.json, which records what was planted: category and product
affinities the association rules must recover, and defect rows the quarantine must catch, by
file and reason. Everything is drawn from one seed and `end`, so a sample can be rebuilt byte
for byte, and every step works on whole numpy columns so an Instacart-sized sample (about 33M
order lines) takes under a minute.

Customers behave as they do in real retail, so that a customer's history says something about
their next purchase: each has lasting tastes (which categories they like, a few favourite products
they reorder), buys from a repertoire of categories that grows over their orders, and takes up a
planted consequent (Meats, say) soon after its antecedent (Wines). The planted affinities therefore
hold inside baskets, where the association rules find them, and across a customer's history, where
the cross-sell recommendations and their backtest need them. How often and how long they buy
follows BG/NBD (a purchase rate and a dropout per customer), recorded in ground_truth.json as
purchase_process, so that the predicted customer lifetime value and its backtest have a truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from product_affinity.contract.odcs import table
from product_affinity.defaults import SAMPLE_HISTORY_DAYS, SAMPLE_SEED

from product_affinity.reference import COUNTRY_SPELLINGS


TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
DAY = 86_400

# The catalogue (categories, their subcategories, pack sizes and product names) and the vocabulary customers
# are drawn from are data, in catalogue.yaml beside this file; what follows in code is how customers buy.
CATALOGUE = yaml.safe_load(Path(__file__).with_name("catalogue.yaml").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Category:
    share: float
    median_price: float
    price_spread: float
    subcategories: dict[str, tuple[tuple[tuple[str, float], ...], tuple[str, ...]]]


CATEGORIES: dict[str, Category] = {
    name: Category(c["share"], c["median_price"], c["price_spread"],
                   {sub: (tuple((label, factor) for label, factor in s["sizes"]), tuple(s["products"]))
                    for sub, s in c["subcategories"].items()})
    for name, c in CATALOGUE["categories"].items()
}
CATEGORY_NAMES = tuple(CATEGORIES)
RANGES = tuple(CATALOGUE["ranges"])
BRANDS = tuple(CATALOGUE["brands"])
POPULARITY_EXPONENT = 1.0  # Zipf exponent of product popularity within a category

# Affinities worth planting: (antecedent, consequent). Three are drawn with no shared category.
CATEGORY_AFFINITY_POOL = tuple(tuple(pair) for pair in CATALOGUE["category_affinity_pool"])
CATEGORY_AFFINITY_PROBABILITY = 0.1  # an order with the antecedent and not the consequent gets it as an add-on
PRODUCT_AFFINITY_PROBABILITY = 0.8  # the same for a planted product pair
PRODUCT_AFFINITY_RANKS = (100, 150)  # popularity ranks (at 400 products) of the planted products

# Customers' lasting tastes. Each customer has a lognormal liking of each category; the likings of a
# planted pair's two categories are correlated (a "wine and dine" customer likes both). They start
# with the FIRST_CATEGORIES categories they are quickest to take up and take up each other one after
# an exponential number of orders, sooner the more they like it; a planted consequent is taken up
# only after its antecedent, and then soon (CONSEQUENT_LAG of its own wait later). An order's
# missions are drawn from the categories taken up so far, weighted by (share of lines x liking) **
# MISSION_FLATTENING. A line in a category is, with REORDER_PROBABILITY, one of the customer's few
# favourite products there, mostly best sellers (drawn by popularity ** FAVOURITE_SKEW; at Instacart
# scale a category's best seller is then in about 14% of orders, as bananas are at Instacart): about
# half the lines reorder a product the customer bought before (Instacart: 59%).
TASTE_SPREAD = 1.0  # standard deviation of a customer's log liking of a category
PAIR_TASTE_CORRELATION = 0.5  # between the log likings of a planted pair's two categories
FIRST_CATEGORIES = 5
ADOPTION_RATE = 0.02  # categories taken up per order, for one of average liking
CONSEQUENT_LAG = 0.15
FAVOURITES_PER_CATEGORY, FAVOURITE_SKEW, REORDER_PROBABILITY = 3, 1.5, 0.5

# How often customers buy, and for how long: the BG/NBD process (Fader, Hardie and Lee 2005), so that the predicted
# customer lifetime value has something true to find. A buyer joins at a uniform time on the calendar's clock (the
# share of the history's orders up to a moment, so seasons and growth still shape the calendar) and, while alive,
# orders as a Poisson process with a rate from Gamma(PURCHASE_RATE_SHAPE, scale set to give the sample its size);
# after each order they stop for good with a probability from Beta(*DROPOUT_BETA) (mean 4%: a grocery's regulars
# stay longer than CDNOW's CD buyers, whose fit is Beta(0.79, 2.43)). Rates and dropout are independent of tastes.
PURCHASE_RATE_SHAPE = 0.9
DROPOUT_BETA = (2.0, 48.0)
MAX_REPEATS_PER_BUYER = 500  # draws of a buyer's possible repeat orders stop here (or at 10x the mean needed)

# Baskets: size = 1 + negative binomial (Instacart-like, mean about 9.7 after planting). Lines come
# from a few "mission" categories of the customer's (more for bigger baskets; flattened weights, so
# small departments get their own trips more often than their share of lines suggests), plus a line
# or so bought on impulse in any category the customer buys.
BASKET_SHAPE, BASKET_EXTRA_MEAN, BASKET_BASE_CAP = 1.3, 8.7, 42
MAX_MISSIONS, LINES_PER_EXTRA_MISSION, MISSION_FLATTENING = 6, 7.0, 0.5
IMPULSE_LINES = 0.8  # per order, whatever its size
CANDIDATE_LINES = 3  # per line wanted, so repeated products do not leave baskets short
ORDERS_PER_CHUNK = 1 << 20  # baskets are drawn this many orders at a time, to bound memory
DEAL_PROBABILITY, DEAL_DISCOUNT = 0.12, (0.10, 0.30)
QUANTITY_PROBABILITIES = (0.80, 0.11, 0.05, 0.02, 0.012, 0.008)  # quantities 1..6

# Calendar: orders by weekday (Monday first), month and hour; 30% growth over the history.
WEEKDAY_WEIGHTS = (0.95, 0.9, 0.9, 0.95, 1.05, 1.15, 1.1)
MONTH_WEIGHTS = (0.9, 0.9, 1.0, 1.0, 1.0, 0.95, 0.95, 0.95, 1.0, 1.05, 1.3, 1.5)
HOUR_WEIGHTS = (0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.5, 4.0, 5.5, 6.0,
                6.0, 6.0, 6.0, 5.8, 5.5, 5.0, 4.2, 3.5, 2.8, 2.1, 1.5, 0.9)
GROWTH_OVER_HISTORY = 1.3

# Customers.
FIRST_NAMES = tuple(CATALOGUE["first_names"])
LAST_NAMES = tuple(CATALOGUE["last_names"])
EMAIL_DOMAINS = tuple(CATALOGUE["email_domains"])
MESSY_EMAIL_SHARE = 0.03
EDUCATION = CATALOGUE["education"]
MARITAL_STATUS = CATALOGUE["marital_status"]
COUNTRY_WEIGHTS = CATALOGUE["countries"]
ALIAS_SHARE, RECASED_SHARE = 0.15, 0.08
NON_BUYER_SHARE = 0.05
CHANNELS = ("web", "store", "catalog")
CHANNEL_PREFERENCE = (0.6, 0.3, 0.1)
PREFERRED_CHANNEL_SHARE = 0.85

DEFECT_SHARE = 0.002  # of a file's genuine rows, per reason
QUANTITY_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class Catalogue:
    """Products in internal order (grouped by category), with what baskets need to draw them."""

    product_id: np.ndarray  # internal index -> product_id
    category: np.ndarray  # internal index -> category code (index in CATEGORY_NAMES)
    list_cents: np.ndarray
    draw_key: np.ndarray  # category code + cumulative popularity within the category, for searchsorted
    favourite_key: np.ndarray  # the same for popularity ** FAVOURITE_SKEW: how favourites are drawn
    frame: pl.DataFrame  # product.csv rows, by product_id


@dataclass(frozen=True)
class Tastes:
    """What each customer buys: how much they weigh each category, from when, and their favourite products."""

    category_weight: np.ndarray  # customer x category
    adopted_at: np.ndarray  # customer x category -> the customer's order number (0 = first) from which they buy it
    favourites: np.ndarray  # customer x category x FAVOURITES_PER_CATEGORY -> internal product index


@dataclass(frozen=True)
class Orders:
    """Genuine orders in time order (order_id = position + 1) and their lines, grouped by order."""

    purchased_at: np.ndarray  # epoch seconds
    customer: np.ndarray  # internal customer index
    channel: np.ndarray  # index in CHANNELS
    line_order: np.ndarray  # order position of each line
    line_product: np.ndarray  # internal product index of each line
    line_number: np.ndarray  # 1, 2, ... within its order


def generate_sample(directory: Path, *, customers: int = 2_000, products: int = 400, orders: int = 20_000,
                    seed: int = SAMPLE_SEED, end: datetime | None = None, history_days: int = SAMPLE_HISTORY_DAYS,
                    defects: bool = True) -> dict:
    """Write customer_info.csv, product.csv, purchase.csv and ground_truth.json into directory; return the ground truth dict."""
    if products < 2 * len(CATEGORIES) or customers < 1 or orders < 1 or history_days < 1:
        raise ValueError(f"need products >= {2 * len(CATEGORIES)} and at least one customer, order and day")
    end = _as_end(end)
    end_s = int((end - datetime(1970, 1, 1)).total_seconds())
    start_s = end_s - history_days * DAY
    # One independent stream per concern, so changing how one part is drawn leaves the others as they were;
    # the calendar has its own, so that another `end` moves the orders in time but not who buys what.
    streams = map(np.random.default_rng, np.random.SeedSequence(seed).spawn(8))
    rng_catalogue, rng_customers, rng_orders, rng_baskets, rng_planting, rng_defects, rng_tastes, rng_calendar = streams

    catalogue = _catalogue(rng_catalogue, products)
    buyer, clock, channel, process = _order_buyers(rng_orders, orders, customers, history_days / 7)
    purchased_at, in_time_order = _order_times(rng_calendar, clock, start_s, end_s)
    buyer, channel = buyer[in_time_order], channel[in_time_order]
    category_pairs = _category_pairs(rng_planting)
    tastes = _tastes(rng_tastes, customers, catalogue, category_pairs)
    line_order, line_product = _basket_lines(rng_baskets, buyer, tastes, catalogue)
    planted = {"category": category_pairs,
               "product": _product_pairs(rng_planting, catalogue, line_product, [b for _, b in category_pairs])}
    line_order, line_product = _plant_affinities(rng_planting, buyer, tastes, line_order, line_product, catalogue,
                                                 planted)
    order_lines = Orders(purchased_at, buyer, channel, line_order, line_product, _line_numbers(line_order, orders))
    customer_frame, customer_id = _customers(rng_customers, customers, order_lines, start_s, end_s)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    customer_counts = _write_customers(directory, rng_defects, customer_frame, defects, start_s, end_s)
    catalogue.frame.write_csv(directory / "product.csv", float_precision=2)
    purchase_counts = _write_purchases(directory, rng_defects, order_lines, catalogue, customer_id, defects,
                                       start_s, end_s)

    parameters = dict(customers=customers, products=products, orders=orders, seed=seed, end=end.isoformat(),
                      history_days=history_days, defects=defects)
    defect_counts = {"customer_info.csv": customer_counts, "product.csv": {}, "purchase.csv": purchase_counts}
    truth = _ground_truth(parameters, catalogue, planted, defect_counts, len(line_order)) | {"purchase_process": process}
    (directory / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def _ground_truth(parameters: dict, catalogue: Catalogue, planted: dict, defects: dict[str, dict[str, int]],
                  genuine_lines: int) -> dict:
    """What the pipeline should find: the planted rules in source keys, the defect rows, the rows per file."""
    genuine_rows = {"customer_info.csv": parameters["customers"], "product.csv": parameters["products"],
                    "purchase.csv": genuine_lines}
    return {
        "parameters": parameters,
        "planted": {
            "category": [[CATEGORY_NAMES[a], CATEGORY_NAMES[b]] for a, b in planted["category"]],
            "product": [[int(catalogue.product_id[a]), int(catalogue.product_id[b])] for a, b in planted["product"]],
        },
        "defects": defects,
        "rows": {name: rows + sum(defects[name].values()) for name, rows in genuine_rows.items()},
    }


def _as_end(end: datetime | None) -> datetime:
    """Naive UTC, whole seconds: the clock the timestamps in the files are written in."""
    if end is None:
        end = datetime.now(timezone.utc)
    if end.tzinfo is not None:
        end = end.astimezone(timezone.utc).replace(tzinfo=None)
    return end.replace(microsecond=0)


# ---------------------------------------------------------------------------------- catalogue


def _category_counts(products: int) -> np.ndarray:
    """Products per category in proportion to its share (largest remainders), at least two each."""
    shares = np.array([c.share for c in CATEGORIES.values()])
    spare = products - 2 * len(shares)
    exact = shares / shares.sum() * spare
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: spare - counts.sum()]] += 1
    return counts + 2


def _catalogue(rng: np.random.Generator, products: int) -> Catalogue:
    """The product list: every category stocked, ids shuffled so they say nothing about the category."""
    counts = _category_counts(products)
    stocked = [_category_products(rng, category, count) for category, count in zip(CATEGORIES.values(), counts)]
    items = pl.concat([frame for frame, _ in stocked])
    category = np.repeat(np.arange(len(CATEGORIES)), counts)
    share = np.concatenate([share for _, share in stocked])
    draw_key = category + _cumulative_within(share, counts)
    favourite_key = category + _cumulative_within(share ** FAVOURITE_SKEW, counts)
    list_cents = items["list_cents"].to_numpy()
    product_id = rng.permutation(products) + 1
    frame = items.select(
        product_id=pl.Series(product_id),
        product_name=pl.concat_str(
            pl.col("brand").replace("", None), pl.col("range").replace("", None), pl.col("base"),
            pl.when(pl.col("edition") > 1).then(pl.format("No. {}", "edition")), separator=" ", ignore_nulls=True),
        category=pl.Series(CATEGORY_NAMES).gather(category),
        subcategory="subcategory",
        list_price=pl.col("list_cents") / 100,
    ).sort("product_id")
    return Catalogue(product_id, category, list_cents, draw_key, favourite_key, frame)


def _category_products(rng: np.random.Generator, category: Category, count: int) -> tuple[pl.DataFrame, np.ndarray]:
    """One category's products (name parts, subcategory, price in cents) and their Zipf share of its sales.

    Names cycle through base x pack size, then add a range word, then a brand, so they stay unique."""
    items = [(sub, f"{base} {size}", factor) for sub, (sizes, bases) in category.subcategories.items()
             for base in bases for size, factor in sizes]
    position = np.arange(count)
    item = rng.permutation(len(items))[position % len(items)]
    price = (np.array([factor for _, _, factor in items])[item] * category.median_price
             * np.exp(rng.normal(0, category.price_spread, count)))
    rank = rng.permutation(count) + 1.0
    frame = pl.DataFrame({
        "brand": np.array(BRANDS)[(position // (len(items) * len(RANGES))) % len(BRANDS)],
        "range": np.array(RANGES)[(position // len(items)) % len(RANGES)],
        "base": np.array([name for _, name, _ in items])[item],
        "edition": position // (len(items) * len(RANGES) * len(BRANDS)) + 1,
        "subcategory": np.array([sub for sub, _, _ in items])[item],
        "list_cents": np.maximum(np.round(price * 100), 49).astype(np.int64),
    })
    return frame, rank ** -POPULARITY_EXPONENT / np.sum(rank ** -POPULARITY_EXPONENT)


def _cumulative_within(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative share of the weights within each consecutive group, ending at exactly 1.0 per group."""
    ends = np.cumsum(counts)
    cumulative = np.cumsum(weights)
    before = np.repeat(np.concatenate([[0.0], cumulative[ends[:-1] - 1]]), counts)
    within = (cumulative - before) / np.repeat(cumulative[ends - 1] - before[ends - 1], counts)
    within[ends - 1] = 1.0
    return within


def _draw_products(rng: np.random.Generator, catalogue: Catalogue, category: np.ndarray, buyer: np.ndarray,
                   tastes: Tastes) -> np.ndarray:
    """One product per requested category: one of the buyer's favourites there, or any, popular ones more often."""
    reordered = rng.random(len(category), dtype=np.float32) < REORDER_PROBABILITY
    product = np.empty(len(category), dtype=np.int32)
    product[reordered] = tastes.favourites[buyer[reordered], category[reordered],
                                           rng.integers(0, FAVOURITES_PER_CATEGORY, reordered.sum(), dtype=np.int8)]
    fresh = ~reordered
    product[fresh] = np.searchsorted(catalogue.draw_key, category[fresh] + rng.random(fresh.sum()), side="right")
    return product


def _category_pairs(rng: np.random.Generator) -> list[tuple[int, int]]:
    """Three (antecedent, consequent) category pairs from the pool, sharing no category."""
    code = {name: i for i, name in enumerate(CATEGORY_NAMES)}
    category_pairs, used = [], set()
    for i in rng.permutation(len(CATEGORY_AFFINITY_POOL)):
        a, b = CATEGORY_AFFINITY_POOL[i]
        if len(category_pairs) < 3 and not {a, b} & used:
            category_pairs.append((code[a], code[b]))
            used |= {a, b}
    return category_pairs


def _product_pairs(rng: np.random.Generator, catalogue: Catalogue, line_product: np.ndarray,
                   busy_categories: list[int]) -> list[tuple[int, int]]:
    """Five pairs of distinct products of the same category, from the popularity ranks we plant at.

    Same-category pairs leave the category-level picture untouched; categories that receive
    planted category lines are skipped, as their products become too common to stand out. The
    ranks scale with the catalogue and widen when a small one has too few candidates."""
    ranked = np.argsort(-np.bincount(line_product, minlength=len(catalogue.category)), kind="stable")
    low, high = (max(round(r * min(1.0, len(ranked) / 400)), 1) for r in PRODUCT_AFFINITY_RANKS)
    while True:
        window = ranked[low - 1:high]
        window = window[~np.isin(catalogue.category[window], busy_categories)]
        pairs, used = [], set()
        for a, b in rng.permutation(np.array(np.meshgrid(window, window)).reshape(2, -1).T):
            if len(pairs) < 5 and a != b and catalogue.category[a] == catalogue.category[b] and not {a, b} & used:
                pairs.append((int(a), int(b)))
                used |= {a, b}
        if len(pairs) == 5 or (low == 1 and high >= len(ranked)):
            return pairs
        low, high = max(low // 2, 1), min(high * 2, len(ranked))


# ------------------------------------------------------------------------------------ tastes


def _tastes(rng: np.random.Generator, customers: int, catalogue: Catalogue,
            category_pairs: list[tuple[int, int]]) -> Tastes:
    """Each customer's category weights, the order from which they buy each category, and their favourites."""
    n = len(CATEGORIES)
    taste = rng.standard_normal((customers, n), dtype=np.float32)
    for a, b in category_pairs:
        taste[:, b] = PAIR_TASTE_CORRELATION * taste[:, a] + np.sqrt(1 - PAIR_TASTE_CORRELATION ** 2) * taste[:, b]
    liking = np.exp(TASTE_SPREAD * taste)
    shares = np.array([c.share for c in CATEGORIES.values()], dtype=np.float32)

    wait = rng.standard_exponential((customers, n), dtype=np.float32) / (ADOPTION_RATE * liking / liking.mean())
    for a, b in category_pairs:
        wait[:, b] = wait[:, a] + CONSEQUENT_LAG * wait[:, b]
    first = np.partition(wait, FIRST_CATEGORIES - 1, axis=1)[:, [FIRST_CATEGORIES - 1]]
    adopted_at = np.ceil(np.clip(wait - first, 0, 1 << 30)).astype(np.int32)

    category = np.repeat(np.arange(n, dtype=np.int8), FAVOURITES_PER_CATEGORY)
    favourites = np.searchsorted(catalogue.favourite_key, category + rng.random((customers, len(category))),
                                 side="right").astype(np.int32).reshape(customers, n, FAVOURITES_PER_CATEGORY)
    return Tastes((shares * liking) ** MISSION_FLATTENING, adopted_at, favourites)


# ----------------------------------------------------------------------------------- orders


def _order_buyers(rng: np.random.Generator, orders: int, customers: int,
                  history_weeks: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Who places each order and when on the calendar's clock (in [0, 1)), through which channel, and the purchase
    process's parameters (BG/NBD, time in weeks of the clock).

    A buyer joins at a uniform time and, while alive, orders as a Poisson process with their own rate; after each
    order they drop out for good with their own probability (see PURCHASE_RATE_SHAPE). Each buyer's possible repeat
    orders are drawn up to their dropout (capped at MAX_REPEATS_PER_BUYER), each with the rate scale at which it would
    fall inside the history; the scale is then the one that admits exactly `orders` orders, so every order is one
    the process makes and the sample keeps its requested size."""
    buyers = max(1, min(orders, round(customers * (1 - NON_BUYER_SHARE))))
    buyer_ids = rng.permutation(customers)[:buyers]
    joined = rng.random(buyers)
    rate = rng.gamma(PURCHASE_RATE_SHAPE, 1.0, buyers)
    dropout = rng.beta(*DROPOUT_BETA, buyers)
    wanted = orders - buyers
    cap = max(MAX_REPEATS_PER_BUYER, 10 * -(-wanted // buyers))
    possible = np.minimum(rng.geometric(dropout) - 1, cap)  # repeat orders before the dropout: P(k) = (1 - p)^k p
    if possible.sum() < wanted:
        raise ValueError(f"{orders} orders from {buyers} buyers is more than customers who drop out at a rate from "
                         f"Beta{DROPOUT_BETA} place: ask for fewer orders per customer")
    owner = np.repeat(np.arange(buyers), possible)
    gaps = rng.standard_exponential(len(owner))
    block_start = np.repeat(np.cumsum(possible) - possible, possible)
    total = np.cumsum(gaps)
    elapsed = total - total[block_start] + gaps[block_start]  # each buyer's unit-rate arrival times
    needed_scale = elapsed / (rate[owner] * (1 - joined[owner]))  # the repeat falls in the history at this scale or more
    kept = np.argpartition(needed_scale, wanted - 1)[:wanted] if wanted else np.zeros(0, dtype=np.int64)
    scale = needed_scale[kept].max() if wanted else 1.0
    clock = np.concatenate([joined, joined[owner[kept]] + elapsed[kept] / (rate[owner[kept]] * scale)])
    customer = buyer_ids[np.concatenate([np.arange(buyers), owner[kept]])]
    preferred = rng.choice(len(CHANNELS), size=customers, p=CHANNEL_PREFERENCE)
    channel = np.where(rng.random(orders) < PREFERRED_CHANNEL_SHARE, preferred[customer],
                       rng.integers(0, len(CHANNELS), orders))
    process = {"r": PURCHASE_RATE_SHAPE, "alpha": history_weeks / scale, "a": DROPOUT_BETA[0], "b": DROPOUT_BETA[1]}
    return customer.astype(np.int32), np.minimum(clock, np.nextafter(1.0, 0)), channel.astype(np.int8), process


def _order_times(rng: np.random.Generator, clock: np.ndarray, start_s: int, end_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Seasonal, growing order times in (start, end] for orders at the given clock times, and the orders in time
    order; the latest lands within the last hour. The clock is the calendar's share of the history's orders: a
    day takes up as much of it as its weekday, month and the growth say, and a random hour in it is drawn."""
    first_day, last_day = start_s // DAY, end_s // DAY
    days = np.arange(first_day, last_day + 1)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    month = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12
    weight = (np.array(WEEKDAY_WEIGHTS)[weekday] * np.array(MONTH_WEIGHTS)[month]
              * GROWTH_OVER_HISTORY ** ((days - first_day) / max(len(days) - 1, 1)))
    day_cdf, hour_cdf = np.cumsum(weight) / weight.sum(), np.cumsum(HOUR_WEIGHTS) / np.sum(HOUR_WEIGHTS)
    day = days[np.searchsorted(day_cdf, clock, side="right").clip(max=len(days) - 1)]
    times = np.empty(len(clock), dtype=np.int64)
    pending = np.arange(len(clock))
    while len(pending):  # redraw the hour of the few that fall outside the window on its first or last day
        hour = np.searchsorted(hour_cdf, rng.random(len(pending)), side="right").clip(max=23)
        times[pending] = day[pending] * DAY + hour * 3600 + rng.integers(0, 3600, len(pending))
        pending = pending[(times[pending] <= start_s) | (times[pending] > end_s)]
    in_time_order = np.argsort(times, kind="stable")
    times = times[in_time_order]
    times[-1] = max(times[-1], end_s - rng.integers(0, 3600))
    return times, in_time_order


def _basket_lines(rng: np.random.Generator, buyer: np.ndarray, tastes: Tastes,
                  catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """Category-focused baskets, as (order, product) per line, grouped by order, products distinct per order."""
    order_number = _order_numbers(buyer)
    chunks = [_chunk_lines(rng, slice(start, start + ORDERS_PER_CHUNK), buyer, order_number, tastes, catalogue)
              for start in range(0, len(buyer), ORDERS_PER_CHUNK)]
    return np.concatenate([order for order, _ in chunks]), np.concatenate([product for _, product in chunks])


def _chunk_lines(rng: np.random.Generator, chunk: slice, buyer: np.ndarray, order_number: np.ndarray,
                 tastes: Tastes, catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """_basket_lines for the orders of one chunk."""
    buyer, order_number = buyer[chunk], order_number[chunk]
    orders = len(buyer)
    size = np.minimum(1 + rng.negative_binomial(BASKET_SHAPE, BASKET_SHAPE / (BASKET_SHAPE + BASKET_EXTRA_MEAN),
                                                orders), BASKET_BASE_CAP)
    adopted = tastes.adopted_at[buyer] <= order_number[:, None]
    race = rng.standard_exponential(adopted.shape, dtype=np.float32) / tastes.category_weight[buyer]
    race[~adopted] = np.inf
    missions = np.argsort(race, axis=1).astype(np.int8)  # the repertoire in a weighted order, without replacement
    del race
    repertoire = adopted.sum(axis=1, dtype=np.int8)
    mission_count = np.minimum(1 + rng.poisson(size / LINES_PER_EXTRA_MISSION),
                               np.minimum(MAX_MISSIONS, repertoire)).astype(np.int8)

    # Draw more candidate lines than the basket holds, then keep the first `size` distinct products,
    # so basket sizes do not depend on how often a customer's favourites repeat.
    line_order = np.repeat(np.arange(orders, dtype=np.int32), CANDIDATE_LINES * size + 2)
    on_impulse = rng.random(len(line_order), dtype=np.float32) * size.astype(np.float32)[line_order] < IMPULSE_LINES
    slot = rng.random(len(line_order), dtype=np.float32) * np.where(on_impulse, repertoire[line_order],
                                                                     mission_count[line_order])
    del on_impulse
    line_product = _draw_products(rng, catalogue, missions[line_order, slot.astype(np.int8)], buyer[line_order], tastes)
    del slot
    line_order, line_product = _first_distinct(line_order, line_product, len(catalogue.category))
    wanted = _line_numbers(line_order, orders) <= size[line_order]
    return chunk.start + line_order[wanted], line_product[wanted]


def _first_distinct(line_order: np.ndarray, line_product: np.ndarray, products: int) -> tuple[np.ndarray, np.ndarray]:
    """The lines whose product is not already in their order, in their order (a stable sort: lines come grouped by order)."""
    key = line_order.astype(np.int64) * products + line_product
    by_key = np.argsort(key, kind="stable")
    key = key[by_key]
    first = np.empty(len(key), dtype=bool)
    first[:1] = True
    np.not_equal(key[1:], key[:-1], out=first[1:])
    keep = np.zeros(len(key), dtype=bool)
    keep[by_key[first]] = True
    return line_order[keep], line_product[keep]


def _order_numbers(buyer: np.ndarray) -> np.ndarray:
    """Each order's number among its buyer's orders (0 = first), for orders in time order."""
    by_buyer = np.argsort(buyer, kind="stable")
    counts = np.bincount(buyer)
    number = np.empty(len(buyer), dtype=np.int32)
    number[by_buyer] = np.arange(len(buyer)) - np.repeat(np.cumsum(counts) - counts, counts)
    return number


def _line_numbers(line_order: np.ndarray, orders: int) -> np.ndarray:
    """1, 2, ... within each order, for lines grouped by order."""
    first_line = np.cumsum(np.bincount(line_order, minlength=orders)) - np.bincount(line_order, minlength=orders)
    return (np.arange(1, len(line_order) + 1) - first_line[line_order]).astype(np.int32)


def _plant_affinities(rng: np.random.Generator, buyer: np.ndarray, tastes: Tastes, line_order: np.ndarray,
                      line_product: np.ndarray, catalogue: Catalogue, planted: dict) -> tuple[np.ndarray, np.ndarray]:
    """Add the consequent of each planted rule to some orders holding its antecedent (and not the consequent).

    Product rules go first so the category rules see the final basket, then added lines are
    merged behind their order's own lines, as add-on suggestions would be. A consequent category
    is added as what its buyer would buy there: often a favourite."""
    orders = len(buyer)
    added_orders, added_products = [], []
    for a, b in planted["product"]:
        has_a, has_b = (np.bincount(line_order[line_product == p], minlength=orders) > 0 for p in (a, b))
        chosen = np.flatnonzero(has_a & ~has_b & (rng.random(orders) < PRODUCT_AFFINITY_PROBABILITY))
        added_orders.append(chosen)
        added_products.append(np.full(len(chosen), b, dtype=np.int32))
    lines = np.concatenate([line_order, *added_orders]), np.concatenate([line_product, *added_products])

    present = np.zeros((orders, len(CATEGORIES)), dtype=bool)
    present[lines[0], catalogue.category[lines[1]]] = True
    for a, b in planted["category"]:
        chosen = np.flatnonzero(present[:, a] & ~present[:, b] & (rng.random(orders) < CATEGORY_AFFINITY_PROBABILITY))
        added_orders.append(chosen)
        added_products.append(_draw_products(rng, catalogue, np.full(len(chosen), b, dtype=np.int8), buyer[chosen],
                                             tastes))
    line_order = np.concatenate([line_order, *added_orders]).astype(np.int32)
    line_product = np.concatenate([line_product, *added_products]).astype(np.int32)
    by_order = np.argsort(line_order, kind="stable")
    return line_order[by_order], line_product[by_order]


# -------------------------------------------------------------------------------- customers


def _customers(rng: np.random.Generator, customers: int, orders: Orders, start_s: int,
               end_s: int) -> tuple[pl.DataFrame, np.ndarray]:
    """customer_info rows by customer_id, and the id of each internal customer.

    Ids are issued in signup order, and a buyer signs up before their first order."""
    first_order = np.full(customers, -1, dtype=np.int64)
    buyers, first_index = np.unique(orders.customer, return_index=True)  # orders are in time order
    first_order[buyers] = orders.purchased_at[first_index]
    gap = np.clip(np.round(rng.lognormal(np.log(7 * DAY), 1.3, customers)), 60, 2 * 365 * DAY).astype(np.int64)
    anytime = rng.integers(start_s + 1, end_s + 1, customers)
    signup = np.where(first_order >= 0, first_order - gap, anytime)
    order_of_signup = np.argsort(signup, kind="stable")
    customer_id = np.empty(customers, dtype=np.int64)
    customer_id[order_of_signup] = np.arange(1, customers + 1)
    return _customer_attributes(rng, customer_id, signup).sort("customer_id"), customer_id


def _customer_attributes(rng: np.random.Generator, customer_id: np.ndarray, signup: np.ndarray,
                         email_tag: np.ndarray | None = None) -> pl.DataFrame:
    """Plausible CRM fields; a few e-mails come in with capitals or stray spaces."""
    n = len(customer_id)
    first = np.array(FIRST_NAMES)[rng.integers(0, len(FIRST_NAMES), n)]
    last = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), n)]
    frame = pl.DataFrame({
        "customer_id": pl.Series(customer_id, dtype=pl.Int64),
        "first_name": first,
        "last_name": last,
        "_tag": customer_id if email_tag is None else email_tag,
        "_domain": np.array(EMAIL_DOMAINS)[rng.integers(0, len(EMAIL_DOMAINS), n)],
        "_mess": rng.choice(4, size=n, p=[1 - MESSY_EMAIL_SHARE] + [MESSY_EMAIL_SHARE / 3] * 3),
        "phone": rng.integers(0, 10_000, n),
        "birth_year": np.clip(np.round(rng.normal(1972, 13, n)), 1940, 2006).astype(np.int64),
        "education": rng.choice(list(EDUCATION), size=n, p=list(EDUCATION.values())),
        "marital_status": rng.choice(list(MARITAL_STATUS), size=n, p=list(MARITAL_STATUS.values())),
        "income": np.round(rng.lognormal(np.log(50_000), 0.4, n), 2),
        "country": _country_spellings(rng, n),
        "signup_at": _timestamps(signup),
    })
    email = pl.concat_str(pl.col("first_name"), pl.lit("."), pl.col("last_name"), pl.col("_tag"), pl.lit("@"),
                          pl.col("_domain")).str.to_lowercase()
    return frame.with_columns(
        email=pl.when(pl.col("_mess") == 1).then(email.str.to_uppercase())
        .when(pl.col("_mess") == 2).then(pl.concat_str(pl.lit(" "), email, pl.lit("  ")))
        .when(pl.col("_mess") == 3).then(pl.concat_str(pl.lit(" "), pl.col("first_name"), pl.lit("."),
                                                       pl.col("last_name"), pl.col("_tag"), pl.lit("@"),
                                                       pl.col("_domain")))
        .otherwise(email),
        phone=pl.format("+1-555-{}", pl.col("phone").cast(pl.String).str.zfill(4)),
    ).select(table("customer").column_names)


def _country_spellings(rng: np.random.Generator, n: int) -> pl.Series:
    """Mostly the canonical name, sometimes an alias, sometimes shouted or lower-cased."""
    canonical = list(COUNTRY_SPELLINGS)
    weight = np.array([COUNTRY_WEIGHTS.get(name, 0.01) for name in canonical])
    country = rng.choice(len(canonical), size=n, p=weight / weight.sum())
    aliases = [COUNTRY_SPELLINGS[name][1:] or (name,) for name in canonical]
    alias_count = np.array([len(a) for a in aliases])
    alias_start = np.concatenate([[0], np.cumsum(alias_count)[:-1]])
    alias = alias_start[country] + (rng.random(n) * alias_count[country]).astype(np.int64)
    recase = rng.random(n)
    spelled = pl.DataFrame({
        "canonical": pl.Series(canonical).gather(country),
        "alias": pl.Series([a for group in aliases for a in group]).gather(alias),
        "use_alias": rng.random(n) < ALIAS_SHARE,
        "upper": recase < RECASED_SHARE / 2,
        "lower": (recase >= RECASED_SHARE / 2) & (recase < RECASED_SHARE),
    }).select(name=pl.when("use_alias").then("alias").otherwise("canonical"), upper="upper", lower="lower")
    return spelled.select(
        pl.when("upper").then(pl.col("name").str.to_uppercase())
        .when("lower").then(pl.col("name").str.to_lowercase())
        .otherwise("name")
    ).to_series()


# ------------------------------------------------------------------------------ defects & files


def _defect_counts(reasons: tuple[str, ...], genuine_rows: int, enabled: bool) -> dict[str, int]:
    """Defect rows per reason: a fixed share of the file, at least two; no reasons at all when disabled."""
    return {reason: max(2, round(DEFECT_SHARE * genuine_rows)) for reason in reasons} if enabled else {}


def _interleaved(genuine: pl.DataFrame, extra: pl.DataFrame, before: np.ndarray) -> pl.DataFrame:
    """Genuine rows in their order, with extra row i inserted just before genuine row before[i]."""
    return (pl.concat([genuine.with_columns(_at=pl.Series(np.arange(len(genuine)) * 2 + 1)),
                       extra.with_columns(_at=pl.Series(before.astype(np.int64) * 2))])
            .sort("_at", maintain_order=True).drop("_at"))


def _write_customers(directory: Path, rng: np.random.Generator, customers: pl.DataFrame, enabled: bool,
                     start_s: int, end_s: int) -> dict[str, int]:
    """customer_info.csv with repeated rows (after their original) and rows lacking a customer_id."""
    n = len(customers)
    counts = _defect_counts(("duplicate_key", "missing_key"), n, enabled)
    duplicates, missing = counts.get("duplicate_key", 0), counts.get("missing_key", 0)
    originals = np.sort(rng.choice(n, size=duplicates, replace=False))
    signup = rng.integers(start_s + 1, end_s + 1, missing)
    keyless = _customer_attributes(rng, np.zeros(missing, dtype=np.int64), signup, email_tag=n + 1 + np.arange(missing))
    extra = pl.concat([customers[originals], keyless.with_columns(customer_id=pl.lit(None, dtype=pl.Int64))])
    before = np.concatenate([rng.integers(originals + 1, n + 1), rng.integers(0, n + 1, missing)])
    _interleaved(customers, extra, before).write_csv(
        directory / "customer_info.csv", float_precision=2, datetime_format=TIMESTAMP_FORMAT)
    return counts


def _line_frame(rng: np.random.Generator, orders: Orders, catalogue: Catalogue, customer_id: np.ndarray,
                lines: np.ndarray) -> pl.DataFrame:
    """purchase.csv rows for the given genuine lines; quantities, deals and prices are drawn here."""
    order = orders.line_order[lines]
    product = orders.line_product[lines]
    n = len(lines)
    quantity = rng.choice(len(QUANTITY_PROBABILITIES), size=n, p=QUANTITY_PROBABILITIES) + 1
    deal = rng.random(n) < DEAL_PROBABILITY
    discount = rng.uniform(*DEAL_DISCOUNT, n)
    cents = catalogue.list_cents[product]
    cents = np.where(deal, np.round(cents * (1 - discount)).astype(np.int64), cents)
    return pl.DataFrame({
        "order_id": order.astype(np.int64) + 1,
        "line_number": orders.line_number[lines],
        "customer_id": customer_id[orders.customer[order]],
        "product_id": catalogue.product_id[product],
        "quantity": pl.Series(quantity).cast(pl.String),
        "unit_price": _price_text(cents),
        "purchased_at": _timestamps(orders.purchased_at[order]),
        "channel": pl.Series(CHANNELS).gather(orders.channel[order]),
        "deal": deal,
    })


def _price_text(cents: np.ndarray) -> pl.Series:
    """Exact two-decimal prices, so the column can also hold the malformed ones."""
    return pl.DataFrame({"cents": cents}).select(
        pl.format("{}.{}", pl.col("cents") // 100, (pl.col("cents") % 100).cast(pl.String).str.zfill(2))
    ).to_series()


def _timestamps(epoch_seconds: np.ndarray) -> pl.Series:
    return pl.Series(epoch_seconds * 1000).cast(pl.Datetime("ms"))


def _purchase_defects(rng: np.random.Generator, orders: Orders, catalogue: Catalogue, customer_id: np.ndarray,
                      enabled: bool, start_s: int, end_s: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """Extra single-line orders copied from genuine lines, each broken in one way, under unused order_ids."""
    lines = len(orders.line_order)
    reasons = ("unknown_customer", "unknown_product", "invalid_quantity", "bad_type")
    counts = _defect_counts(reasons, lines, enabled)
    reason = pl.Series(np.repeat(np.array(reasons), [counts.get(r, 0) for r in reasons]))
    n = len(reason)
    customers, products = len(customer_id), len(catalogue.product_id)
    broken = {
        "reason": reason,
        "stranger": customers + rng.integers(1, customers + 1, n),
        "unknown_product": products + rng.integers(1, products + 1, n),
        "bad_quantity": pl.Series(-rng.integers(0, 4, n)).cast(pl.String),
        "spelled_out": rng.random(n) < 0.5,
    }
    frame = _line_frame(rng, orders, catalogue, customer_id, rng.integers(0, lines, n)).with_columns(
        order_id=pl.Series(len(orders.purchased_at) + 1 + rng.permutation(n)),
        line_number=pl.lit(1, dtype=pl.Int32),
        purchased_at=_timestamps(rng.integers(start_s + 1, end_s + 1, n)),
        **{f"_{name}": values for name, values in broken.items()},
    )
    bad_type = pl.col("_reason") == "bad_type"
    return frame.with_columns(
        customer_id=pl.when(pl.col("_reason") == "unknown_customer").then("_stranger").otherwise("customer_id"),
        product_id=pl.when(pl.col("_reason") == "unknown_product").then("_unknown_product").otherwise("product_id"),
        quantity=pl.when(pl.col("_reason") == "invalid_quantity").then("_bad_quantity")
        .when(bad_type & pl.col("_spelled_out"))
        .then(pl.col("quantity").replace_strict({str(i): word for i, word in enumerate(QUANTITY_WORDS)}))
        .otherwise("quantity"),
        unit_price=pl.when(bad_type & ~pl.col("_spelled_out"))
        .then(pl.col("unit_price").str.replace(".", ",", literal=True))
        .otherwise("unit_price"),
    ).select(table("purchase").column_names), counts


def _write_purchases(directory: Path, rng: np.random.Generator, orders: Orders, catalogue: Catalogue,
                     customer_id: np.ndarray, enabled: bool, start_s: int, end_s: int,
                     chunk_lines: int = 2_000_000) -> dict[str, int]:
    """purchase.csv in order_id order, written in chunks to bound memory, defect rows scattered through it."""
    extra, counts = _purchase_defects(rng, orders, catalogue, customer_id, enabled, start_s, end_s)
    lines = len(orders.line_order)
    extra = extra[rng.permutation(len(extra))]  # reasons mixed along the file
    before = np.sort(rng.integers(0, lines + 1, len(extra)))
    with open(directory / "purchase.csv", "wb") as out:
        for start in range(0, lines, chunk_lines):
            stop = min(start + chunk_lines, lines)
            inside = slice(*np.searchsorted(before, [start, stop + (stop == lines)]))
            chunk = _line_frame(rng, orders, catalogue, customer_id, np.arange(start, stop))
            _interleaved(chunk, extra[inside], before[inside] - start).write_csv(
                out, include_header=start == 0, datetime_format=TIMESTAMP_FORMAT)
    return counts


# ------------------------------------------------------------------------------ moving the sample

# What `generate --add-days` changes at the source besides the new days' orders, so that an incremental load has
# updates and late data to merge: a few lines get a corrected price, a few customers a new e-mail, and a few lines
# arrive late in orders of an earlier day.
PRICE_CORRECTIONS, EMAIL_CHANGES, LATE_LINES = 5, 3, 3
PRICE_CORRECTION_FACTOR = 0.9  # the deal discount the till forgot
RECENT_DAYS = 28  # the new days' order rate is the rate of these last days; their baskets are drawn from them
LATE_DAYS = (2, 7)  # late lines go into orders this many days before the latest purchase


@dataclass(frozen=True)
class Additions:
    """What `generate --add-days` writes to an existing sample: new lines (new orders and late lines of older orders,
    in the purchase columns) and updated rows (a corrected unit_price per line key, a new e-mail per customer)."""

    lines: pl.DataFrame
    prices: pl.DataFrame  # order_id, line_number, unit_price (text, two decimals)
    emails: pl.DataFrame  # customer_id, email
    first_new: datetime  # the new days are the 24-hour periods from here
    days: int


def read_sample_text(purchase: pl.DataFrame, customer: pl.DataFrame, product: pl.DataFrame) -> tuple[pl.DataFrame, ...]:
    """The rows a moving sample is drawn from, from the sources as text (files or a database, read alike):
    the lines of known customers and products with a usable quantity and price, customers by id (first row of a
    repeated id), and every order_id in use (defect rows included) so new orders never reuse one."""
    customers = (customer.select(customer_id=pl.col("customer_id").cast(pl.Int64, strict=False), email="email")
                 .drop_nulls("customer_id").unique("customer_id", keep="first", maintain_order=True).sort("customer_id"))
    products = product.select(product_id=pl.col("product_id").cast(pl.Int64, strict=False)).drop_nulls()
    typed = purchase.select(
        order_id=pl.col("order_id").cast(pl.Int64, strict=False),
        line_number=pl.col("line_number").cast(pl.Int64, strict=False),
        customer_id=pl.col("customer_id").cast(pl.Int64, strict=False),
        product_id=pl.col("product_id").cast(pl.Int64, strict=False),
        quantity=pl.col("quantity").cast(pl.Int64, strict=False),
        unit_price=pl.col("unit_price").str.strip_chars(),
        purchased_at=pl.col("purchased_at").str.strptime(pl.Datetime("ms"), TIMESTAMP_FORMAT, strict=False),
        channel="channel",
        deal=pl.col("deal").is_in(["true", "t"]),
    )
    valid = typed.filter(
        pl.col("customer_id").is_in(customers["customer_id"].implode()),
        pl.col("product_id").is_in(products["product_id"].implode()),
        pl.col("quantity") > 0,
        pl.col("unit_price").cast(pl.Float64, strict=False) >= 0,
        pl.col("purchased_at").is_not_null(), pl.col("order_id").is_not_null(), pl.col("line_number").is_not_null(),
    ).sort("order_id", "line_number")
    return valid, customers, typed["order_id"].drop_nulls()


def additions(valid: pl.DataFrame, customers: pl.DataFrame, order_ids: pl.Series, days: int, now: datetime,
              seed: int = SAMPLE_SEED) -> Additions:
    """The orders of `days` new days after the latest purchase, plus corrected prices, changed e-mails and late lines.

    A new day has as many orders as an average day of the last RECENT_DAYS (Poisson), each a copy of a basket bought
    in those days (its customer, products, quantities, prices, channel) at a new time of the day: a bootstrap of the
    recent history, so the planted affinities keep holding. It does not advance each customer's BG/NBD process.
    Everything is drawn from `seed` and the sample's last order_id, so the same sample moves the same way."""
    if days < 1:
        raise ValueError(f"days must be a positive whole number of days to add, not {days}")
    if valid.is_empty():
        raise ValueError("the sample has no usable purchase line to continue from (known customer and product, "
                         "quantity above 0, price 0 or more); write one with `product-affinity generate` first")
    now = _as_end(now)
    latest = valid["purchased_at"].max()
    last_new = latest + _seconds(days * DAY)
    if last_new > now:
        room = int((now - latest).total_seconds() // DAY)
        raise ValueError(f"the sample's latest purchase is at {latest:%Y-%m-%d %H:%M:%S}, so {days} more day(s) would "
                         f"end at {last_new:%Y-%m-%d %H:%M:%S}, after now ({now:%Y-%m-%d %H:%M:%S} UTC): the sample "
                         f"moves with the clock; add at most {room} day(s) now")
    next_order = int(order_ids.max()) + 1
    rng = np.random.default_rng([seed, next_order])
    recent = valid.filter(pl.col("purchased_at") > latest - _seconds(RECENT_DAYS * DAY))
    baskets = recent["order_id"].unique().sort()
    per_day = len(baskets) / RECENT_DAYS
    counts = rng.poisson(per_day, days)
    chosen = baskets.gather(rng.integers(0, len(baskets), counts.sum())).to_numpy()
    offsets = np.sort(rng.integers(1, DAY + 1, counts.sum())) + np.repeat(np.arange(days) * DAY, counts)
    orders = pl.DataFrame({"template": chosen, "order_id": np.arange(next_order, next_order + len(chosen)),
                           "purchased_at": [latest + _seconds(int(s)) for s in offsets]},
                          schema={"template": pl.Int64, "order_id": pl.Int64, "purchased_at": pl.Datetime("ms")})
    copied = (orders.join(recent.drop("purchased_at").rename({"order_id": "template"}), on="template",
                          maintain_order="left_right")
              .with_columns(line_number=pl.int_range(1, pl.len() + 1).over("order_id")))
    columns = table("purchase").column_names
    lines = pl.concat([copied.select(columns), _late_lines(rng, valid, latest).select(columns)])
    return Additions(lines=lines, prices=_corrected_prices(rng, recent), emails=_changed_emails(rng, customers, next_order),
                     first_new=latest, days=days)


def _seconds(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)


def _late_lines(rng: np.random.Generator, valid: pl.DataFrame, latest: datetime) -> pl.DataFrame:
    """One more line in each of LATE_LINES orders of an earlier day (LATE_DAYS before the latest purchase): a product
    the order does not hold yet, at the price another line paid for it, under the order's next line number."""
    window = valid.filter(pl.col("purchased_at").is_between(latest - _seconds(LATE_DAYS[1] * DAY),
                                                            latest - _seconds(LATE_DAYS[0] * DAY)))
    order_ids = window["order_id"].unique().sort()
    late = []
    for order_id in order_ids.gather(rng.choice(len(order_ids), min(LATE_LINES, len(order_ids)), replace=False)):
        order = valid.filter(pl.col("order_id") == order_id)
        others = valid.filter(~pl.col("product_id").is_in(order["product_id"].implode()))
        if others.is_empty():
            continue
        extra = others.row(int(rng.integers(0, len(others))), named=True)
        first = order.row(0, named=True)
        late.append(first | {"line_number": order["line_number"].max() + 1, "product_id": extra["product_id"],
                             "quantity": extra["quantity"], "unit_price": extra["unit_price"]})
    return pl.DataFrame(late, schema=valid.schema)


def _corrected_prices(rng: np.random.Generator, recent: pl.DataFrame) -> pl.DataFrame:
    """PRICE_CORRECTIONS recent lines whose unit_price is corrected (down by the forgotten discount)."""
    picked = recent[np.sort(rng.choice(len(recent), min(PRICE_CORRECTIONS, len(recent)), replace=False))]
    cents = np.round(picked["unit_price"].cast(pl.Float64).to_numpy() * 100 * PRICE_CORRECTION_FACTOR).astype(np.int64)
    return picked.select("order_id", "line_number").with_columns(unit_price=_price_text(cents))


def _changed_emails(rng: np.random.Generator, customers: pl.DataFrame, tag: int) -> pl.DataFrame:
    """EMAIL_CHANGES customers who moved to a new address (tagged with the move's first order_id, so each change is
    a new value, and a sample moved in files and in the database changes alike)."""
    picked = customers[np.sort(rng.choice(len(customers), min(EMAIL_CHANGES, len(customers)), replace=False))]
    return picked.select("customer_id", email=pl.format("customer{}.{}@example.org", "customer_id", pl.lit(tag)))


def add_days_to_files(directory: Path, days: int, now: datetime | None = None, seed: int = SAMPLE_SEED) -> Additions:
    """Move a sample in files: append the new days' orders and the late lines to purchase.csv, rewrite the corrected
    prices and e-mails in place (the files are rewritten whole), and count the new lines in ground_truth.json."""
    directory = Path(directory)
    paths = {name: directory / name for name in ("purchase.csv", "customer_info.csv", "product.csv")}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot add days to the sample in {directory}: {', '.join(missing)} not found; "
                                f"write a sample there first with `product-affinity generate --out {directory}`")
    purchase, customer, product = (pl.read_csv(path, infer_schema=False) for path in paths.values())
    added = additions(*read_sample_text(purchase, customer, product), days, now or datetime.now(timezone.utc), seed)
    key = ["order_id", "line_number"]
    text = pl.col("order_id").cast(pl.String), pl.col("line_number").cast(pl.String)
    prices = added.prices.with_columns(*text)
    purchase = (purchase.join(prices.rename({"unit_price": "_corrected"}), on=key, how="left", maintain_order="left")
                .with_columns(unit_price=pl.coalesce("_corrected", "unit_price")).drop("_corrected"))
    new_lines = added.lines.with_columns(purchased_at=pl.col("purchased_at").dt.strftime(TIMESTAMP_FORMAT),
                                         deal=pl.col("deal").cast(pl.String).str.to_lowercase())
    pl.concat([purchase, new_lines.select(pl.all().cast(pl.String))]).write_csv(paths["purchase.csv"])
    emails = added.emails.with_columns(pl.col("customer_id").cast(pl.String))
    (customer.join(emails.rename({"email": "_new"}), on="customer_id", how="left", maintain_order="left")
     .with_columns(email=pl.coalesce("_new", "email")).drop("_new").write_csv(paths["customer_info.csv"]))
    truth_path = directory / "ground_truth.json"
    if truth_path.is_file():
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        truth["rows"]["purchase.csv"] += len(added.lines)
        truth.setdefault("added_days", []).append({"after": added.first_new.isoformat(), "days": days,
                                                   "lines": len(added.lines)})
        truth_path.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return added
