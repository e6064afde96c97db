"""The tiny base's store: checksums recorded and verified, shipped bases used or refused, `codecl pretrain`."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import codecl

from codecl.cli import main
from codecl.config import TinyModelConfig, load_config
from codecl.data.tasks import PretrainingCorpus
from codecl.errors import UserError
from codecl.models.store import (
    RECORD, WEIGHTS, checksum_problem, ensure_tiny_model, sha256_of, ship_tiny_model, tiny_model_dir,
    tiny_model_identity, tiny_model_request,
)

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
CONFIG = TinyModelConfig(vocab_size=300, d_model=16, d_ff=32, num_heads=2, num_layers=1, pretrain_steps=2,
                         pretrain_batch_size=4, pretrain_sequence_tokens=16, pretrain_languages=["python"])


@pytest.fixture(autouse=True)
def shipped_dir(tmp_path, monkeypatch) -> Path:
    """Never the repository's shipped folder."""
    folder = tmp_path / "shipped"
    monkeypatch.setenv("CODECL_SHIPPED_MODELS", str(folder))
    return folder


def fake_corpus() -> PretrainingCorpus:
    codes = [f"def add_{i}(x):\n    \"\"\"Add {i} to x.\"\"\"\n    return x + {i}\n" for i in range(40)]
    return PretrainingCorpus(
        codes, codes, ["python"] * len(codes), [(f"Add {i} to x.", code) for i, code in enumerate(codes)],
        {"source": "fake", "splits": ["train"], "pretraining_languages": ["python"], "tokenizer_languages": ["python"]},
    )


def no_corpus() -> PretrainingCorpus:
    raise AssertionError("the base was built although a valid one existed")


def build(fingerprint: str = "corpus-a", config: TinyModelConfig = CONFIG) -> Path:
    return ensure_tiny_model(config, fingerprint, fake_corpus, log=lambda line: None)


def test_a_built_base_records_the_sha256_of_every_file_and_is_reused():
    directory = build()
    record = json.loads((directory / RECORD).read_text())
    assert {WEIGHTS, "config.json", "tokenizer.json"} <= set(record["files"])
    for name, digest in record["files"].items():
        assert sha256_of(directory / name) == digest
    assert record["weights_sha256"] == record["files"][WEIGHTS]
    assert record["corpus_fingerprint"] == "corpus-a"
    assert ensure_tiny_model(CONFIG, "corpus-a", no_corpus, log=lambda line: None) == directory
    assert tiny_model_identity(directory) == {
        "origin": "built here", "weights_sha256": record["weights_sha256"], "corpus_fingerprint": "corpus-a",
    }


@pytest.mark.parametrize("damage", ["flip a byte", "delete"])
def test_a_damaged_cached_base_is_named_in_one_line_and_rebuilt(damage):
    directory = build()
    weights = directory / WEIGHTS
    expected = json.loads((directory / RECORD).read_text())["weights_sha256"]
    if damage == "delete":
        weights.unlink()
    else:
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    lines, built = [], []

    def corpus() -> PretrainingCorpus:
        built.append(True)
        return fake_corpus()

    assert ensure_tiny_model(CONFIG, "corpus-a", corpus, log=lines.append) == directory
    assert built == [True]
    assert str(weights) in lines[0] and expected[:12] in lines[0] and "\n" not in lines[0]
    assert ("missing" if damage == "delete" else "sha256") in lines[0]
    assert json.loads((directory / RECORD).read_text())["weights_sha256"] == sha256_of(weights)


def test_a_file_the_record_does_not_list_makes_a_cached_base_rebuilt():
    directory = build()
    (directory / "added_tokens.json").write_text('{"<evil>": 0}')
    lines = []
    assert ensure_tiny_model(CONFIG, "corpus-a", fake_corpus, log=lines.append) == directory
    assert "added_tokens.json" in lines[0] and "does not list" in lines[0] and "\n" not in lines[0]
    assert not (directory / "added_tokens.json").exists()


