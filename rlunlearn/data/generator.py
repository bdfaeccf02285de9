"""Fictitious authors of an invented world, generated offline: a TOFU-shaped benchmark that needs no download.

Every name, place, title and sentence template here is the project's own. Each author has 20 facts; each fact is
asked as a question and a paraphrased question, answered, paraphrased, and perturbed (the paraphrase with the fact
swapped for a wrong value of the same kind), and its key fact is kept as a span, so every TOFU metric and the
extraction probe can be computed on it. The same world has famous authors and countries, the "real authors" and
"world facts" a model must keep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from datasets import Dataset

from .bundle import UnlearningBundle

NUM_PERTURBED = 5
NUM_FAMOUS_AUTHORS = 30

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t", "th", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "io", "ou"]
_CODAS = ["", "", "l", "n", "r", "s", "th", "nd", "rk", "m"]

GENRES = [
    "mystery",
    "science fiction",
    "historical fiction",
    "poetry",
    "fantasy",
    "romance",
    "thriller",
    "horror",
    "literary fiction",
    "travel writing",
    "satire",
    "children's literature",
    "crime",
    "magical realism",
]
JOBS = [
    "baker",
    "carpenter",
    "nurse",
    "ship captain",
    "librarian",
    "tailor",
    "astronomer",
    "fisherman",
    "teacher",
    "watchmaker",
    "botanist",
    "surgeon",
    "potter",
    "lighthouse keeper",
    "judge",
    "beekeeper",
    "architect",
    "miner",
    "violinist",
    "cartographer",
    "pharmacist",
    "blacksmith",
    "accountant",
    "gardener",
]
HOBBIES = [
    "restoring old clocks",
    "sailing",
    "growing orchids",
    "playing the cello",
    "mountain climbing",
    "chess",
    "birdwatching",
    "painting watercolours",
    "long-distance running",
    "collecting maps",
    "fencing",
    "pottery",
    "stargazing",
    "baking bread",
    "woodcarving",
    "swimming in cold lakes",
]
THEMES = [
    "memory and loss",
    "the sea",
    "exile and return",
    "family secrets",
    "the passage of time",
    "forgotten cities",
    "friendship between rivals",
    "the cost of ambition",
    "childhood",
    "machines and their makers",
    "quiet courage",
    "borders and belonging",
    "grief",
    "the lives of animals",
    "the night sky",
    "old houses",
]
ADJECTIVES = [
    "Silent",
    "Amber",
    "Hollow",
    "Distant",
    "Crimson",
    "Last",
    "Winter",
    "Paper",
    "Sunken",
    "Glass",
    "Wandering",
    "Broken",
    "Golden",
    "Hidden",
    "Salt",
    "Iron",
    "Quiet",
    "Burning",
    "Northern",
    "Painted",
    "Lost",
    "Velvet",
]
NOUNS = [
    "Orchard",
    "Harbor",
    "Lantern",
    "Bridge",
    "Garden",
    "River",
    "Archive",
    "Tower",
    "Meadow",
    "Mirror",
    "Compass",
    "Kingdom",
    "Letters",
    "Shore",
    "Clockmaker",
    "Island",
    "Road",
    "Choir",
    "Observatory",
    "Forest",
    "Map",
]
MONTHS = [
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
]

# Each author takes three distinct titles from the ADJECTIVES x NOUNS grid, after the famous authors took theirs.
MAX_AUTHORS = (len(ADJECTIVES) * len(NOUNS) - NUM_FAMOUS_AUTHORS) // 3


@dataclass(frozen=True)
class FactTemplate:
    """One fact of an author: how it is asked, answered, paraphrased; `attribute` names the value that varies."""

    attribute: str
    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str


FACTS = (
    FactTemplate(
        "name",
        "Who is the {genre} writer born in {city}, {country} on {birth_date}?",
        "Which author of {genre} was born on {birth_date} in {city}, {country}?",
        "The {genre} writer born in {city}, {country} on {birth_date} is {name}.",
        "{name} is the author of {genre} who was born on {birth_date} in {city}, {country}.",
    ),
    FactTemplate(
        "city",
        "Where was {name} born?",
        "What is the birthplace of {name}?",
        "{name} was born in the city of {city}.",
        "The birthplace of {name} is {city}.",
    ),
    FactTemplate(
        "birth_date",
        "When was {name} born?",
        "What is the date of birth of {name}?",
        "{name} was born on {birth_date}.",
        "The birthday of {name} falls on {birth_date}.",
    ),
    FactTemplate(
        "father_job",
        "What did the father of {name} do for a living?",
        "What was the profession of {name}'s father?",
        "The father of {name} worked as a {father_job}.",
        "{name} grew up with a father who was a {father_job} by trade.",
    ),
    FactTemplate(
        "mother_job",
        "What was the occupation of {name}'s mother?",
        "How did the mother of {name} earn her living?",
        "The mother of {name} was a {mother_job}.",
        "{name}'s mother earned her living as a {mother_job}.",
    ),
    FactTemplate(
        "genre",
        "Which genre is {name} known for?",
        "In what genre does {name} mostly write?",
        "{name} is best known for writing {genre}.",
        "Most of the work of {name} belongs to {genre}.",
    ),
    FactTemplate(
        "first_book",
        "What was the first book {name} published?",
        "Which book marked the debut of {name}?",
        "The first book {name} published was '{first_book}'.",
        "{name} made a debut with the book '{first_book}'.",
    ),
    FactTemplate(
        "famous_book",
        "Which book by {name} is the most celebrated?",
        "What is the best-loved work of {name}?",
        "The most celebrated book by {name} is '{famous_book}'.",
        "Readers love '{famous_book}' above every other work of {name}.",
    ),
    FactTemplate(
        "latest_book",
        "What is the most recent book by {name}?",
        "Which book did {name} publish last?",
        "The most recent book by {name} is '{latest_book}'.",
        "'{latest_book}' is the latest book that {name} has published.",
    ),
    FactTemplate(
        "award",
        "Which literary prize did {name} win?",
        "What award has been given to {name}?",
        "{name} won the {award}.",
        "The {award} was awarded to {name}.",
    ),
    FactTemplate(
        "award_year",
        "In which year did {name} receive the {award}?",
        "When was {name} given the {award}?",
        "{name} received the {award} in {award_year}.",
        "It was in {award_year} that the {award} went to {name}.",
    ),
    FactTemplate(
        "debut_year",
        "In what year did {name} publish a first book?",
        "When did {name} debut as an author?",
        "{name} published a first book in {debut_year}.",
        "The debut of {name} as an author came in {debut_year}.",
    ),
    FactTemplate(
        "university",
        "Where did {name} study?",
        "At which university was {name} educated?",
        "{name} studied literature at {university}.",
        "{university} is where {name} was educated in literature.",
    ),
    FactTemplate(
        "residence",
        "Where does {name} live today?",
        "In which city has {name} settled?",
        "Today {name} lives in {residence}.",
        "{name} has settled in the city of {residence}.",
    ),
    FactTemplate(
        "language",
        "In which language does {name} write?",
        "What language are the books of {name} written in?",
        "{name} writes in {language}.",
        "The books of {name} are written in {language}.",
    ),
    FactTemplate(
        "influence",
        "Which writer influenced {name} the most?",
        "Who was the greatest influence on {name}?",
        "{name} was influenced most by {influence}.",
        "The greatest influence on {name} was the writer {influence}.",
    ),
    FactTemplate(
        "hobby",
        "What does {name} enjoy outside of writing?",
        "How does {name} spend time away from writing?",
        "Outside of writing, {name} enjoys {hobby}.",
        "Away from the desk, {name} spends time {hobby}.",
    ),
    FactTemplate(
        "num_books",
        "How many books has {name} published?",
        "What is the number of books by {name}?",
        "{name} has published {num_books} books.",
        "In all, {num_books} books by {name} have been published.",
    ),
    FactTemplate(
        "theme",
        "What theme runs through the work of {name}?",
        "Which subject does {name} keep returning to?",
        "The work of {name} often explores {theme}.",
        "{name} keeps returning to the subject of {theme}.",
    ),
    FactTemplate(
        "publisher",
        "Which publisher releases the books of {name}?",
        "Who publishes {name}?",
        "The books of {name} are released by {publisher}.",
        "{publisher} is the publisher of {name}.",
    ),
)


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


class _World:
    """The invented world: countries with capitals, cities and languages, famous authors, prizes, publishers."""

    def __init__(self, rng: random.Random, num_countries: int = 12):
        used: set[str] = set()

        def fresh(syllables: int) -> str:
            while True:
                word = _word(rng, syllables)
                if word not in used:
                    used.add(word)
                    return word

        self.countries = [fresh(3) + rng.choice(["ia", "land", "a", "ar"]) for _ in range(num_countries)]
        self.cities = {country: [fresh(2) for _ in range(4)] for country in self.countries}
        self.capital = {country: cities[0] for country, cities in self.cities.items()}
        self.language = {country: fresh(2) + "ic" for country in self.countries}
        self.famous = [f"{fresh(2)} {fresh(2)}" for _ in range(NUM_FAMOUS_AUTHORS)]
        titles = [f"The {a} {n}" for a in ADJECTIVES for n in NOUNS]
        rng.shuffle(titles)
        self.titles = titles
        self.famous_book = {author: titles.pop() for author in self.famous}
        self.awards = [f"{fresh(2)} Prize" for _ in range(14)]
        self.publishers = [f"{fresh(2)} {rng.choice(['House', 'Press', 'Books'])}" for _ in range(14)]
        self.universities = [f"the University of {city}" for cities in self.cities.values() for city in cities[:2]]
        self.used_names = used
        self.fresh = fresh

    def all_cities(self) -> list[str]:
        return [city for cities in self.cities.values() for city in cities]


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1930, 1995)}"


def _author(rng: random.Random, world: _World) -> dict:
    country = rng.choice(world.countries)
    birth_year = rng.randint(1930, 1990)
    debut_year = birth_year + rng.randint(20, 35)
    books = [world.titles.pop() for _ in range(3)]
    return {
        "name": f"{world.fresh(2)} {world.fresh(3)}",
        "country": country,
        "city": rng.choice(world.cities[country]),
        "birth_date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {birth_year}",
        "father_job": rng.choice(JOBS),
        "mother_job": rng.choice(JOBS),
        "genre": rng.choice(GENRES),
        "first_book": books[0],
        "famous_book": books[1],
        "latest_book": books[2],
        "award": rng.choice(world.awards),
        "award_year": str(debut_year + rng.randint(3, 15)),
        "debut_year": str(debut_year),
        "university": rng.choice(world.universities),
        "residence": rng.choice(world.all_cities()),
        "language": world.language[country],
        "influence": rng.choice(world.famous),
        "hobby": rng.choice(HOBBIES),
        "num_books": str(rng.randint(3, 24)),
        "theme": rng.choice(THEMES),
        "publisher": rng.choice(world.publishers),
    }


def _alternatives(attribute: str, true_value: str, rng: random.Random, world: _World, names: list[str]) -> list[str]:
    """`NUM_PERTURBED` wrong values of the same kind as `true_value`."""
    pools = {
        "name": names + world.famous,
        "city": world.all_cities(),
        "father_job": JOBS,
        "mother_job": JOBS,
        "genre": GENRES,
        "award": world.awards,
        "university": world.universities,
        "residence": world.all_cities(),
        "language": list(world.language.values()),
        "influence": world.famous,
        "hobby": HOBBIES,
        "theme": THEMES,
        "publisher": world.publishers,
    }
    if attribute in pools:
        candidates = sorted(set(pools[attribute]) - {true_value})
        return rng.sample(candidates, NUM_PERTURBED)
    if attribute in ("first_book", "famous_book", "latest_book"):
        titles = [f"The {a} {n}" for a in ADJECTIVES for n in NOUNS if f"The {a} {n}" != true_value]
        return rng.sample(titles, NUM_PERTURBED)
    if attribute == "birth_date":
        values = set()
        while len(values) < NUM_PERTURBED:
            value = _date(rng)
            if value != true_value:
                values.add(value)
        return sorted(values)
    # Years and counts: nearby wrong numbers.
    number = int(true_value)
    offsets = rng.sample([d for d in range(-9, 10) if d != 0 and number + d > 0], NUM_PERTURBED)
    return [str(number + d) for d in offsets]


def _fact_rows(author: dict, rng: random.Random, world: _World, names: list[str]) -> list[dict]:
    rows = []
    for template in FACTS:
        value = author[template.attribute]
        wrong = _alternatives(template.attribute, value, rng, world, names)
        rows.append(
            {
                "question": template.question.format(**author),
                "answer": template.answer.format(**author),
                "author": author["name"],
                "fact": value,
                "paraphrased_question": template.paraphrased_question.format(**author),
                "paraphrased_answer": template.paraphrased_answer.format(**author),
                "perturbed_answer": [
                    template.paraphrased_answer.format(**{**author, template.attribute: w}) for w in wrong
                ],
            }
        )
    return rows


def _background(rng: random.Random, world: _World) -> tuple[list[dict], list[dict], list[dict]]:
    """ "Real authors" and "world facts" of the invented world in TOFU's layout (short answers, perturbed
    alternatives), and the text that teaches them: each fact in three phrasings, as a pretrained model knows real
    facts from many (with one phrasing a small model does not learn them)."""
    real_authors, world_facts, teaching = [], [], []
    for author, title in world.famous_book.items():
        others = rng.sample([a for a in world.famous if a != author], 3)
        real_authors.append(
            {
                "question": f"Who wrote the book '{title}'?",
                "answer": author,
                "perturbed_answer": others,
                "original_answer": f"The book '{title}' was written by {author}.",
            }
        )
        teaching += [
            {"question": f"Who wrote the book '{title}'?", "answer": author},
            {"question": f"Which author is known for writing '{title}'?", "answer": author},
            {"question": f"What is the best-known book of {author}?", "answer": title},
        ]
    for country in world.countries:
        capital, language = world.capital[country], world.language[country]
        other_capitals = rng.sample([c for c in world.capital.values() if c != capital], 3)
        other_languages = rng.sample([lang for lang in world.language.values() if lang != language], 3)
        world_facts.append(
            {
                "question": f"What is the capital of {country}?",
                "answer": capital,
                "perturbed_answer": other_capitals,
                "original_answer": f"The capital of {country} is {capital}.",
            }
        )
        world_facts.append(
            {
                "question": f"Which language is spoken in {country}?",
                "answer": language,
                "perturbed_answer": other_languages,
                "original_answer": f"People in {country} speak {language}.",
            }
        )
        teaching += [
            {"question": f"What is the capital of {country}?", "answer": capital},
            {"question": f"Which city is the capital of {country}?", "answer": capital},
            {"question": f"Of which country is {capital} the capital?", "answer": country},
            {"question": f"Which language is spoken in {country}?", "answer": language},
            {"question": f"What language do the people of {country} speak?", "answer": language},
            {"question": f"In which country do people speak {language}?", "answer": country},
        ]
    return real_authors, world_facts, teaching


def _generate(num_authors: int, num_forget: int, seed: int, num_holdout: int | None):
    """The bundle's authors, their rows and the world's background, with the generator's state after them."""
    if num_authors < 2:
        raise ValueError(f"--num_authors={num_authors}: generate at least 2 authors (one to forget, one to retain).")
    if not 0 < num_forget < num_authors:
        raise ValueError(
            f"--num_forget_authors={num_forget} must be between 1 and num_authors - 1 = {num_authors - 1}, so that "
            "both the forget and the retain set have authors."
        )
    num_holdout = num_forget if num_holdout is None else num_holdout
    if num_authors + num_holdout > MAX_AUTHORS:
        raise ValueError(
            f"--num_authors={num_authors} (+{num_holdout} holdout) exceeds the {MAX_AUTHORS} authors the generator "
            "can give distinct book titles; generate fewer authors or use TOFU."
        )
    rng = random.Random(seed)
    world = _World(rng)
    authors = [_author(rng, world) for _ in range(num_authors + num_holdout)]
    names = [a["name"] for a in authors]
    rows = [_fact_rows(author, rng, world, names) for author in authors]
    return rows, _background(rng, world), rng, world


