import argparse
import dataclasses

import pytest

from gasp import cli
from gasp.cli_args import add_dataclass_arguments, apply_overrides


@dataclasses.dataclass
class _Inner:
    rank: int = 8
    targets: tuple[str, ...] = ("q_proj",)


@dataclasses.dataclass
class _Cfg:
    lr: float = 1e-4
    name: str = "debug"
    use_bf16: bool = False
    grid: tuple[int, int] = (16, 16)
    output_dir: str | None = None
    lora: _Inner = dataclasses.field(default_factory=_Inner)

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError("lr must be > 0 (flag --lr)")


def _parse(argv):
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, _Cfg)
    return apply_overrides(_Cfg(), p.parse_args(argv))


def test_only_given_flags_override():
    cfg = _parse(["--lr", "0.5", "--grid", "8", "12", "--use-bf16", "true", "--lora.rank", "4"])
    assert cfg.lr == 0.5 and cfg.grid == (8, 12) and cfg.use_bf16 is True and cfg.lora.rank == 4
    assert cfg.name == "debug" and cfg.lora.targets == ("q_proj",) and cfg.output_dir is None


def test_no_flags_returns_same_object():
    base = _Cfg()
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, _Cfg)
    assert apply_overrides(base, p.parse_args([])) is base


def test_post_init_checks_rerun():
    with pytest.raises(ValueError, match="--lr"):
        _parse(["--lr", "-1"])


def test_bad_bool_is_rejected():
    with pytest.raises(SystemExit):
        _parse(["--use-bf16", "maybe"])


def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_names_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    assert "prepare" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: gasp " + name in capsys.readouterr().out
