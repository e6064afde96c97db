from pathlib import Path

import pytest

from codecl.cli import main
from codecl.config import load_config
from codecl.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["default", "smoke", "codet5-small-csn", "three-tasks"])
def test_shipped_configs_validate(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert {"frozen", "full-ft", "lora"} <= set(config.methods)


def test_original_protocol_config():
    config = load_config(CONFIGS / "codet5-small-csn.yaml")
    assert config.model.name == "Salesforce/codet5-small"
    assert config.model.precision == "bf16"
    assert config.data.source == "hub"
    assert (config.data.train_examples, config.data.valid_examples) == (15000, 5000)
    assert config.data.stream == ["python", "javascript"]


def test_overrides_reach_nested_fields_and_method_options():
    config = load_config(CONFIGS / "smoke.yaml", ["train.epochs=3", "methods.lora.r=16", "seeds=[1,2]"])
    assert config.train.epochs == 3
    assert config.methods["lora"].r == 16
    assert config.seeds == [1, 2]


def test_method_defaults_to_its_key_and_an_alias_names_another():
    config = load_config(CONFIGS / "smoke.yaml")
    assert config.methods["lora"].method == "lora"
    assert config.methods["lora-shared"].method == "lora"
    assert config.methods["lora-shared"].per_task is False


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("name: x\nmethods: {frozen: {}}\nbogus: 1\n", [], "bogus: unknown key"),
        ("name: x\nmethods: {frozen: {}}\ntrain: {epoch: 1}\n", [], "train.epoch: unknown key"),
        ("name: x\nmethods: {frozen: {}}\n", ["train.epochs=many"], "train.epochs: Input should be a valid number"),
        ("name: x\nmethods: {magic: {}}\n", [], "methods.magic: unknown method 'magic'"),
        ("name: x\nmethods: {lora: {rank: 3}}\n", [], "methods.lora.rank: unknown key"),
        ("name: x\nmethods: {lora: {r: 0}}\n", [], "methods.lora.r: Input should be greater than or equal to 1"),
        ("name: x\nmethods: {frozen: {}}\ndata: {source: local}\n", [], "data.path is required"),
        ("name: x\nmethods: {frozen: {}}\n", ["model.tiny.pretrain_steps=0"],
         "model.tiny.pretrain_steps: Input should be greater than or equal to 1"),
        ("name: [x\n", [], "invalid YAML"),
        ("- a list\n", [], "expected a mapping"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, overrides, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_config(path, overrides)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"codecl: error: config {tmp_path / 'absent.yaml'}: no such file"
    assert not any("Traceback" in line for line in err)


def test_unknown_method_on_the_command_line_exits_2(capsys):
    assert main(["run", str(CONFIGS / "smoke.yaml"), "methods.extra.method=nope"]) == 2
    assert "methods.extra: unknown method 'nope'" in capsys.readouterr().err


def test_a_dumped_config_keeps_every_method_option_and_validates_again():
    config = load_config(CONFIGS / "default.yaml")
    dumped = config.model_dump(mode="json")
    assert dumped["methods"]["lora"]["r"] == config.methods["lora"].r
    assert type(config).model_validate(dumped) == config


def test_the_base_is_pretrained_on_the_first_stream_language_unless_told():
    assert load_config(CONFIGS / "default.yaml").pretraining_languages() == ["python"]
    assert load_config(CONFIGS / "default.yaml", ["data.stream=[javascript, python]"]).pretraining_languages() == ["javascript"]
    both = load_config(CONFIGS / "default.yaml", ["model.tiny.pretrain_languages=[python, javascript]"])
    assert both.pretraining_languages() == ["python", "javascript"]
    with pytest.raises(UserError, match=r"model.tiny.pretrain_languages: javascript is not in data.stream \['python'\]"):
        load_config(CONFIGS / "default.yaml", ["data.stream=[python]", "model.tiny.pretrain_languages=[javascript]"])


def test_a_pretraining_language_named_twice_is_refused():
    with pytest.raises(UserError, match=r"names a language twice"):
        load_config(CONFIGS / "default.yaml", ["model.tiny.pretrain_languages=[python, python]"])
