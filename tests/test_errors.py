"""A user's error is one line and exit status 2; a bug keeps its traceback."""

import pytest

from pipeline.errors import UserError, run_stage
from pipeline.params import ParamError


def test_user_error_is_one_line_exit_2(capsys):
    def main():
        raise ParamError("params.yaml: filter.min_similarity = 2 is outside [-1, 1]")

    with pytest.raises(SystemExit) as exit_info:
        run_stage(main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: params.yaml: filter.min_similarity = 2 is outside [-1, 1]\n"


def test_bug_keeps_its_traceback():
    def main():
        raise KeyError("not the user's fault")

    with pytest.raises(KeyError):
        run_stage(main)


def test_arguments_reach_main():
    seen = []
    run_stage(seen.append, "coop")
    assert seen == ["coop"]
    assert issubclass(ParamError, UserError)
