"""Data: readers (labelled text, numeric series, text corpora, sentence pairs), synthetic
tasks, tokenisers and vocabularies (:mod:`~gatelab.data.vocab`) and batching
(:mod:`~gatelab.data.batching`).

Every loader reads files exactly as they are (encodings, CRLF, odd characters inside
lines) and raises :class:`gatelab.errors.DataError` on unusable input, naming the file,
the line and the value at fault.
"""

from gatelab.data.batching import (
    PairBatches,
    collate_pairs,
    corpus_shard,
    pad_sequences,
    pair_batches,
    shard_range,
    stream_batches,
    stream_shard,
)
from gatelab.data.corpus import (
    CharCorpus,
    CorpusScan,
    TokenIds,
    encode_corpus,
    read_text_corpus,
    scan_text_corpus,
    split_point,
)
from gatelab.data.pair_corpus import PairCorpus, PairIds
from gatelab.data.pairs import PairsDataset, PairSplits, read_sentence_pairs, split_pairs
from gatelab.data.series import (
    SERIES_FORMATS,
    SeriesDataset,
    detect_series_format,
    read_labelled_series,
    read_ts,
    read_ucr_text,
)
from gatelab.data.series_csv import DATE_COLUMN_NAMES, read_series_csv
from gatelab.data.synthetic import (
    ADDING_TOLERANCE,
    TASKS,
    TEMPORAL_ORDER_SYMBOLS,
    adding_problem,
    copy_task,
    get_task,
    temporal_order,
)
from gatelab.data.text import LABEL_COLUMN_NAMES, TEXT_COLUMN_NAMES, TextDataset, read_labelled_text
from gatelab.data.vocab import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    SPECIALS,
    UNK,
    UNK_ID,
    CharVocab,
    IdMap,
    Labels,
    PlainTokenizer,
    Tokenizer,
    Vocabulary,
    WordVocab,
    tokenize,
)
from gatelab.data.windows import Scaler, make_windows, split_series

__all__ = [
    "ADDING_TOLERANCE",
    "BOS",
    "BOS_ID",
    "DATE_COLUMN_NAMES",
    "EOS",
    "EOS_ID",
    "LABEL_COLUMN_NAMES",
    "PAD",
    "PAD_ID",
    "SERIES_FORMATS",
    "SPECIALS",
    "TASKS",
    "TEMPORAL_ORDER_SYMBOLS",
    "TEXT_COLUMN_NAMES",
    "UNK",
    "UNK_ID",
    "CharCorpus",
    "CharVocab",
    "CorpusScan",
    "IdMap",
    "Labels",
    "PairBatches",
    "PairCorpus",
    "PairIds",
    "PairSplits",
    "PairsDataset",
    "PlainTokenizer",
    "Scaler",
    "SeriesDataset",
    "TextDataset",
    "TokenIds",
    "Tokenizer",
    "Vocabulary",
    "WordVocab",
    "adding_problem",
    "collate_pairs",
    "copy_task",
    "corpus_shard",
    "detect_series_format",
    "encode_corpus",
    "get_task",
    "make_windows",
    "pad_sequences",
    "pair_batches",
    "read_labelled_series",
    "read_labelled_text",
    "read_sentence_pairs",
    "read_series_csv",
    "read_text_corpus",
    "read_ts",
    "read_ucr_text",
    "scan_text_corpus",
    "shard_range",
    "split_pairs",
    "split_point",
    "split_series",
    "stream_batches",
    "stream_shard",
    "temporal_order",
    "tokenize",
]
