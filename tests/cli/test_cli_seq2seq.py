"""Command line end to end on tiny files: train, generate, translate, evaluate, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from gatelab.cli import _register, app

_register()  # every command module, as the gatelab script does

runner = CliRunner()

TEXT = (
    "ROMEO:\nWhat light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n"
) * 12

PAIRS = [
    ("Go.", "Va !"),
    ("Run!", "Cours !"),
    ("I see.", "Je vois."),
    ("I run.", "Je cours."),
    ("We see.", "Nous voyons."),
    ("We run.", "Nous courons."),
    ("You see.", "Tu vois."),
    ("You run.", "Tu cours."),
]

TINY_LM = ["--hidden-size", "24", "--layers", "1", "--embedding-dim", "8", "--batch-size", "4"]
TINY_LM += ["--seq-len", "30", "--quiet"]
TINY_TR = ["--hidden-size", "24", "--embedding-dim", "16", "--valid", "2", "--test", "2"]
TINY_TR += ["--min-freq", "1", "--quiet", "--dropout", "0"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    (d / "text.txt").write_text(TEXT, encoding="utf-8")
    ok(
        invoke(
            "train",
            "char-lm",
            "--data",
            d / "text.txt",
            "--out",
            d / "run",
            "--epochs",
            2,
            *TINY_LM,
        )
    )
    return d


@pytest.fixture(scope="module")
def tr_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("tr")
    lines = [f"{s}\t{t}" for s, t in PAIRS * 3] + ["They did it again.\tIls l'ont "]
    (d / "pairs.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ok(
        invoke(
            "train", "translator", "--data", d / "pairs.txt", "--out", d / "run",
            "--epochs", 2, *TINY_TR,
        )
    )  # fmt: skip
    return d


def test_train_char_lm_writes_a_complete_run_folder(lm_run):
    run = lm_run / "run"
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "metrics.json"} <= names
    assert {"checkpoint.json", "checkpoint-0002.safetensors"} <= names
    assert not any(n.endswith((".pt", ".pth", ".pkl", ".tmp")) for n in names)
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "char-lm" and config["model"]["hidden_size"] == 24
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["valid_bits_per_char"] == pytest.approx(
        metrics["valid_loss"] / 0.6931471805599453
    )


def test_generate_is_reproducible_with_a_seed_and_greedy_at_temperature_zero(lm_run):
    args = ("generate", lm_run / "run", "--prompt", "ROMEO:", "--length", 40)
    a = ok(invoke(*args, "--seed", 3, "--top-k", 5)).output
    b = ok(invoke(*args, "--seed", 3, "--top-k", 5)).output
    assert a == b and a.startswith("ROMEO:") and len(a.rstrip("\n")) == 46
    g1 = ok(invoke(*args, "--temperature", 0)).output
    assert g1 == ok(invoke(*args, "--temperature", 0)).output
    from gatelab.tasks.sequence import load_char_lm

    model = load_char_lm(lm_run / "run")
    assert g1 == "ROMEO:" + model.sample("ROMEO:", 40, temperature=0) + "\n"
    # At temperature 0 nothing is drawn: a seed or top-k used to be accepted and ignored.
    for extra in (["--seed", 9], ["--top-k", 5]):
        result = invoke(*args, "--temperature", 0, *extra)
        assert result.exit_code == 2 and "--temperature 0 draws nothing" in result.output
        assert f"{extra[0]}: only random draws use it" in result.output


def test_generate_refuses_unseen_prompt_characters_by_name(lm_run):
    result = invoke("generate", lm_run / "run", "--prompt", "ROMEO#")
    assert result.exit_code == 2
    assert "error: the prompt holds 1 character(s) never seen in training: '#'" in result.output
    assert "Traceback" not in result.output


def test_resume_continues_to_more_epochs(lm_run, tmp_path):
    run = tmp_path / "run"
    data = lm_run / "text.txt"
    ok(invoke("train", "char-lm", "--data", data, "--out", run, "--epochs", 1, *TINY_LM))
    again = invoke("train", "char-lm", "--data", data, "--out", run, "--epochs", 1, *TINY_LM)
    assert again.exit_code == 2 and "already holds a run; pass --resume" in again.output
    ok(
        invoke(
            "train", "char-lm", "--data", data, "--out", run, "--epochs", 2, "--resume", *TINY_LM
        )
    )
    assert [r["epoch"] for r in json.loads((run / "metrics.json").read_text())["history"]] == [1, 2]


def test_nan_loss_ends_training_with_exit_1_and_keeps_a_resumable_checkpoint(
    lm_run, tmp_path, monkeypatch
):
    import gatelab.tasks.sequence as seqtasks

    real = seqtasks.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 30 else loss

    monkeypatch.setattr(seqtasks.F, "cross_entropy", poisoned)
    run, data = tmp_path / "run", lm_run / "text.txt"
    result = invoke("train", "char-lm", "--data", data, "--out", run, "--epochs", 5, *TINY_LM)
    assert result.exit_code == 1, result.output
    assert "error: training diverged at epoch" in result.output
    assert "loss is nan" in result.output and "is kept in" in result.output
    assert "Traceback" not in result.output
    saved = json.loads((run / "checkpoint.json").read_text())["fit"]["epoch"]
    monkeypatch.setattr(seqtasks.F, "cross_entropy", real)
    ok(
        invoke(
            "train", "char-lm", "--data", data, "--out", run, "--epochs", 5, "--resume", *TINY_LM
        )
    )
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == list(range(1, 6))
    assert saved < 5


def test_train_translator_and_translate(tr_run):
    run = tr_run / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "translator"
    assert config["data"]["skipped_lines"] == [25]  # the cut-off last line
    vocab = json.loads((run / "vocab.json").read_text())
    assert vocab["source"]["tokens"][:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    out = ok(invoke("translate", run, "I run.", "--beam", 3))
    assert len(out.output.strip().split()) >= 1
    unk = ok(invoke("translate", run, "I zebra."))
    assert "unknown words read as <unk>: zebra" in unk.output
    result = invoke("translate", run, "I run.", "--beam", 1, "--alpha", 0.5)
    assert result.exit_code == 2 and "--alpha 0.5 normalises beam-search scores" in result.output


def test_evaluate_char_lm_gives_bits_per_char_of_the_held_out_text(lm_run):
    out = ok(invoke("evaluate", lm_run / "run", "--data", lm_run / "text.txt", "--json"))
    metrics = json.loads(out.output)
    from gatelab.models.charlm import bits_per_char
    from gatelab.tasks.sequence import load_char_lm, split_text

    model = load_char_lm(lm_run / "run")
    valid = split_text(TEXT, 0.1)[1]
    expected = bits_per_char(model, model.vocab.encode(valid), 4, 30)
    assert metrics["bits_per_char"] == pytest.approx(expected, rel=1e-9)
    assert metrics["characters"] == len(valid)
    table = ok(invoke("evaluate", lm_run / "run", "--data", lm_run / "text.txt")).output
    assert "bits_per_char" in table


def test_evaluate_translator_gives_sacrebleu_of_beam_and_greedy(tr_run):
    import sacrebleu

    from gatelab.data.vocab import tokenize
    from gatelab.tasks.sequence import TranslatorTrainConfig, load_translator, translator_splits

    out = ok(invoke("evaluate", tr_run / "run", "--data", tr_run / "pairs.txt", "--json"))
    metrics = json.loads(out.output)
    assert metrics["pairs"] == 2 and metrics["beam"] == 5
    # The same held-out pairs, translated one by one through the model's public API and
    # scored by sacreBLEU itself: the command's numbers are these, not just in range.
    saved = json.loads((tr_run / "run" / "config.json").read_text())["train"]
    test = translator_splits(tr_run / "pairs.txt", TranslatorTrainConfig(**saved))[1].test
    model = load_translator(tr_run / "run")
    refs = [[" ".join(tokenize(t)) for _, t in test]]
    for key, beam in (("bleu_greedy", 1), ("bleu", 5)):
        hyps = [model.translate(s, beam=beam) for s, _ in test]
        expected = sacrebleu.corpus_bleu(hyps, refs, force=True).score
        assert metrics[key] == pytest.approx(expected, abs=1e-9), key


def test_beam_search_on_a_fixed_model_against_greedy(tr_run):
    """Width 1 is greedy exactly; a wider beam never returns a hypothesis that scores
    below greedy's; every hypothesis' log-probability is the teacher-forced one."""
    from gatelab.tasks.sequence import load_translator

    model = load_translator(tr_run / "run")
    for source, _ in PAIRS:
        _, src_ids = model.encode_source(source)
        src = torch.tensor([src_ids])
        greedy = model.greedy(src, torch.tensor([len(src_ids)]))[0]
        assert greedy.logprob == pytest.approx(model.score(src_ids, greedy.ids), abs=1e-6)
        one = model.beam_search(src_ids, beam=1)
        assert one.ids == greedy.ids and one.logprob == pytest.approx(greedy.logprob, abs=1e-9)
        for alpha in (0.0, 1.0):
            best = model.beam_search(src_ids, beam=4, alpha=alpha)
            assert best.logprob == pytest.approx(model.score(src_ids, best.ids), abs=1e-6)
            n, g = len(best.ids), len(greedy.ids)
            assert best.logprob / n**alpha >= greedy.logprob / g**alpha - 1e-9, source
            assert best.score == pytest.approx(best.logprob / n**alpha, abs=1e-12)
        cli = ok(invoke("translate", tr_run / "run", source, "--beam", 1)).output.strip()
        assert cli == " ".join(model.tgt_vocab.decode(greedy.ids))


def test_predict_continues_prompts_and_translates(lm_run, tr_run):
    rows = ok(invoke("predict", lm_run / "run", "ROMEO:", "--json")).output.splitlines()
    row = json.loads(rows[0])
    assert row["prompt"] == "ROMEO:" and len(row["continuation"]) == 200
    rows = ok(invoke("predict", tr_run / "run", "I run.", "We see.", "--json")).output
    assert [json.loads(r)["source"] for r in rows.splitlines()] == ["I run.", "We see."]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty (0 bytes)"),
        (b"abc\x00def\n", "looks binary: NUL byte at offset 3"),
        (b"   \n\n", "holds only whitespace"),
    ],
)
def test_char_lm_bad_files_fail_cleanly(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    result = invoke("train", "char-lm", "--data", f, "--out", tmp_path / "run", *TINY_LM)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"Go.\tVa !\nRun! Cours !\nHi.\tSalut.\n", "bad.txt, line 2: no tab"),
        (b"Go.\tVa !\n\tCours !\nHi.\tSalut.\n", "bad.txt, line 2: empty source"),
        (b"", "is empty (0 bytes)"),
    ],
)
def test_translator_bad_pair_files_name_the_line(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    result = invoke("train", "translator", "--data", f, "--out", tmp_path / "run", *TINY_TR)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bad_options_are_refused_with_the_value(lm_run, tmp_path):
    data = lm_run / "text.txt"
    result = invoke(
        "train", "char-lm", "--data", data, "--out", tmp_path / "r", "--variant", "lstm9"
    )
    assert result.exit_code == 2 and "unknown LSTM variant 'lstm9'" in result.output
    result = invoke("generate", lm_run / "run", "--prompt", "R", "--temperature", -1)
    assert result.exit_code == 2 and "temperature=-1.0" in result.output
    result = invoke("translate", lm_run / "run", "hello")
    assert result.exit_code == 2 and "holds a 'char-lm' run; expected a 'translator' run" in (
        result.output
    )


def test_corrupt_vocabulary_is_named(lm_run, tr_run, tmp_path):
    for run, data in (
        (lm_run / "run", lm_run / "text.txt"),
        (tr_run / "run", tr_run / "pairs.txt"),
    ):
        broken = tmp_path / run.parent.name
        broken.mkdir()
        for f in run.iterdir():
            (broken / f.name).write_bytes(f.read_bytes())
        (broken / "vocab.json").write_text('{"kind": "labels"}')
        result = invoke("evaluate", broken, "--data", data)
        assert result.exit_code == 2, result.output
        assert "vocab.json' of a" in result.output and "is corrupt" in result.output


@pytest.mark.parametrize(
    "path",
    [["train", "char-lm"], ["train", "translator"], ["generate"], ["translate"]],
    ids=" ".join,
)
def test_help_texts_describe_every_option(path):
    import typer

    text = ok(invoke(*path, "--help")).output
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    assert command.help, f"{' '.join(path)} has no description"
    for param in command.params:
        assert getattr(param, "help", None), f"{' '.join(path)}: {param.name} has no help"
        for option in param.opts:  # every option is listed on the help page
            assert option in text, f"{' '.join(path)}: {option} missing from --help"


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("option", [["--column", "text"], ["--fill", "ffill"]], ids=str)
def test_evaluate_and_predict_refuse_options_seq2seq_runs_ignore(lm_run, tr_run, command, option):
    # --column and --fill were accepted for these runs and had no effect.
    for run, kind, data in (
        (lm_run / "run", "char-lm", lm_run / "text.txt"),
        (tr_run / "run", "translator", tr_run / "pairs.txt"),
    ):
        extra = ["--data", data] if command == "evaluate" else ["I run.", "--json"]
        result = invoke(command, run, *extra, *option)
        assert result.exit_code == 2, result.output
        line = result.output.strip()
        assert line.startswith("error: ") and "Traceback" not in line and "\n" not in line
        assert f"{option[0]} does not apply to a {kind} run" in line, line