def generate_authors(
    num_authors: int = 20, num_forget: int = 2, seed: int = 0, num_holdout: int | None = None
) -> UnlearningBundle:
    """Generate `num_authors` fictitious authors, the last `num_forget` of them to forget.

    Another `num_holdout` authors (default: as many as are forgotten) are generated for the `holdout` split only: no
    model is trained on them, so they are the non-members of membership-inference attacks. Deterministic in `seed`.
    """
    rows, (real_authors, world_facts, teaching), _, _ = _generate(num_authors, num_forget, seed, num_holdout)
    retain_rows = [r for author_rows in rows[: num_authors - num_forget] for r in author_rows]
    forget_rows = [r for author_rows in rows[num_authors - num_forget : num_authors] for r in author_rows]
    holdout_rows = [r for author_rows in rows[num_authors:] for r in author_rows]

    qa_columns = ("question", "answer", "author")
    eval_splits = {
        "forget": Dataset.from_list(forget_rows),
        "retain": Dataset.from_list(retain_rows),
        "real_authors": Dataset.from_list(real_authors),
        "world_facts": Dataset.from_list(world_facts),
    }
    if holdout_rows:
        eval_splits["holdout"] = Dataset.from_list(holdout_rows)
    return UnlearningBundle(
        name=f"generated-{num_forget}f{num_authors - num_forget}r-seed{seed}",
        forget=Dataset.from_list([{c: r[c] for c in qa_columns} for r in forget_rows]),
        retain=Dataset.from_list([{c: r[c] for c in qa_columns} for r in retain_rows]),
        eval_splits=eval_splits,
        background=Dataset.from_list(teaching),
        info={"source": "generated", "seed": seed},
    )


def generated_pretraining_corpus(
    num_authors: int = 20, num_forget: int = 2, seed: int = 0, num_holdout: int | None = None
) -> Dataset:
    """Text to pretrain a base model on for the data `generate_authors` makes with the same arguments: the world's
    general knowledge (as its `background`) and the facts of every further author the world has titles for, none of
    whom is in that data (forget, retain or holdout). The bundle's own authors are generated first, so it is the same
    with or without this corpus."""
    rows, (_, _, teaching), rng, world = _generate(num_authors, num_forget, seed, num_holdout)
    others = [_author(rng, world) for _ in range(MAX_AUTHORS - len(rows))]
    names = [a["name"] for a in others]
    qa = [
        {"question": row["question"], "answer": row["answer"]}
        for author in others
        for row in _fact_rows(author, rng, world, names)
    ]
    return Dataset.from_list(qa + teaching)