def test_a_record_of_another_key_is_a_problem():
    directory = build()
    record = json.loads((directory / RECORD).read_text())
    assert checksum_problem(directory) is None
    (directory / RECORD).write_text(json.dumps({**record, "key": "0123456789ab"}))
    problem = checksum_problem(directory)
    assert "0123456789ab" in problem and directory.name.removeprefix("tiny-") in problem


def test_a_matching_shipped_base_is_used_in_place_without_pretraining(shipped_dir):
    shipped = ship_tiny_model(build(), log=lambda line: None)
    assert shipped.parent == shipped_dir
    assert ensure_tiny_model(CONFIG, "corpus-a", no_corpus, log=lambda line: None) == shipped
    assert tiny_model_identity(shipped)["origin"] == "shipped"


def test_a_damaged_shipped_base_is_refused_never_rebuilt():
    shipped = ship_tiny_model(build(), log=lambda line: None)
    (shipped / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError) as error:
        ensure_tiny_model(CONFIG, "corpus-a", no_corpus, log=lambda line: None)
    message = str(error.value)
    assert "\n" not in message and str(shipped / "tokenizer.json") in message
    assert "git checkout" in message and "codecl pretrain" in message
    assert (shipped / "tokenizer.json").read_text() == "{}"


def test_a_shipped_base_with_a_file_the_record_does_not_list_is_refused():
    shipped = ship_tiny_model(build(), log=lambda line: None)
    (shipped / "added_tokens.json").write_text('{"<evil>": 0}')
    with pytest.raises(UserError) as error:
        ensure_tiny_model(CONFIG, "corpus-a", no_corpus, log=lambda line: None)
    assert "added_tokens.json" in str(error.value) and "git checkout" in str(error.value)
    assert (shipped / "added_tokens.json").exists()


def test_a_leftover_staging_folder_is_never_taken_for_a_base(shipped_dir):
    shipped = ship_tiny_model(build(), log=lambda line: None)
    leftover = shipped.with_name(f"{shipped.name}.partial12345")
    shutil.copytree(shipped, leftover)
    record = json.loads((leftover / RECORD).read_text())
    (leftover / RECORD).write_text(json.dumps({**record, "recipe": "codecl tiny v0"}))
    lines = []
    ship_tiny_model(build("corpus-b"), log=lines.append)  # would remove a base of another recipe
    assert leftover.is_dir() and not any(leftover.name in line for line in lines)


def test_without_a_matching_shipped_base_it_says_why_and_builds_here():
    ship_tiny_model(build("corpus-a"), log=lambda line: None)
    lines = []
    directory = ensure_tiny_model(CONFIG, "corpus-b", fake_corpus, log=lines.append)
    assert directory == tiny_model_dir(CONFIG, "corpus-b")
    assert lines[0].startswith("no shipped tiny base for this config and corpus")
    assert "corpus-b" in lines[0] and "the machine that made the shipped one" in lines[0]


def test_shipping_removes_only_other_recipes_and_keeps_other_corpora_and_configs(shipped_dir):
    other_config = CONFIG.model_copy(update={"d_model": 8, "d_ff": 16})
    other_config_base = ship_tiny_model(build("corpus-a", other_config), log=lambda line: None)
    other_corpus = ship_tiny_model(build("corpus-a"), log=lambda line: None)
    # A base of an earlier recipe version: its key differs, and no codecl of this version asks for it.
    old_recipe = shipped_dir / "tiny-000000000000"
    shutil.copytree(other_corpus, old_recipe)
    record = json.loads((old_recipe / RECORD).read_text())
    (old_recipe / RECORD).write_text(json.dumps({**record, "recipe": "codecl tiny v0", "key": "000000000000"}))
    lines = []
    # The same config over another corpus, e.g. shipped from a machine with another Python patch version.
    new = ship_tiny_model(build("corpus-b"), log=lines.append)
    assert sorted(shipped_dir.iterdir()) == sorted([other_config_base, other_corpus, new])
    assert lines == [
        f"removed {old_recipe}: superseded by {new.name} (codecl tiny v0, corpus corpus-a)",
        f"kept {other_corpus}: the same config over another corpus (corpus-a), which other machines may still "
        f"build; if none does, remove it with `git rm -r {other_corpus}`",
    ]
    assert ensure_tiny_model(CONFIG, "corpus-a", no_corpus, log=lambda line: None) == other_corpus


