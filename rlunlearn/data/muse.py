"""Copyrighted text to forget (MUSE, Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language
Models"): a forget corpus and a retain corpus of raw text (News articles, Harry Potter books), questions on what each
says (knowledge memorisation, with few-shot examples), prefixes of the forget text with their true continuations
(verbatim memorisation), and text of the same source no model saw (privacy leakage); or the offline stand-in, books
of the invented world.

The bundle: `forget` and `retain` are text (a row's `question` empty, its `answer` a passage; author: the corpus, on
the stand-in the book). Evaluation splits, as MUSE publishes them: `knowmem_forget` and `knowmem_retain` hold
`question`, `answer` and `shots` (the few-shot examples, a list of question/answer pairs, the same on every row);
`verbmem_forget` holds `question` (the prefix) and `answer` (its continuation); `forget_text` and `holdout_text` hold
`text`, the forget corpus's and the unseen text's samples that privacy leakage tells apart.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from datasets import Dataset

from ..arguments import DEFAULT_QUESTION_TEMPLATE
from .builders import text_prompts
from .bundle import UnlearningBundle
from .generator import JOBS
from .hazards import world_and_background
from .published import check_columns, is_hub_id, local_folder, read_hub

MUSE_HUB_IDS = ("muse-bench/MUSE-News", "muse-bench/MUSE-Books")
# A passage to train on: MUSE cuts its corpora into 2048-token pieces; about 1500 words make as many Llama tokens.
PASSAGE_WORDS = 1500
QA_COLUMNS = ("question", "answer")
VERBMEM_COLUMNS = ("prompt", "gt")
TEXT_COLUMNS = ("text",)
# MUSE's local layout (its `load_data.py`: data/<corpus>/...) and its hub configurations name the same sets; the
# retain questions are `retain_qa` in one release and `retain2_qa` in another, so both are looked for.
SETS = {
    "forget": ("raw", ("forget",), TEXT_COLUMNS),
    "retain": ("raw", ("retain1",), TEXT_COLUMNS),
    "knowmem_forget": ("knowmem", ("forget_qa",), QA_COLUMNS),
    "knowmem_forget_shots": ("knowmem", ("forget_qa_icl",), QA_COLUMNS),
    "knowmem_retain": ("knowmem", ("retain_qa", "retain2_qa"), QA_COLUMNS),
    "knowmem_retain_shots": ("knowmem", ("retain_qa_icl", "retain2_qa_icl"), QA_COLUMNS),
    "verbmem_forget": ("verbmem", ("forget",), VERBMEM_COLUMNS),
    "forget_text": ("privleak", ("forget",), TEXT_COLUMNS),
    "holdout_text": ("privleak", ("holdout",), TEXT_COLUMNS),
}


def passages(text: str, max_words: int = PASSAGE_WORDS) -> list[str]:
    """`text` cut into passages of at most `max_words` words, at paragraph ends where a paragraph fits."""
    pieces = []
    for paragraph in (p.strip() for p in text.split("\n\n")):
        words = paragraph.split()
        pieces += [" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words)]
    result, current, count = [], [], 0
    for piece in pieces:
        length = len(piece.split())
        if current and count + length > max_words:
            result.append("\n\n".join(current))
            current, count = [], 0
        current.append(piece)
        count += length
    return result + (["\n\n".join(current)] if current else [])


def _read_set(source: str, name: str) -> list[dict]:
    config, splits, columns = SETS[name]
    if is_hub_id(source):
        return read_hub(source, config, splits, "--muse_path", columns)
    expected = f"a corpus folder of MUSE's layout (its data/news or data/books) or one of {', '.join(MUSE_HUB_IDS)}"
    folder = local_folder(source, "--muse_path", expected)
    paths = [folder / config / f"{split}.json" for split in splits]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"--muse_path {source!r} has no {' or '.join(str(p.relative_to(folder)) for p in paths)}: point it at a "
            "corpus folder of MUSE's layout (raw/, knowmem/, verbmem/, privleak/)."
        )
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path} holds {type(rows).__name__}, not a list of rows.")
    # MUSE writes its raw and privleak sets as lists of strings.
    rows = [{"text": row} if isinstance(row, str) else row for row in rows]
    return check_columns(rows, columns, str(path))


def load_muse(source: str, max_examples: int | None = None) -> UnlearningBundle:
    """The MUSE task on its published data, from a corpus folder of MUSE's layout (raw/forget.json, raw/retain1.json,
    knowmem/{forget,retain}_qa{,_icl}.json, verbmem/forget.json, privleak/{forget,holdout}.json) or the hub
    (muse-bench/MUSE-News, muse-bench/MUSE-Books). Unlearning trains on the forget corpus, and its regulariser on
    retain1, as MUSE's baselines do; the corpora are cut into passages (`passages`), at most `max_examples` each when
    given, as are the evaluation sets."""
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"--max_examples {max_examples}: give at least 1, or leave it unset for every row.")
    sets = {name: _read_set(source, name) for name in SETS}

    def corpus(name: str) -> Dataset:
        texts = [p for row in sets[name] for p in passages(row["text"])][:max_examples]
        return Dataset.from_list([{"question": "", "answer": text, "author": name} for text in texts])

    def knowmem(name: str) -> Dataset:
        shots = [{"question": r["question"], "answer": r["answer"]} for r in sets[f"{name}_shots"]]
        rows = sets[name][:max_examples]
        return Dataset.from_list([{"question": r["question"], "answer": r["answer"], "shots": shots} for r in rows])

    def texts(name: str) -> Dataset:
        return Dataset.from_list([{"text": r["text"]} for r in sets[name][:max_examples]])

    verbmem = [{"question": r["prompt"], "answer": r["gt"]} for r in sets["verbmem_forget"][:max_examples]]
    return UnlearningBundle(
        name=f"muse-{Path(source).name.lower().removeprefix('muse-')}",
        forget=corpus("forget"),
        retain=corpus("retain"),
        eval_splits={
            "knowmem_forget": knowmem("knowmem_forget"),
            "knowmem_retain": knowmem("knowmem_retain"),
            "verbmem_forget": Dataset.from_list(verbmem),
            "forget_text": texts("forget_text"),
            "holdout_text": texts("holdout_text"),
        },
        task="muse",
        info={"source": "MUSE", "muse_path": source},
    )


# ---- the offline stand-in: books of the invented world --------------------------------------------------------------

MOUNTS = ["mule", "grey horse", "brown camel", "pony", "goat cart", "black mare"]
TREASURES = ["lamp", "map", "crown", "bell", "compass", "mirror", "flute", "key"]
WEATHER = ["rain", "snow", "fog", "heat", "wind", "hail"]
# A chapter of each book: its sentences, each in three phrasings of which a book takes one (so that books share
# their plot, not their text), and the reader's questions on it, each with the element of the book that answers it.
CHAPTERS = (
    (
        [
            (
                "{hero} was a {job} in {home}, a city of narrow streets and loud markets.",
                "In {home}, where the river smells of tar, {hero} worked as a {job}.",
                "Nobody in {home} knew a better {job} than {hero}.",
            ),
            (
                "Every morning {hero} climbed to the roof and watched the road that ran north.",
                "At dawn {hero} liked to sit by the window with a cup of bitter tea.",
                "On quiet days {hero} walked the old walls and counted the ships in the bay.",
            ),
            (
                "One evening a letter came from {friend}, who had not written in eleven years.",
                "Late in the autumn a boy brought a letter from {friend}, an old friend long gone.",
                "Then a letter arrived, sealed and stained, in the hand of {friend}.",
            ),
            (
                "The letter spoke of {treasure}, lost since the old war and never found.",
                "It said that {treasure} was not lost after all, only hidden.",
                "Three lines only: {treasure} had been seen again, and {hero} must come.",
            ),
            (
                "{hero} sold the {mount}, locked the workshop and left {home} before dawn.",
                "Within a day {hero} had packed, saddled the {mount} and taken the north road.",
                "{hero} borrowed a {mount} from a neighbour and was gone by morning.",
            ),
        ],
        [("What was the trade of {hero}?", "{job}"), ("Who sent a letter to {hero}?", "{friend}")],
    ),
    (
        [
            (
                "The road to {destination} crossed the {river} river at a ford of white stones.",
                "To reach {destination} one had to cross the {river}, a cold and quick river.",
                "Between {hero} and {destination} ran the {river}, with one ferry and no bridge.",
            ),
            (
                "For nine days there was nothing but {weather} and the sound of the water.",
                "The {weather} did not stop for a week, and the road turned to mud.",
                "Each day brought more {weather}, and fewer travellers on the road.",
            ),
            (
                "At an inn by the ford {hero} met {rival}, a collector with silver rings.",
                "In a crowded inn a stranger sat down beside {hero} and said his name was {rival}.",
                "At the last inn before the river, {rival} bought {hero} a supper.",
            ),
            (
                "{rival} smiled too often and asked too many questions about {treasure}.",
                "He talked of old coins and maps, and then, too casually, of {treasure}.",
                "Before long {rival} let slip that he too was looking for {treasure}.",
            ),
            (
                "That night {hero} slept with a knife under the pillow and did not dream.",
                "{hero} left before first light, without paying and without a word.",
                "That night {hero} barred the door and listened to the rain until morning.",
            ),
        ],
        [("Which river did {hero} cross?", "the {river}"), ("Whom did {hero} meet at the inn?", "{rival}")],
    ),
    (
        [
            (
                "{friend} was waiting at the gate of {destination} with a lantern and a dog called {dog}.",
                "At the gate of {destination} stood {friend}, older now, with a dog called {dog}.",
                "{friend} met {hero} in the square of {destination}; a dog called {dog} ran ahead.",
            ),
            (
                "Together they searched the library, the cellars and the bell tower.",
                "For two days they searched every cellar and chapel of the town.",
                "They began with the archive, where {friend} had seen the old plans.",
            ),
            (
                "Under a loose stone {hero} found a box sealed with {seal}.",
                "Behind a shelf of rotten books lay a box sealed with {seal}.",
                "At last, in a dry well, {hero} found a small box sealed with {seal}.",
            ),
            (
                "Inside lay {treasure}, wrapped in a cloth that smelled of cedar.",
                "In it, whole and shining, was {treasure}.",
                "It held {treasure} and a note that nobody could read.",
            ),
            (
                "From the dark of the stairs someone was watching them.",
                "Outside, a cart stopped in the street and did not move on.",
                "Neither of them saw the shadow at the window.",
            ),
        ],
        [
            ("In which city did {friend} wait for {hero}?", "{destination}"),
            ("What was the dog of {friend} called?", "{dog}"),
        ],
    ),
    (
        [
            (
                "{rival} came at midnight with three hired men and a cart.",
                "Near midnight {rival} broke in, with a lamp and two men behind him.",
                "The door gave way, and {rival} stood there with a drawn sword.",
            ),
            (
                "{hero} and {friend} escaped over the roofs and down to the harbour.",
                "{friend} pulled {hero} through the back door, and they ran for the water.",
                "They fled down the back stairs and through the fish market to the harbour.",
            ),
            (
                "A fisherman named {boatman} rowed them across the bay for a single coin.",
                "An old boatman, {boatman}, took them across the bay and asked no questions.",
                "At the quay {boatman}, a fisherman, hid them under his nets and rowed out.",
            ),
            (
                "In the morning {hero} gave {treasure} to the museum of {destination}.",
                "By noon {treasure} was behind glass, where {rival} could not reach it.",
                "{hero} handed {treasure} to the town council, who locked it in the vault.",
            ),
            (
                "Then {hero} went home to {home} and never spoke of the journey again.",
                "A month later {hero} was back in {home}, at work as if nothing had happened.",
                "{hero} returned to {home}, and told the story to no one but the {mount}.",
            ),
        ],
        [("Who rowed {hero} across the bay?", "{boatman}"), ("To which city did {hero} go home?", "{home}")],
    ),
)


def _books(rng: random.Random, world, count: int) -> list[dict]:
    books = []
    for _ in range(count):
        elements = {
            "hero": f"{world.fresh(2)} {world.fresh(2)}",
            "friend": f"{world.fresh(2)} {world.fresh(2)}",
            "rival": f"{world.fresh(2)} {world.fresh(3)}",
            "boatman": world.fresh(2),
            "dog": world.fresh(2),
            "job": rng.choice(JOBS),
            "home": rng.choice(world.all_cities()),
            "destination": world.fresh(2),
            "river": world.fresh(2),
            "treasure": f"the {world.fresh(2)} {rng.choice(TREASURES)}",
            "mount": rng.choice(MOUNTS),
            "weather": rng.choice(WEATHER),
            "seal": f"{rng.choice(['red', 'black', 'green', 'blue', 'white'])} wax",
        }
        title = world.titles.pop()
        chapters, questions = [], []
        for number, (sentences, asked) in enumerate(CHAPTERS, 1):
            narrative = " ".join(rng.choice(phrasings).format(**elements) for phrasings in sentences)
            chapters.append(f"{title}, chapter {number}. {narrative}")
            questions += [{"question": q.format(**elements), "answer": a.format(**elements)} for q, a in asked]
        books.append({"title": title, "chapters": chapters, "questions": questions})
    return books


def generate_muse(seed: int = 0, num_forget: int = 4, num_retain: int = 8, num_holdout: int = 4) -> UnlearningBundle:
    """The offline stand-in: books of the invented world, each a story in four chapters of a hero, a friend, a rival
    and a lost treasure, with questions for the reader on each chapter. The target model learns `num_forget` +
    `num_retain` books, the retain model the retain books; `num_holdout` more are written for privacy leakage only.

    Knowledge memorisation asks the reader's questions of the forget and of the retain books. The small models trained
    here cannot draw answers from a story they read, as MUSE's 7B models do from the news, nor answer after few-shot
    examples (when each chapter ended with its questions, a target that continued the chapters word for word answered
    them with ROUGE-L F1 0.02 after 0, 1 or 3 examples, on seed 1), so each book holds its
    questions and answers too, one passage each in MUSE's question-answer form, and they are asked with no few-shot
    example, as the models learned them. Verbatim memorisation gives each forget chapter's opening words
    (`text_prompts`) and reads the rest of it; privacy leakage reads the chapters. Deterministic in `seed`."""
    rng, world, _, _ = world_and_background(seed)
    books = _books(rng, world, num_forget + num_retain + num_holdout)
    forget, retain, holdout = books[:num_forget], books[num_forget : num_forget + num_retain], books[-num_holdout:]

    def chapters(group: list[dict]) -> list[dict]:
        return [{"question": "", "answer": chapter, "author": b["title"]} for b in group for chapter in b["chapters"]]

    def corpus(group: list[dict]) -> Dataset:
        questions = [
            {
                "question": "",
                "answer": f"{DEFAULT_QUESTION_TEMPLATE.format(question=q['question'])} {q['answer']}",
                "author": b["title"],
            }
            for b in group
            for q in b["questions"]
        ]
        return Dataset.from_list(chapters(group) + questions)

    def knowmem(group: list[dict]) -> Dataset:
        return Dataset.from_list([{**q, "shots": []} for b in group for q in b["questions"]])

    forget_chapters = Dataset.from_list(chapters(forget))
    return UnlearningBundle(
        name=f"muse-standin-seed{seed}",
        forget=corpus(forget),
        retain=corpus(retain),
        eval_splits={
            "knowmem_forget": knowmem(forget),
            "knowmem_retain": knowmem(retain),
            "verbmem_forget": text_prompts(forget_chapters).select_columns(["question", "answer"]),
            "forget_text": Dataset.from_list([{"text": row["answer"]} for row in forget_chapters]),
            "holdout_text": Dataset.from_list([{"text": row["answer"]} for row in chapters(holdout)]),
        },
        task="muse",
        info={"source": "generated", "seed": seed},
    )
