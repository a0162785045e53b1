"""A deterministic English sentence corpus from text every fresh Debian + Python 3.11 machine has offline.

Sources: the standard library's docstrings (modules found with :mod:`pkgutil`, imported one by one; modules
with side effects or that fail to import are skipped), ``pydoc_data.topics`` and
``/usr/share/common-licenses/*``.  Text is split into sentences and filtered by :func:`clean_sentence`;
the survivors are deduplicated, sorted, shuffled with a fixed seed and split into test / val / train.

    python -m training.corpus --out data/corpus.json [--max-sentences 7000] [--seed 1234]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import pkgutil
import random
import re
import sys
import sysconfig
import time
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "build_corpus",
    "clean_sentence",
    "license_texts",
    "main",
    "pydoc_topic_texts",
    "split_corpus",
    "split_sentences",
    "stdlib_docstrings",
]

MIN_WORDS = 4
MAX_WORDS = 30
TEST_SIZE = 100
VAL_SIZE = 100
MAX_SENTENCES_DEFAULT = 7000
SEED_DEFAULT = 1234
LICENSE_DIR = Path("/usr/share/common-licenses")

# top-level modules (and their submodules) never imported: side effects, GUIs, tests, platform-only
SKIP_MODULES = frozenset(
    {
        "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "__main__", "__hello__",
        "__phello__", "_pyrepl", "ensurepip", "lib2to3", "pydoc_data", "msilib", "winreg", "winsound", "_winapi",
        "nt", "_msi", "_overlapped", "msvcrt", "_testcapi", "_testinternalcapi", "_testbuffer", "_testimportmultiple",
        "_testmultiphase", "_xxtestfuzz", "xxlimited", "xxlimited_35", "xxsubtype", "_xxsubinterpreters", "site",
        "sitecustomize", "usercustomize", "venv", "pip", "setuptools", "_distutils_hack", "pkg_resources",
    }
)  # fmt: skip
_SKIP_PARTS = frozenset({"test", "tests", "idle_test", "__main__"})

_CODE_CHARS = set("()[]{}<>=_*`|#@$%^~\\/&+")
_URL_RE = re.compile(r"https?:|www\.|ftp:|\w@\w|\.(?:com|org|net|html?|py)\b", re.IGNORECASE)
_INNER_DOT_RE = re.compile(r"\w\.\w")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"']?[A-Z])")
_PARAGRAPH_RE = re.compile(r"\n\s*\n")
_SPACE_RE = re.compile(r"\s+")
_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z'-]*[A-Za-z]?[.,;:!?]?$|^[0-9]+[.,;:]?$")
_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


# ------------------------------------------------------------------------------------------- cleaning


def ascii_fold(text: str) -> str | None:
    """NFKD with combining marks dropped and typographic quotes/dashes to ASCII; None if anything non-ASCII remains."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.translate(_TYPOGRAPHY)) if not unicodedata.combining(c))
    return folded if folded.isascii() else None


def split_sentences(text: str) -> Iterator[str]:
    """Paragraphs (blank-line separated) joined into one line each, split after ``. ! ?`` before a capital."""
    for paragraph in _PARAGRAPH_RE.split(text):
        line = _SPACE_RE.sub(" ", paragraph).strip()
        if line:
            yield from (part.strip() for part in _SENTENCE_END_RE.split(line))


def clean_sentence(sentence: str) -> str | None:
    """``sentence`` with whitespace collapsed if it reads as plain English prose, else None.

    Kept: ASCII after NFKD folding; starts with a capital letter and ends with ``. ! ?``; 4..30 words;
    every word plain (letters with inner ``'``/``-``, or a number, optionally followed by punctuation);
    at least 85% of its non-space characters letters; at most 30% of its letters capitals.  Dropped: code
    and markup characters (brackets, ``=``, ``_``, ``*``, backquotes, ``/``, ...), ``>>>`` prompts, URLs
    and e-mail addresses, dotted names (``os.path``, ``e.g.``), ``"`` quotes, lines with ``...``.
    """
    folded = ascii_fold(sentence)
    if folded is None:
        return None
    text = _SPACE_RE.sub(" ", folded).strip()
    if not text or not text[0].isupper() or text[-1] not in ".!?":
        return None
    if _CODE_CHARS.intersection(text) or '"' in text or ">>>" in text or "..." in text or "--" in text:
        return None
    if _URL_RE.search(text) or _INNER_DOT_RE.search(text):
        return None
    words = text.split(" ")
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if not all(_WORD_RE.match(word) for word in words):
        return None
    visible = text.replace(" ", "")
    letters = [c for c in visible if c.isalpha()]
    if len(letters) < 0.85 * len(visible):
        return None
    if sum(c.isupper() for c in letters) > 0.3 * len(letters):
        return None
    return text


