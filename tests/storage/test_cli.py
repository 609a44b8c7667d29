"""The exit contract of storage.cli.run, for what subprocess tests cannot cause on demand."""

import threading

import pytest

from storage import cli


@pytest.fixture
def fresh_interrupt_state(monkeypatch):
    monkeypatch.setattr(cli, "INTERRUPTED", threading.Event())
    monkeypatch.setattr(cli, "_reported", threading.Event())
    return cli.INTERRUPTED


@pytest.mark.parametrize("raised", [RuntimeError("cancelled future"), ConnectionError("comm closed")])
def test_an_error_that_follows_ctrl_c_is_reported_as_the_interrupt(raised, fresh_interrupt_state, capsys):
    """A library may turn the KeyboardInterrupt into an error of its own; the user still pressed Ctrl-C."""

    def command():
        fresh_interrupt_state.set()  # what the SIGINT handler does first
        raise raised

    assert cli.run(command, debug=False) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_an_error_without_ctrl_c_is_one_line_naming_it(fresh_interrupt_state, capsys):
    def command():
        raise RuntimeError("the disk went away")

    assert cli.run(command, debug=False) == 1
    assert capsys.readouterr().err == "error: RuntimeError: the disk went away\n"
