"""Data loaders: labelled text, numeric series, synthetic tasks, translation corpora.

Every loader reads files exactly as they are (encodings, CRLF, odd characters inside
lines) and raises :class:`gatelab.errors.DataError` on unusable input, naming the file,
the line and the value at fault.
"""

from gatelab.data.text import (
    LABEL_COLUMN_NAMES,
    PAD,
    PAD_ID,
    TEXT_COLUMN_NAMES,
    UNK,
    UNK_ID,
    Labels,
    TextDataset,
    Tokenizer,
    Vocabulary,
    pad_sequences,
    read_labelled_text,
)

__all__ = [
    "LABEL_COLUMN_NAMES",
    "PAD",
    "PAD_ID",
    "TEXT_COLUMN_NAMES",
    "UNK",
    "UNK_ID",
    "Labels",
    "TextDataset",
    "Tokenizer",
    "Vocabulary",
    "pad_sequences",
    "read_labelled_text",
]
