"""Recipe validation: every error names the file, the line and the key; loading a recipe loads no training code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ballast.errors import InputError
from ballast.recipe import TrainConfig, load_recipe

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harbor-support"


def _recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "recipe.yaml"
    head = f"name: t\nseed: 7\npolicy: {EXAMPLE / 'policy.yaml'}\nseeds: {EXAMPLE / 'seeds.jsonl'}\n"
    path.write_text(head + textwrap.dedent(body), encoding="utf-8")
    return path


def _error(path: Path, overrides: list[str] = ()) -> InputError:
    with pytest.raises(InputError) as info:
        load_recipe(path, list(overrides))
    return info.value


@pytest.mark.parametrize(
    ("body", "field", "line"),
    [
        ("select:\n  budget: 10\n  budgt: 5\n", "select.budgt", 7),  # a misspelt key
        ("train:\n  max_steps: many\n", "train.max_steps", 6),  # a value of the wrong type
        ("select:\n  min_distance: 3\n", "select.min_distance", 6),  # out of range
        ("train:\n  base: gemma3-270m\n", "train.base", 6),  # the strong model has one key: models.strong
        (  # a model-level check points at its section
            "generate:\n  template_slots:\n    enabled: true\n    templates:\n      - {id: a, instruction: 'x {t}'}\n",
            "generate.template_slots",
            6,
        ),
        ("models:\n  weak: [1, 2]\n", "models.weak", 6),
    ],
)
def test_each_error_names_the_key_and_the_line(tmp_path, body, field, line):
    err = _error(_recipe(tmp_path, body))
    assert err.field == field
    assert err.line == line
    assert str(err).startswith(f"{tmp_path / 'recipe.yaml'}:{line}: {field}: ")


def test_a_missing_data_file_names_its_key_and_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: t\npolicy: {EXAMPLE / 'policy.yaml'}\nseeds: nowhere.jsonl\n", encoding="utf-8")
    err = _error(path)
    assert (err.field, err.line) == ("seeds", 3) and "does not exist" in err.message


def test_a_missing_required_key_is_named(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: t\nseeds: {EXAMPLE / 'seeds.jsonl'}\n", encoding="utf-8")
    err = _error(path)
    assert err.field == "policy" and err.line == 1


def test_bad_overrides_point_at_the_command_line(tmp_path):
    path = _recipe(tmp_path, "select:\n  budget: 10\n")
    err = _error(path, ["select.budget=lots"])
    assert err.file == "<command line>" and err.field == "select.budget"
    assert "not KEY=VALUE" in _error(path, ["select.budget"]).message
    assert _error(path, ["name.x=1"]).field == "name.x"


def test_not_a_mapping_and_not_yaml(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    assert _error(path).line == 1
    path.write_text("name: [unclosed\n", encoding="utf-8")
    assert "not valid YAML" in _error(path).message and _error(path).line is not None


def test_stage_seeds_default_to_the_recipe_seed(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, ""))
    assert recipe.train.seed is None and recipe.train.seed_or(recipe.seed) == 7
    assert recipe.generate.seed is None and recipe.select.seed is None
    assert TrainConfig(seed=3).seed_or(7) == 3
    assert load_recipe(_recipe(tmp_path, "train:\n  seed: 3\n")).train.seed_or(7) == 3


def test_loading_a_recipe_imports_no_training_library():
    code = (
        "import sys; from ballast.recipe import load_recipe; "
        f"load_recipe({str(EXAMPLE / 'recipe.yaml')!r}); "
        "print(sorted(m for m in ('torch', 'trl', 'peft', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
