"""Examples that leak from one split into a later one, found and removed (`remove_leaks`).

A model scored on a test function it was trained on, or on a near copy of one, is scored on memory.
CodeSearchNet keeps a whole file in one split and removes near-duplicates across splits; the miner
splits by file, and this module removes what still leaks: a held-out function contained in a
training one, a near-duplicate, or the same docstring summary (the task's input).
"""

import keyword
import math
import re
from collections import Counter, defaultdict
from fractions import Fraction
from typing import NamedTuple

from codecl.data.csn import SPLITS
from codecl.data.docstrings import first_paragraph, strip_docstring
from codecl.data.records import CodeRecord

# What makes a valid or test example leak from an earlier split, checked in this order (`remove_leaks`).
LEAK_RULES = ("contained", "near_duplicate", "same_docstring")
# CodeSearchNet's near-duplicate test, as its dedup_split.py calls dpu_utils' DuplicateDetector (after
# Allamanis 2019, "The adverse effects of code duplication in machine learning models of code"): the
# identifier sets have Jaccard similarity >= 0.8 and the identifier multisets >= 0.7; a function with
# fewer than 10 identifier tokens is too short to judge. Fractions, so a pair at exactly 0.8 is found.
NEAR_DUPLICATE_SET_JACCARD = Fraction(4, 5)
NEAR_DUPLICATE_MULTISET_JACCARD = Fraction(7, 10)
NEAR_DUPLICATE_MIN_IDENTIFIERS = 10
IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")  # dpu_utils' pattern, with the `$` of JavaScript names
# Reserved words are not identifiers: every function shares them, so they would make all functions alike.
KEYWORDS = {
    "python": frozenset(keyword.kwlist),
    "javascript": frozenset((
        "await break case catch class const continue debugger default delete do else enum export extends false "
        "finally for function if implements import in instanceof interface let new null package private "
        "protected public return static super switch this throw true try typeof var void while with yield"
    ).split()),
}


def normalised(text: str) -> str:
    """`text` with every run of whitespace made one space: indentation and line breaks do not hide a copy."""
    return " ".join(text.split())


def identifier_counts(code_tokens: list[str], language: str) -> Counter:
    """The identifier tokens of a function and how often each occurs (dpu_utils' multiset T_2)."""
    keywords = KEYWORDS[language]
    return Counter(token for token in code_tokens if IDENTIFIER.fullmatch(token) and token not in keywords)


def is_near_duplicate(first: Counter, second: Counter) -> bool:
    """Jaccard(set) >= NEAR_DUPLICATE_SET_JACCARD and Jaccard(multiset) >= NEAR_DUPLICATE_MULTISET_JACCARD."""
    shared = len(first.keys() & second.keys())
    if shared < NEAR_DUPLICATE_SET_JACCARD * (len(first) + len(second) - shared):
        return False
    return sum((first & second).values()) >= NEAR_DUPLICATE_MULTISET_JACCARD * sum((first | second).values())


class NearDuplicateIndex:
    """Functions' identifiers, indexed to answer "is any of them a near-duplicate of this one?" exactly.

    Prefix filtering (Chaudhuri et al. 2006; Bayardo et al. 2007, "Scaling up all pairs similarity
    search"): with tokens in one global order, two sets x, y with Jaccard(x, y) >= t share a token among
    the first |x| - ceil(t|x|) + 1 of each, and t|y| <= |x| <= |y|/t. Only such pairs are compared, so
    the answer equals comparing every pair, at a small part of the cost.
    """

    def __init__(self, token_rank: dict[str, int]):
        self.token_rank = token_rank  # rarest first: rare tokens make short, selective posting lists
        self.members: list[Counter] = []
        self.postings: dict[str, list[int]] = defaultdict(list)

    def prefix(self, identifiers: Counter) -> list[str]:
        # Any order is exact if it is the same for every set; tokens without a rank simply come first.
        ordered = sorted(identifiers, key=lambda token: (self.token_rank.get(token, -1), token))
        return ordered[:len(ordered) - math.ceil(NEAR_DUPLICATE_SET_JACCARD * len(ordered)) + 1]

    def add(self, identifiers: Counter) -> None:
        if sum(identifiers.values()) < NEAR_DUPLICATE_MIN_IDENTIFIERS:
            return
        self.members.append(identifiers)
        for token in self.prefix(identifiers):
            self.postings[token].append(len(self.members) - 1)

    def has_near_duplicate(self, identifiers: Counter) -> bool:
        if sum(identifiers.values()) < NEAR_DUPLICATE_MIN_IDENTIFIERS:
            return False
        smallest = NEAR_DUPLICATE_SET_JACCARD * len(identifiers)
        largest = len(identifiers) / NEAR_DUPLICATE_SET_JACCARD
        compared = set()
        for token in self.prefix(identifiers):
            for member in self.postings.get(token, ()):
                if member in compared:
                    continue
                compared.add(member)
                candidate = self.members[member]
                if smallest <= len(candidate) <= largest and is_near_duplicate(identifiers, candidate):
                    return True
        return False