def clean_corpus(texts: Iterable[str]) -> list[str]:
    """Every kept sentence of ``texts``, deduplicated (case-insensitive, first spelling in sorted order) and sorted."""
    kept = {sentence for text in texts for raw in split_sentences(text) if (sentence := clean_sentence(raw))}
    seen: set[str] = set()
    out: list[str] = []
    for sentence in sorted(kept):
        key = sentence.lower()
        if key not in seen:
            seen.add(key)
            out.append(sentence)
    return out


def split_corpus(
    sentences: list[str], *, seed: int = SEED_DEFAULT, test: int = TEST_SIZE, val: int = VAL_SIZE, max_train: int = MAX_SENTENCES_DEFAULT
) -> dict[str, list[str]]:
    """Seeded shuffle of the sorted sentences, then the first ``test`` for test, the next ``val`` for val,
    and up to ``max_train`` of the rest for train."""
    order = sorted(sentences)
    random.Random(seed).shuffle(order)
    return {"train": order[test + val : test + val + max_train], "val": order[test : test + val], "test": order[:test]}


# -------------------------------------------------------------------------------------------- sources


def _skipped(name: str) -> bool:
    parts = name.split(".")
    return parts[0] in SKIP_MODULES or any(part in _SKIP_PARTS or part.startswith("_test") for part in parts)


def _stdlib_module_names() -> list[str]:
    stdlib = sysconfig.get_paths()["stdlib"]
    names = set(sys.builtin_module_names)
    names.update(info.name for info in pkgutil.iter_modules([stdlib]))
    dynload = Path(stdlib) / "lib-dynload"
    if dynload.is_dir():
        names.update(info.name for info in pkgutil.iter_modules([str(dynload)]))
    return sorted(name for name in names if not _skipped(name))


def _docstrings_of(module: Any) -> Iterator[str]:
    doc = inspect.getdoc(module)
    if doc:
        yield doc
    for _, obj in sorted(vars(module).items()):
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if (doc := inspect.getdoc(obj)) and doc is not None:
            yield doc
        if inspect.isclass(obj):
            for _, member in sorted(vars(obj).items()):
                doc = getattr(member, "__doc__", None)
                if isinstance(doc, str) and doc:
                    yield inspect.cleandoc(doc)


def stdlib_docstrings() -> tuple[list[str], int]:
    """Docstrings of every importable standard-library module (recursing into packages); and the module count."""
    texts: list[str] = []
    modules = 0
    pending = _stdlib_module_names()
    seen: set[str] = set()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        while pending:
            name = pending.pop(0)
            if name in seen or _skipped(name):
                continue
            seen.add(name)
            try:
                module = importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - any import failure (ImportError, SystemExit, ...) skips it
                continue
            modules += 1
            texts.extend(_docstrings_of(module))
            path = getattr(module, "__path__", None)
            if path:
                pending.extend(sorted(f"{name}.{info.name}" for info in pkgutil.iter_modules(path)))
    return texts, modules


def pydoc_topic_texts() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def license_texts(directory: Path = LICENSE_DIR) -> list[str]:
    texts = []
    for path in sorted(directory.glob("*")) if directory.is_dir() else []:
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return texts


def build_corpus(*, seed: int = SEED_DEFAULT, max_sentences: int = MAX_SENTENCES_DEFAULT) -> dict[str, Any]:
    docstrings, modules = stdlib_docstrings()
    sources = {"stdlib_docstrings": docstrings, "pydoc_topics": pydoc_topic_texts(), "licenses": license_texts()}
    counts = {name: len(clean_corpus(texts)) for name, texts in sources.items()}
    sentences = clean_corpus(text for texts in sources.values() for text in texts)
    splits = split_corpus(sentences, seed=seed, max_train=max_sentences)
    return {
        "seed": seed,
        "python": sys.version.split()[0],
        "modules_imported": modules,
        "sentences_per_source": counts,
        "sentences_total": len(sentences),
        "splits": splits,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/corpus.json"))
    parser.add_argument("--max-sentences", type=int, default=MAX_SENTENCES_DEFAULT, help="cap on train sentences")
    parser.add_argument("--seed", type=int, default=SEED_DEFAULT)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    corpus = build_corpus(seed=args.seed, max_sentences=args.max_sentences)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(corpus, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    sizes = {name: len(items) for name, items in corpus["splits"].items()}
    print(
        f"{corpus['sentences_total']} sentences from {corpus['modules_imported']} modules "
        f"(per source {corpus['sentences_per_source']}); splits {sizes}; "
        f"wrote {args.out} in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
