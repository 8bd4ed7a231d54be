"""Data loaders: labelled text, numeric series, synthetic tasks, translation corpora.

Every loader reads files exactly as they are (encodings, CRLF, odd characters inside
lines) and raises :class:`gatelab.errors.DataError` on unusable input, naming the file,
the line and the value at fault.
"""

from gatelab.data.corpus import (
    PairsDataset,
    PairSplits,
    read_sentence_pairs,
    read_text_corpus,
    split_pairs,
)
from gatelab.data.series import (
    DATE_COLUMN_NAMES,
    SERIES_FORMATS,
    Scaler,
    SeriesDataset,
    detect_series_format,
    make_windows,
    read_labelled_series,
    read_series_csv,
    read_ts,
    read_ucr_text,
    split_series,
)
from gatelab.data.synthetic import (
    ADDING_TOLERANCE,
    TASKS,
    TEMPORAL_ORDER_SYMBOLS,
    adding_problem,
    copy_task,
    get_task,
    temporal_order,
)
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
    "ADDING_TOLERANCE",
    "DATE_COLUMN_NAMES",
    "LABEL_COLUMN_NAMES",
    "PAD",
    "PAD_ID",
    "SERIES_FORMATS",
    "TASKS",
    "TEMPORAL_ORDER_SYMBOLS",
    "TEXT_COLUMN_NAMES",
    "UNK",
    "UNK_ID",
    "Labels",
    "PairSplits",
    "PairsDataset",
    "Scaler",
    "SeriesDataset",
    "TextDataset",
    "Tokenizer",
    "Vocabulary",
    "adding_problem",
    "copy_task",
    "detect_series_format",
    "get_task",
    "make_windows",
    "pad_sequences",
    "read_labelled_series",
    "read_labelled_text",
    "read_sentence_pairs",
    "read_series_csv",
    "read_text_corpus",
    "read_ts",
    "read_ucr_text",
    "split_pairs",
    "split_series",
    "temporal_order",
]