class ContainmentIndex:
    """Functions' targets and codes, indexed to answer exactly "does this occur inside one of them?".

    Texts are whitespace normalised. Every word of a needle but its first and last is a whole word of
    any text that contains it (those two may be parts of longer words there), so only the functions
    holding the needle's rarest inner word are searched.
    """

    def __init__(self):
        self.members: list[tuple[str, str]] = []
        self.postings: dict[str, list[int]] = defaultdict(list)

    def add(self, target: str, code: str) -> None:
        member, postings = len(self.members), self.postings  # locals: this loop runs once per word of the corpus
        self.members.append((target, code))
        for word in {*target.split(" "), *code.split(" ")}:
            postings[word].append(member)

    def contains(self, target: str, code: str) -> bool:
        return self.occurs(target, 0) or self.occurs(code, 1)

    def occurs(self, needle: str, field: int) -> bool:
        if not needle:
            return False  # an empty text is inside everything, but copies nothing
        inner_words = set(needle.split(" ")[1:-1])
        if not inner_words:
            return any(needle in member[field] for member in self.members)
        rarest = min(inner_words, key=lambda word: len(self.postings.get(word, ())))
        return any(needle in self.members[member][field] for member in self.postings.get(rarest, ()))


class LeakFingerprint(NamedTuple):
    """What a record is compared by: the task's target and source, the whole code, and its identifiers."""

    target: str  # tasks.make_pair's target: the code without its docstring, whitespace normalised
    code: str  # the whole function, a Python docstring included, whitespace normalised
    summary: str  # tasks.make_pair's source: the docstring's first paragraph, whitespace normalised
    identifiers: Counter

    @classmethod
    def of(cls, record: CodeRecord) -> "LeakFingerprint":
        target = strip_docstring(record.code, record.language).strip("\n")
        return cls(normalised(target), normalised(record.code), normalised(first_paragraph(record.docstring)),
                   identifier_counts(record.code_tokens, record.language))


class LeakReference:
    """The examples of the splits checked so far: what the next split must not leak from."""

    def __init__(self, token_rank: dict[str, int]):
        self.containing = ContainmentIndex()
        self.near_duplicates = NearDuplicateIndex(token_rank)
        self.summaries: set[str] = set()

    def add(self, print_: LeakFingerprint) -> None:
        self.containing.add(print_.target, print_.code)
        self.near_duplicates.add(print_.identifiers)
        self.summaries.add(print_.summary)

    def leak_rule(self, print_: LeakFingerprint) -> str | None:
        """The first of `LEAK_RULES` by which `print_` leaks from these examples, or None."""
        # The code as well as the target: a nested Python function keeps its docstring inside its parent.
        if self.containing.contains(print_.target, print_.code):
            return "contained"
        if self.near_duplicates.has_near_duplicate(print_.identifiers):
            return "near_duplicate"
        return "same_docstring" if print_.summary and print_.summary in self.summaries else None


def remove_leaks(
    records: dict[str, list[CodeRecord]],
) -> tuple[dict[str, list[CodeRecord]], dict[str, dict[str, int]]]:
    """The records of one language without the valid and test examples that leak; counts per split and rule.

    Valid is checked against train, then test against train and what is left of valid. An example
    leaks, by the first of `LEAK_RULES` it meets, when
    - contained: its target occurs inside an earlier split's target, or its code inside one's code
      (a nested function, a copied helper), whitespace normalised;
    - near_duplicate: it is a near-duplicate of an earlier split's function (`is_near_duplicate`);
    - same_docstring: its docstring summary, the task's input, equals one of an earlier split's.
    Train is never changed: a leak is a property of the held-out side.
    """
    fingerprints = {split: [LeakFingerprint.of(record) for record in records[split]] for split in SPLITS}
    # Document frequency over the whole language, so every set is ordered the same way.
    frequency = Counter(token for split in SPLITS for print_ in fingerprints[split] for token in print_.identifiers)
    rarest_first = sorted(frequency, key=lambda token: (frequency[token], token))
    reference = LeakReference({token: rank for rank, token in enumerate(rarest_first)})
    for print_ in fingerprints["train"]:
        reference.add(print_)
    kept, removed = {"train": records["train"]}, {}
    for split in SPLITS[1:]:
        kept[split], removed[split], kept_prints = [], {rule: 0 for rule in LEAK_RULES}, []
        for record, print_ in zip(records[split], fingerprints[split]):
            rule = reference.leak_rule(print_)
            if rule:
                removed[split][rule] += 1
            else:
                kept[split].append(record)
                kept_prints.append(print_)
        for print_ in kept_prints:  # only after the loop: a split is not checked against itself
            reference.add(print_)
    return kept, removed
