"""The training settings of the sequence tasks (``gatelab.tasks.sequence``): both configs
refuse a bad value of the fields they share, and each of its own, naming it."""

import pytest

from gatelab.tasks.sequence import CharLMTrainConfig, TranslatorTrainConfig

SHARED_BAD = [
    ("epochs", 0),
    ("epochs", 2.0),
    ("epochs", True),
    ("minutes", 0.0),
    ("minutes", float("inf")),
    ("batch_size", -1),
    ("lr", 0.0),
    ("lr", float("nan")),
    ("clip", -5.0),
]


@pytest.mark.parametrize("cls", [CharLMTrainConfig, TranslatorTrainConfig])
@pytest.mark.parametrize(("name", "value"), SHARED_BAD)
def test_shared_fields_refused(cls, name, value):
    with pytest.raises(ValueError, match=rf"^{name}={value!r}; expected an? (int|number) > 0$"):
        cls(**{name: value})


@pytest.mark.parametrize(
    ("cls", "name", "value", "message"),
    [
        (CharLMTrainConfig, "seq_len", 0, "seq_len=0; expected an? int > 0"),
        (CharLMTrainConfig, "valid_fraction", 1.0, "valid_fraction=1.0; expected 0 < f < 1"),
        (TranslatorTrainConfig, "min_freq", 0, "min_freq=0; expected an? int > 0"),
        (TranslatorTrainConfig, "valid", 0, "valid=0; expected an? int > 0"),
        (
            TranslatorTrainConfig,
            "teacher_forcing",
            1.5,
            "teacher_forcing=1.5; expected 0 <= p <= 1",
        ),
    ],
)
def test_own_fields_refused(cls, name, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        cls(**{name: value})


@pytest.mark.parametrize("cls", [CharLMTrainConfig, TranslatorTrainConfig])
def test_valid_settings_kept(cls):
    config = cls(epochs=3, minutes=None, batch_size=2, lr=0.5, clip=1)
    assert (config.epochs, config.minutes, config.batch_size, config.lr, config.clip) == (
        3,
        None,
        2,
        0.5,
        1,
    )
