import pytest

from codecl.config import DataConfig
from codecl.data.records import CodeRecord
from codecl.data.tasks import make_pair, sample_pairs, tokenize_pairs
from codecl.errors import UserError
from codecl.models.load import load_pretrained

CODE = 'def add(a, b):\n    """Add two numbers together.\n\n    More words.\n    """\n    total = a + b\n    return total\n'


def record(code=CODE, docstring="Add two numbers together.\n\nMore words.", name="add") -> CodeRecord:
    return CodeRecord(
        repo="r", path="p.py", func_name=name, original_string=code, language="python", code=code,
        code_tokens=[], docstring=docstring, docstring_tokens=[], sha="", url="", partition="train",
    )


def test_docstring_to_code_uses_the_first_paragraph_and_strips_the_docstring():
    source, target = make_pair(record(), DataConfig())
    assert source == "Add two numbers together."
    assert target == "def add(a, b):\n    total = a + b\n    return total"


def test_completion_splits_the_function_by_lines():
    source, target = make_pair(record(), DataConfig(task_format="completion", completion_prompt_fraction=0.34))
    assert source == "def add(a, b):"
    assert target == "    total = a + b\n    return total"


def test_a_record_without_docstring_gives_no_pair():
    assert make_pair(record(docstring=""), DataConfig()) is None


def test_the_sample_does_not_depend_on_order_of_calls_and_respects_the_limit():
    records = [record(code=CODE.replace("add", f"add{i}"), name=f"add{i}") for i in range(30)]
    first = sample_pairs(records, DataConfig(), "python", "train", 10)
    assert len(first) == 10 and first == sample_pairs(records, DataConfig(), "python", "train", 10)


def test_tokenisation_is_cached_and_truncated(tiny_base):
    _, tokenizer = tiny_base
    pairs = [("add numbers " * 20, "def f():\n    return 1\n" * 20)]
    config = DataConfig(max_source_tokens=8, max_target_tokens=12)
    first = tokenize_pairs(pairs, tokenizer, config)
    assert len(first[0].source_ids) == 8 and len(first[0].target_ids) == 12
    assert first[0].source_ids[-1] == tokenizer.eos_token_id
    assert tokenize_pairs(pairs, tokenizer, config) == first


def test_a_hub_id_offline_is_one_line(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # The hub is unreachable here either way; offline mode makes it fail at once instead of retrying.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError) as caught:
        load_pretrained("Salesforce/codet5-small")
    assert str(caught.value).startswith("model Salesforce/codet5-small: cannot load")
    assert "\n" not in str(caught.value)


def test_a_local_folder_that_is_no_model_is_one_line(tmp_path):
    with pytest.raises(UserError, match="cannot load as a local folder"):
        load_pretrained(tmp_path)


def test_the_base_is_pretrained_on_its_languages_and_the_tokenizer_on_every_stream_language(mined_corpus):
    import gzip
    import json

    from codecl.data.tasks import pretraining_corpus

    def train_codes(language):
        path = mined_corpus / language / "final" / "jsonl" / "train" / f"{language}_train_0.jsonl.gz"
        return [json.loads(line)["code"] for line in gzip.open(path, "rt")]

    python, javascript = train_codes("python"), train_codes("javascript")
    assert python and javascript
    config = DataConfig(source="local", path=mined_corpus, stream=["python", "javascript"])
    corpus = pretraining_corpus(config, ["python"])
    assert corpus.code_texts == python
    assert corpus.tokenizer_texts == python + javascript
    # One (summary, code) pair per Python function (every mined one has a summary), none from JavaScript:
    # the summary comes from the function's docstring, and the code no longer holds it.
    assert len(corpus.pairs) == len(python)
    for (summary, code), original in zip(corpus.pairs, python):
        assert summary in original and summary not in code and code.split("(")[0] in original
    assert corpus.description["pretraining_languages"] == ["python"]
    assert corpus.description["functions"] == {"python": len(python), "javascript": len(javascript)}
    assert pretraining_corpus(config, ["python", "javascript"]).code_texts == python + javascript
