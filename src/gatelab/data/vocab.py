"""Tokenisers and vocabularies: one family for words, characters and class names.

:class:`IdMap` is the core every map shares: an id-ordered list of distinct strings (its
specials first), its index, equality, the id range check, counting a corpus into the
most frequent entries, and the JSON form written into run folders. The subclasses differ
only where the behaviour does:

==================  ==========================  =============================================
class               specials (ids 0..)          what differs
==================  ==========================  =============================================
:class:`Vocabulary` ``<pad> <unk>``             the text classifier's: literal ``<pad>`` reads
                                                as ``<unk>``; ``max_size`` counts the specials
:class:`WordVocab`  ``<pad> <unk> <s> </s>``    the translator's: decoding stops at ``</s>``
:class:`CharVocab`  none                        characters sorted by code point; an unseen
                                                character is refused (no sensible ``<unk>``)
:class:`Labels`     none                        class names, integers sorted numerically; an
                                                unknown name is refused
==================  ==========================  =============================================

The tokenisers are regular expressions: :class:`Tokenizer` (Penn Treebank contractions,
numbers with separators; the text classifier's) and :class:`PlainTokenizer` (words and
single punctuation marks; the translator's, :func:`tokenize`).

The JSON each writes (``to_dict``) is part of the run-folder format and reads back with
``from_dict`` unchanged.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from gatelab.errors import DataError

__all__ = [
    "BOS",
    "BOS_ID",
    "EOS",
    "EOS_ID",
    "PAD",
    "PAD_ID",
    "SPECIALS",
    "UNK",
    "UNK_ID",
    "CharVocab",
    "IdMap",
    "Labels",
    "PlainTokenizer",
    "Tokenizer",
    "Vocabulary",
    "WordVocab",
    "tokenize",
]

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: The translator's specials, ids 0..3 of every :class:`WordVocab`.
SPECIALS = (PAD, UNK, BOS, EOS)


# --------------------------------------------------------------------------------------
# Tokenisers
# --------------------------------------------------------------------------------------

_WORD_RE = re.compile(
    r"""
    \d+(?:[.,]\d+)+              # numbers with separators: 3.5, 1,000, 10.5.2
    | [^\W_]+?(?=n't\b)          # the word before a n't contraction: do|n't, ca|n't
    | n't\b                      # n't
    | '(?:s|re|ve|ll|d|m)\b      # 's 're 've 'll 'd 'm
    | [^\W_]+                    # words and plain numbers (letters/digits, any script)
    | [^\w\s]|_                  # anything else but space: one punctuation mark a token
    """,
    re.VERBOSE | re.IGNORECASE,
)


class Tokenizer:
    """A regular-expression word tokenizer.

    Tokens are words (runs of letters and digits, any script), numbers with decimal or
    thousands separators (``3.5``, ``1,000``), English contractions split the Penn
    Treebank way (``don't`` -> ``do``, ``n't``; ``it's`` -> ``it``, ``'s``; this matches
    the already tokenised SST-2 and MR data, ``does n't``), and every other non-space
    character as a token of its own (``"..."`` gives three ``"."``). The typographic
    apostrophe U+2019 is read as ``'``. Whitespace of any kind (including NEL U+0085)
    separates tokens.

    Args:
        lower: lower-case the text first.
    """

    TYPE: ClassVar[str] = "regex_word"
    PATTERN: ClassVar[re.Pattern[str]] = _WORD_RE
    #: Read the typographic apostrophe U+2019 as ``'`` (the contractions need it).
    FOLD_APOSTROPHE: ClassVar[bool] = True

    def __init__(self, lower: bool = True) -> None:
        self.lower = bool(lower)

    def __call__(self, text: str) -> list[str]:
        """Tokenise one text; returns its tokens (an empty list for blank text)."""
        if not isinstance(text, str):
            raise DataError(
                f"{type(self).__name__} expects a str, got {type(text).__name__}: {text!r}"
            )
        if self.FOLD_APOSTROPHE:
            text = text.replace("\u2019", "'")
        if self.lower:
            text = text.lower()
        return self.PATTERN.findall(text)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lower={self.lower})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.lower == self.lower

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description: ``{"type": TYPE, "lower": bool}``."""
        return {"type": self.TYPE, "lower": self.lower}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        """Rebuild from :meth:`to_dict` output; anything else raises DataError."""
        if not isinstance(d, dict) or d.get("type") != cls.TYPE:
            raise DataError(f"not a {cls.__name__} description: {d!r}; expected type {cls.TYPE!r}")
        lower = d.get("lower", True)
        if not isinstance(lower, bool):
            raise DataError(f"{cls.__name__} 'lower' must be true or false, got {lower!r}")
        return cls(lower=lower)


class PlainTokenizer(Tokenizer):
    """Words (``\\w+``) and single punctuation marks, nothing else: the translator's.

    Unlike :class:`Tokenizer`, contractions are not split the Penn Treebank way and the
    typographic apostrophe stays a token of its own (``l'ont`` -> ``l``, ``'``, ``ont``).
    """

    TYPE: ClassVar[str] = "regex_plain"
    PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"\w+|[^\w\s]")
    FOLD_APOSTROPHE: ClassVar[bool] = False


_PLAIN = PlainTokenizer(lower=True)


def tokenize(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words and single punctuation marks.

    >>> tokenize("Ils l'ont vu !")
    ['ils', 'l', "'", 'ont', 'vu', '!']
    """
    return _PLAIN(text)


# --------------------------------------------------------------------------------------
# The shared core
# --------------------------------------------------------------------------------------


class IdMap:
    """Distinct strings <-> ids ``0..n-1``, the class's :attr:`SPECIALS` first.

    Args:
        items: the id-ordered entries (each a str, each once, specials first).

    Attributes:
        index: entry -> id.
    """

    #: The entries every map of the class starts with, at ids ``0..len(SPECIALS)-1``.
    SPECIALS: ClassVar[tuple[str, ...]] = ()
    #: The JSON form: ``{TYPE_KEY: TYPE, ITEMS_KEY: [entries]}``.
    TYPE_KEY: ClassVar[str] = "type"
    TYPE: ClassVar[str] = ""
    ITEMS_KEY: ClassVar[str] = "tokens"
    #: Names in messages: "the vocabulary", "token id 7".
    WHAT: ClassVar[str] = "vocabulary"
    ITEM: ClassVar[str] = "token"

    def __init__(self, items: Sequence[str]) -> None:
        items = list(items)
        n = len(self.SPECIALS)
        if tuple(items[:n]) != self.SPECIALS:
            raise DataError(
                f"a {self.WHAT} must start with {', '.join(map(repr, self.SPECIALS))}; "
                f"got {items[:n]!r}"
            )
        index: dict[str, int] = {}
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise DataError(f"{self.WHAT} entry {i} is not a string: {t!r}")
            if t in index:
                raise DataError(
                    f"{self.WHAT} {self.ITEM} {t!r} appears twice (ids {index[t]} and {i})"
                )
            index[t] = i
        self._itos = items
        self.index = index

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, item: object) -> bool:
        return item in self.index

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._itos == self._itos

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} {self.ITEM}s)"

    def lookup(self, ids: Iterable[int] | Tensor) -> list[str]:
        """Ids -> entries; an id outside ``0..len-1`` raises DataError."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        out = []
        n = len(self._itos)
        for i in ids:
            j = int(i)
            if not 0 <= j < n:
                raise DataError(f"{self.ITEM} id {j} is out of range 0..{n - 1} of the {self.WHAT}")
            out.append(self._itos[j])
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description: ``{TYPE_KEY: TYPE, ITEMS_KEY: [...]}``."""
        return {self.TYPE_KEY: self.TYPE, self.ITEMS_KEY: list(self._itos)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IdMap:
        """Rebuild from :meth:`to_dict` output; anything else raises DataError."""
        if (
            not isinstance(d, dict)
            or d.get(cls.TYPE_KEY) != cls.TYPE
            or not isinstance(d.get(cls.ITEMS_KEY), list)
        ):
            raise DataError(
                f"not a {cls.__name__} description: expected "
                f"{{{cls.TYPE_KEY!r}: {cls.TYPE!r}, {cls.ITEMS_KEY!r}: [...]}}, got {d!s:.80}"
            )
        return cls(d[cls.ITEMS_KEY])

    @classmethod
    def counted(
        cls, token_lists: Iterable[Sequence[str]], min_freq: int = 1, limit: int | None = None
    ) -> IdMap:
        """The specials, then the tokens of ``token_lists`` seen at least ``min_freq``
        times, most frequent first (ties in string order, so the same data always gives
        the same ids), at most ``limit`` of them. Literal specials are not counted."""
        _check_min_freq(min_freq)
        return cls.from_counts(cls.count(token_lists), min_freq, limit)

    @classmethod
    def count(cls, token_lists: Iterable[Sequence[str]], counts: Counter | None = None) -> Counter:
        """``counts`` (a new Counter by default) updated with the tokens of
        ``token_lists``: what :meth:`from_counts` keeps from, so that one pass over data
        can count for several vocabularies."""
        counts = Counter() if counts is None else counts
        for i, tokens in enumerate(token_lists):
            if isinstance(tokens, str):
                raise DataError(
                    f"{cls.__name__}.build expects lists of tokens; item {i} is a str "
                    f"({tokens[:40]!r}); tokenise the texts first"
                )
            counts.update(tokens)
        return counts

    @classmethod
    def from_counts(cls, counts: Counter, min_freq: int = 1, limit: int | None = None) -> IdMap:
        """:meth:`counted` from token counts already made (:meth:`count`)."""
        _check_min_freq(min_freq)
        n_distinct = len(counts) - sum(s in counts for s in cls.SPECIALS)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq and t not in cls.SPECIALS),
            key=lambda t: (-counts[t], t),
        )
        if limit is not None:
            kept = kept[:limit]
        logger.info(
            "%s: %d tokens kept of %d distinct (min_freq=%d, limit=%s)",
            cls.__name__,
            len(kept),
            n_distinct,
            min_freq,
            limit,
        )
        return cls([*cls.SPECIALS, *kept])


def _check_min_freq(min_freq) -> None:
    if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
        raise DataError(f"min_freq must be an integer >= 1, got {min_freq!r}")


# --------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------


class Vocabulary(IdMap):
    """Token <-> id map with ``<pad>`` = 0 and ``<unk>`` = 1 (the text classifier's).

    Build it with :meth:`build`. Ids 2.. follow frequency (descending), ties broken by the
    token's string order, so the same data always gives the same ids.

    Args:
        tokens: the id-ordered token list, starting with ``"<pad>"``, ``"<unk>"``.
    """

    SPECIALS = (PAD, UNK)
    TYPE = "vocabulary"

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Count tokens and keep the frequent ones.

        Args:
            token_lists: tokenised texts (e.g. ``[tokenizer(t) for t in texts]``).
            min_freq: keep tokens seen at least this many times (>= 1).
            max_size: at most this many entries in all, the two specials included (>= 2).
                Default: no limit.

        Returns:
            The vocabulary. Literal ``"<pad>"``/``"<unk>"`` tokens in the data are not
            counted (they are the specials).
        """
        if max_size is not None and (
            isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2
        ):
            raise DataError(
                f"max_size must be an integer >= 2 (it counts {PAD!r} and {UNK!r}), "
                f"got {max_size!r}"
            )
        return cls.counted(token_lists, min_freq, None if max_size is None else max_size - 2)

    @property
    def tokens(self) -> list[str]:
        """The tokens in id order (a copy)."""
        return list(self._itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Map tokens to ids; unknown tokens (and a literal ``"<pad>"``) give ``UNK_ID``."""
        if isinstance(tokens, str):
            raise DataError(
                f"Vocabulary.encode expects a list of tokens, got a str {tokens[:40]!r}"
            )
        get = self.index.get
        return [UNK_ID if t == PAD else get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Map ids back to tokens; an id outside ``0..len-1`` raises DataError."""
        return self.lookup(ids)

    def unknown_fraction(self, tokens: Iterable[str] | Iterable[Sequence[str]]) -> float:
        """The fraction of tokens that :meth:`encode` maps to ``<unk>``.

        Args:
            tokens: a flat list of tokens, or a list of token lists (texts).

        Returns:
            A number in [0, 1]. No tokens at all raises DataError (0/0 is no answer).
        """
        total = unknown = 0
        for item in tokens:
            group = [item] if isinstance(item, str) else item
            for t in group:
                total += 1
                unknown += t == PAD or t not in self.index
        if total == 0:
            raise DataError("unknown_fraction got no tokens; expected at least one")
        return unknown / total


class WordVocab(IdMap):
    """Tokens <-> ids; ids 0..3 are ``<pad> <unk> <s> </s>``, then tokens by frequency
    (the translator's).

    Args:
        tokens: the whole id -> token list, specials first (use :meth:`build`).
    """

    SPECIALS = SPECIALS
    TYPE_KEY = "kind"
    TYPE = "words"
    WHAT = "word vocabulary"

    def __init__(self, tokens: Sequence[str]) -> None:  # the public argument's name
        super().__init__(tokens)

    @classmethod
    def build(
        cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None
    ) -> WordVocab:
        """The tokens of ``sentences`` seen at least ``min_freq`` times, most frequent first
        (ties alphabetically), at most ``max_size`` of them besides the specials."""
        return cls.counted(sentences, min_freq, max_size)

    @property
    def tokens(self) -> list[str]:
        """The tokens in id order."""
        return self._itos

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Tokens -> ids, unknown tokens -> ``<unk>`` (1)."""
        return [self.index.get(t, UNK_ID) for t in tokens]

    def unknown(self, tokens: Sequence[str]) -> list[str]:
        """The tokens of ``tokens`` that are not in the vocabulary."""
        return [t for t in tokens if t not in self.index]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens, stopping at ``</s>`` and leaving out ``<pad>`` and ``<s>``."""
        out = []
        for k in ids:
            k = int(k)
            if k == EOS_ID:
                break
            if k not in (PAD_ID, BOS_ID):
                out.append(k)
        return self.lookup(out)


# --------------------------------------------------------------------------------------
# Characters
# --------------------------------------------------------------------------------------


class CharVocab(IdMap):
    """The characters of a text, in sorted order; id ``k`` is ``chars[k]`` (the char LM's).

    Args:
        chars: the distinct characters (any order; they are sorted).
    """

    TYPE_KEY = "kind"
    TYPE = "chars"
    ITEMS_KEY = "chars"
    WHAT = "character vocabulary"
    ITEM = "character"

    def __init__(self, chars: Sequence[str]) -> None:
        chars = sorted(set(chars))
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise DataError(f"a character vocabulary holds single characters; got {bad[:5]!r}")
        if not chars:
            raise DataError("a character vocabulary needs at least one character, got none")
        super().__init__(chars)

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The vocabulary of every character in ``text``."""
        return cls(list(set(text)))

    @classmethod
    def from_scan(cls, scan: Any) -> CharVocab:
        """The vocabulary of a file scanned by :func:`gatelab.data.corpus.scan_text_corpus`.

        Equal to ``from_text`` of the file's text: both sort by code point. (``scan`` is a
        :class:`gatelab.data.corpus.CorpusScan`; it is not imported here because
        :mod:`gatelab.data.corpus` imports this module.)
        """
        return cls(scan.chars)

    @property
    def chars(self) -> list[str]:
        """The characters in id order."""
        return self._itos

    def encode(self, text: str, *, what: str = "text") -> Tensor:
        """``text`` -> ids ``(len(text),)`` int64; unseen characters raise DataError."""
        try:
            return torch.tensor([self.index[c] for c in text], dtype=torch.long)
        except KeyError:
            unseen: dict[str, int] = {}
            for pos, c in enumerate(text):
                if c not in self.index and c not in unseen:
                    unseen[c] = pos
            listed = ", ".join(f"{c!r} (first at position {p})" for c, p in unseen.items())
            raise DataError(
                f"{what} holds {len(unseen)} character(s) never seen in training: {listed}; "
                f"the model knows {len(self)} characters"
            ) from None

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Ids -> text; an id outside ``0..len-1`` raises DataError."""
        return "".join(self.lookup(ids))


# --------------------------------------------------------------------------------------
# Class names
# --------------------------------------------------------------------------------------


class Labels(IdMap):
    """Class names <-> ids 0..K-1.

    Names are sorted: numerically when every name is an integer (``"2"`` before
    ``"10"``), else as strings.

    Args:
        names: the distinct class names; they are sorted as above.
    """

    TYPE = "labels"
    ITEMS_KEY = "names"
    WHAT = "class map"
    ITEM = "class"

    def __init__(self, names: Iterable[str]) -> None:
        names = [str(n) for n in names]
        if not names:
            raise DataError("Labels needs at least one class name, got none")
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise DataError(f"class names must be distinct; repeated: {dup!r}")
        super().__init__(sorted(names, key=self.sort_key))

    @staticmethod
    def sort_key(name: str) -> tuple[int, int | str]:
        """Sort key: integers numerically, before any other names (which sort as strings)."""
        try:
            return (0, int(name))
        except ValueError:
            return (1, name)

    @classmethod
    def fit(cls, labels: Iterable[str]) -> Labels:
        """The class map of the distinct values in ``labels``."""
        return cls(dict.fromkeys(str(x) for x in labels))

    @property
    def names(self) -> tuple[str, ...]:
        """The class names in id order."""
        return tuple(self._itos)

    def __repr__(self) -> str:
        return f"Labels({self._itos!r})"

    def encode(self, labels: Iterable[str]) -> list[int]:
        """Class names -> ids; an unknown name raises DataError listing the known ones."""
        out = []
        for x in labels:
            try:
                out.append(self.index[str(x)])
            except KeyError:
                raise DataError(
                    f"unknown class {x!r}; the known classes are {self._itos!r}"
                ) from None
        return out

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> class names; an id outside ``0..K-1`` raises DataError."""
        return self.lookup(ids)
