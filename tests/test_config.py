"""Settings: precedence of the layers, config-file errors, relative paths, the example file, CLI errors."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import Settings, load_config_file, resolve_settings
from pipeline.cost import Price
from pipeline.errors import ConfigError
from pipeline.prompts import PromptBook
from tests.conftest import ARTICLES, ROOT

EXAMPLE = ROOT / "newsdesk.example.toml"

# key -> (environment variable, flag value, file value, environment value, expected from env, default)
LAYERS: dict[str, tuple[str, Any, Any, str, Any, Any]] = {
    "model": ("NEWSDESK_MODEL", "flag-model", "file-model", "env-model", "env-model", "gpt-4.1-mini"),
    "base_url": (
        "OPENAI_BASE_URL",
        "http://flag.test/v1",
        "http://file.test/v1",
        "http://env.test/v1",
        "http://env.test/v1",
        None,
    ),
    "concurrency": ("NEWSDESK_CONCURRENCY", 16, 12, "8", 8, 4),
}


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def toml_value(value: Any) -> str:
    return json.dumps(value)  # a JSON string or integer is valid TOML


# --- precedence ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", LAYERS)
@pytest.mark.parametrize(("flag", "file", "env"), list(itertools.product([True, False], repeat=3)))
def test_flag_beats_file_beats_environment_beats_default(
    tmp_path: Path, key: str, flag: bool, file: bool, env: bool
) -> None:
    var, flag_value, file_value, env_value, env_expected, default = LAYERS[key]
    flags = {key: flag_value if flag else None}  # None means "not given"
    config = write_config(tmp_path / "newsdesk.toml", f"{key} = {toml_value(file_value)}\n") if file else None
    environ = {var: env_value} if env else {}
    expected = flag_value if flag else file_value if file else env_expected if env else default
    assert getattr(resolve_settings(flags, config, environ), key) == expected


def test_output_mode_comes_from_the_environment(tmp_path: Path) -> None:
    assert resolve_settings({}, None, {"NEWSDESK_OUTPUT_MODE": "text"}).output_mode == "text"
    config = write_config(tmp_path / "c.toml", 'output_mode = "json_object"\n')
    assert resolve_settings({}, config, {"NEWSDESK_OUTPUT_MODE": "text"}).output_mode == "json_object"


def test_an_empty_environment_variable_counts_as_unset() -> None:
    settings = resolve_settings(
        {}, None, {"NEWSDESK_MODEL": "", "OPENAI_BASE_URL": "", "NEWSDESK_CONCURRENCY": ""}
    )
    assert settings == Settings()


def test_explicit_environ_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSDESK_MODEL", "from-os-environ")
    assert resolve_settings({}, None, {}).model == "gpt-4.1-mini"
    assert resolve_settings({}, None, None).model == "from-os-environ"
    assert resolve_settings().model == "from-os-environ"


def test_no_layers_give_the_defaults() -> None:
    assert resolve_settings(None, None, {}) == Settings()


# --- config-file errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ('modle = "gpt-4.1"\n', "modle"),
        ("concurency = 8\n", "concurency"),
        ('[endpoint]\nmodel = "gpt-4.1"\n', "endpoint"),
        ('model = "x"\napi_key = "sk-secret"\n', "api_key"),
    ],
)
def test_unknown_config_keys_are_named(tmp_path: Path, text: str, unknown: str) -> None:
    config = write_config(tmp_path / "newsdesk.toml", text)
    with pytest.raises(ConfigError, match=rf"unknown key\(s\) {unknown}\b") as caught:
        resolve_settings({}, config, {})
    assert str(config) in str(caught.value)
    assert "sk-secret" not in str(caught.value)


@pytest.mark.parametrize(
    "text", ["model = \n", 'model = "unterminated\n', "[[[\n", "concurrency = 4\nconcurrency = 5\n"]
)
def test_invalid_toml_names_the_file(tmp_path: Path, text: str) -> None:
    config = write_config(tmp_path / "broken.toml", text)
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        resolve_settings({}, config, {})
    assert str(config) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("concurrency = 0\n", "concurrency"),
        ("concurrency = 257\n", "concurrency"),
        ('concurrency = "many"\n', "concurrency"),
        ('output_mode = "xml"\n', "output_mode"),
        ('token_limit_param = "max_output"\n', "token_limit_param"),
        ("temperature = 2.5\n", "temperature"),
        ("max_output_tokens = 10\n", "max_output_tokens"),
        ("max_reasks = 9\n", "max_reasks"),
        ("timeout_s = 0\n", "timeout_s"),
        ('glossary_files = "terms.toml"\n', "glossary_files"),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    config = write_config(tmp_path / "newsdesk.toml", text)
    with pytest.raises(ConfigError, match=rf"\b{field}\b"):
        resolve_settings({}, config, {})


@pytest.mark.parametrize(
    ("flags", "environ", "field"),
    [
        ({"concurrency": 0}, {}, "concurrency"),
        ({}, {"NEWSDESK_CONCURRENCY": "lots"}, "concurrency"),
        ({}, {"NEWSDESK_OUTPUT_MODE": "xml"}, "output_mode"),
        ({"no_such_setting": 1}, {}, "no_such_setting"),
    ],
)
def test_invalid_flags_and_environment_name_the_field(
    flags: dict[str, Any], environ: dict[str, str], field: str
) -> None:
    with pytest.raises(ConfigError, match=rf"\b{field}\b"):
        resolve_settings(flags, None, environ)


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "newsdesk.toml"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        resolve_settings({}, missing, {})
    assert str(missing) in str(caught.value)


# --- relative paths --------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    config = write_config(
        conf / "newsdesk.toml",
        'prompts_dir = "my-prompts"\nglossary_files = ["terms.toml", "sub/more.toml"]\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = resolve_settings({}, config, {})
    assert settings.prompts_dir == conf / "my-prompts"
    assert settings.glossary_files == [conf / "terms.toml", conf / "sub" / "more.toml"]


def test_relative_paths_resolve_against_a_relative_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(
        tmp_path / "conf" / "newsdesk.toml", 'prompts_dir = "my-prompts"\nglossary_files = ["t.toml"]\n'
    )
    monkeypatch.chdir(tmp_path)
    settings = resolve_settings({}, Path("conf/newsdesk.toml"), {})
    assert settings.prompts_dir is not None
    assert settings.prompts_dir.resolve() == (tmp_path / "conf" / "my-prompts").resolve()
    assert [p.resolve() for p in settings.glossary_files] == [(tmp_path / "conf" / "t.toml").resolve()]


def test_absolute_paths_in_a_config_file_are_kept(tmp_path: Path) -> None:
    prompts, terms = tmp_path / "abs-prompts", tmp_path / "abs-terms.toml"
    config = write_config(
        tmp_path / "conf" / "newsdesk.toml",
        f"prompts_dir = {toml_value(str(prompts))}\nglossary_files = [{toml_value(str(terms))}]\n",
    )
    settings = resolve_settings({}, config, {})
    assert settings.prompts_dir == prompts
    assert settings.glossary_files == [terms]


def test_a_config_file_prompts_dir_and_glossary_reach_the_prompt_book(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "my-prompts").mkdir(parents=True)
    (conf / "my-prompts" / "task_zh.j2").write_text("自定义任务。", encoding="utf-8")
    (conf / "terms.toml").write_text('[[term]]\nen = "Zyxcorp"\nzh = "泽科"\n', encoding="utf-8")
    config = write_config(
        conf / "newsdesk.toml", 'prompts_dir = "my-prompts"\nglossary_files = ["terms.toml"]\n'
    )
    monkeypatch.chdir(tmp_path)
    book = PromptBook(resolve_settings({}, config, {}))
    assert [t.en for t in book.glossary.terms if t.en == "Zyxcorp"] == ["Zyxcorp"]
    assert book.env.get_template("task_zh.j2").render().strip() == "自定义任务。"


# --- the example config ----------------------------------------------------------------------------------


def documented_keys(text: str) -> set[str]:
    """Keys set in the file or shown commented out as '# key = value'."""
    first_table = re.search(r"^#?[ \t]*\[", text, re.M)
    plain = text[: first_table.start()] if first_table else text  # keys inside a table belong to it
    keys = {m.group(1) for m in re.finditer(r"^#?[ \t]*([a-z_][a-z0-9_]*)[ \t]*=", plain, re.M)}
    tables = {m.group(1) for m in re.finditer(r"^#?[ \t]*\[([a-z_][a-z0-9_]*)[.\]]", text, re.M)}
    return keys | tables


def test_the_example_config_loads() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert data, "the example sets some keys"
    assert set(data) <= set(Settings.model_fields)
    settings = resolve_settings({}, EXAMPLE, {})
    for key, value in data.items():
        expected = {m: Price(**p) for m, p in value.items()} if key == "prices" else value
        assert getattr(settings, key) == expected, key


def test_the_example_config_shows_the_defaults_and_prices_the_default_model() -> None:
    """Copied as newsdesk.toml, it runs the deploy/ jobs, whose --budget-usd needs a price."""
    example = resolve_settings({}, EXAMPLE, {})
    assert example.model_copy(update={"prices": {}}) == Settings()
    assert example.price() == Price(input=0.40, cached_input=0.10, output=1.60)


def test_every_setting_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = documented_keys(text)
    assert not set(Settings.model_fields) - keys, "undocumented settings"
    assert not keys - set(Settings.model_fields), "the example documents keys that do not exist"


def test_the_commented_out_examples_are_valid_when_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"^#\s*(?=[a-z_][a-z0-9_]*\s*=|\[)", "", text, flags=re.M)
    assert uncommented != text
    config = write_config(tmp_path / "newsdesk.toml", uncommented)
    loaded = load_config_file(config)
    commented = set(tomllib.loads(uncommented)) - set(tomllib.loads(text))
    assert commented, "some keys are shown commented out"
    assert commented <= set(loaded)
    resolved = resolve_settings({}, config, {})
    assert resolved.prompts_dir is not None
    assert resolved.prompts_dir.parent == tmp_path
    assert resolved.price() is not None, "the example price table loads for the default model"


# --- the CLI ---------------------------------------------------------------------------------------------


def run_cli(tmp_path: Path, config: Path, debug: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "NEWSDESK_DEBUG")}
    env["NEWSDESK_OFFLINE"] = "1"
    if debug is not None:
        env["NEWSDESK_DEBUG"] = debug
    command = [sys.executable, "-m", "pipeline", "run", str(ARTICLES), "--out", str(tmp_path / "out")]
    return subprocess.run(
        [*command, "--config", str(config)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('modle = "gpt-4.1"\n', "modle"),
        ("model = \n", "not valid TOML"),
        ("concurrency = 0\n", "concurrency"),
        ('prompts_dir = "no-such-prompts"\n', "no-such-prompts"),
        (None, "does not exist"),
    ],
)
def test_cli_reports_a_bad_config_in_one_line_and_exits_2(
    tmp_path: Path, text: str | None, needle: str
) -> None:
    config = tmp_path / "bad.toml"
    if text is not None:
        config.write_text(text, encoding="utf-8")
    result = run_cli(tmp_path, config)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists(), "nothing is written on a configuration error"


@pytest.mark.parametrize("kind", ["not-utf-8", "a-folder"])
def test_cli_reports_an_unreadable_config_file_in_one_line_and_exits_2(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "bad.toml"
    if kind == "a-folder":
        config.mkdir()
    else:
        config.write_bytes('model = "gpt-4.1"  # café\n'.encode("latin-1"))
    result = run_cli(tmp_path, config)
    assert result.returncode == 2, result.stderr
    reason = "cannot be read: Is a directory" if kind == "a-folder" else "is not UTF-8 text; save it as UTF-8"
    assert result.stderr.splitlines() == [f"Error: config file {config} {reason}"]


@pytest.mark.parametrize(("debug", "traceback"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_cli_shows_the_traceback_with_newsdesk_debug_and_keeps_the_exit_code(
    tmp_path: Path, debug: str, traceback: bool
) -> None:
    config = write_config(tmp_path / "bad.toml", 'modle = "gpt-4.1"\n')
    result = run_cli(tmp_path, config, debug=debug)
    assert result.returncode == 2, "a configuration error, with a traceback or without"
    assert ("Traceback (most recent call last)" in result.stderr) is traceback, result.stderr
    assert ("ConfigError" in result.stderr) is traceback
    assert result.stderr.splitlines()[-1].startswith("Error: ") and "modle" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("layer", ["flag", "file", "environment"])
def test_a_bad_value_names_the_layer_it_came_from(tmp_path: Path, layer: str) -> None:
    config = tmp_path / "newsdesk.toml"
    config.write_text("concurrency = 0\n" if layer == "file" else "", encoding="utf-8")
    flags = {"concurrency": 0} if layer == "flag" else {}
    environ = {"NEWSDESK_CONCURRENCY": "0", "NEWSDESK_BUDGET_USD": "lots"} if layer == "environment" else {}
    with pytest.raises(ConfigError) as caught:
        resolve_settings(flags, config, environ)
    source = {
        "flag": "--concurrency",
        "file": f"config file {config}",
        "environment": "$NEWSDESK_CONCURRENCY",
    }
    assert f"concurrency: Input should be greater than or equal to 1 (from {source[layer]})" in str(
        caught.value
    )
    if layer == "environment":
        assert "budget_usd: " in str(caught.value) and "(from $NEWSDESK_BUDGET_USD)" in str(caught.value)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:186210/v1", "has no valid port (1-65535)"),
    ("http://localhost:port/v1", "has no valid port (1-65535)"),
    ("localhost:8000/v1", "is not an http(s) URL"),
    ("ftp://example.com/v1", "is not an http(s) URL"),
])  # fmt: skip
def test_a_base_url_that_cannot_be_reached_is_a_configuration_error(url: str, reason: str) -> None:
    """Not an internal error on every article: one line naming the setting, before anything runs."""
    with pytest.raises(ConfigError) as caught:
        resolve_settings({"base_url": url}, None, {})
    assert reason in str(caught.value) and "(from --base-url)" in str(caught.value)
    assert resolve_settings({"base_url": "http://localhost:8000/v1"}, None, {}).base_url is not None