def test_pretrain_through_the_command_line_ships_what_run_then_loads(fixtures_dir, shipped_dir, tmp_path, capsys):
    overrides = [f"data.path={fixtures_dir}", "model.tiny.pretrain_steps=2", "model.tiny.pretrain_batch_size=4"]
    assert main(["pretrain", str(SMOKE), *overrides, "--ship"]) == 0
    out = capsys.readouterr().out
    request = tiny_model_request(load_config(SMOKE, overrides))
    shipped = shipped_dir / tiny_model_dir(request.config, request.corpus_fingerprint).name
    record = json.loads((shipped / RECORD).read_text())
    assert out.splitlines()[0].startswith(f"wrote {shipped}")
    assert f"sha256 {record['weights_sha256']}  {WEIGHTS}" in out
    assert record["corpus_fingerprint"] == request.corpus_fingerprint
    # Rebuilt without --ship: the same weights, bit for bit, and the shipped base is left alone.
    assert main(["pretrain", str(SMOKE), *overrides]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (f"the shipped base of this key had weights sha256 {record['weights_sha256'][:16]}…: identical; "
                    "`codecl run` keeps using the shipped one (--ship replaces it)")

    # `codecl run` asks for the same base and finds it shipped; a damaged file stops it with one line.
    from codecl.setting import load_base

    base = load_base(load_config(SMOKE, overrides), log=lambda line: None)
    assert base.provenance["origin"] == "shipped" and base.provenance["weights_sha256"] == record["weights_sha256"]
    (shipped / WEIGHTS).write_bytes(b"not weights")
    done = codecl("run", str(SMOKE), *overrides, "--out", str(tmp_path / "run"), cwd=tmp_path,
                  CODECL_SHIPPED_MODELS=str(shipped_dir))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"codecl: error: shipped tiny base {shipped / WEIGHTS}: sha256")
    assert "Traceback" not in done.stderr


def test_pretrain_refuses_a_negative_snapshot_interval_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["pretrain", str(SMOKE), "--snapshot-every", "-1"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "argument --snapshot-every: expected 0 or more, got -1")


def test_pretrain_refuses_a_config_without_the_tiny_preset(capsys):
    assert main(["pretrain", str(SMOKE), "model.name=t5-small"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "model.name is 't5-small'" in error and str(SMOKE) in error


def test_the_report_names_the_base_by_its_checksums():
    from codecl.report import base_identity

    base = {"parameters": 1_400_000, "weights_sha256": "ab" * 32, "corpus_fingerprint": "c0ffee",
            "made_by_codecl": {"total_seconds": 90}}
    assert base_identity({**base, "origin": "built here"}) == (
        "tiny, 1.4M parameters, weights sha256 `abababababababab…`, corpus `c0ffee`, built here in 1.5 min")
    assert base_identity({**base, "origin": "shipped"}).endswith("shipped (pretrained in 1.5 min where it was made)")


def test_snapshots_are_saved_on_schedule_and_leave_the_final_weights_unchanged():
    from codecl.models.store import build_tiny_model

    config = CONFIG.model_copy(update={"pretrain_steps": 5})
    plain = build_tiny_model(config, "c", fake_corpus(), tiny_model_dir(config, "c"), log=lambda line: None)
    plain_weights = json.loads((plain / RECORD).read_text())["weights_sha256"]
    other = plain.with_name("tiny-with-snapshots")
    build_tiny_model(config, "c", fake_corpus(), other, log=lambda line: None, snapshot_every=2)
    assert json.loads((other / RECORD).read_text())["weights_sha256"] == plain_weights
    snapshots = other.with_name(other.name + ".snapshots")
    # Steps 2 and 4 of 5; the last step is the base itself.
    assert sorted(p.name for p in snapshots.iterdir()) == ["step-2", "step-4"]
    assert json.loads((snapshots / "step-4" / "snapshot.json").read_text())["step"] == 4
    assert sha256_of(snapshots / "step-4" / WEIGHTS) != plain_weights
    assert not plain.with_name(plain.name + ".snapshots").exists()
