"""``kpsim kunit`` and ``kpsim audit`` verbs: bad input.

The full kunit matrix is in test_kunit_matrix.py, the audit verb in test_audit_verb.py.
"""

from kpsim.cli.main import main


def test_bad_memory_is_exit_2(capsys):
    """An impossible size is one line on stderr and exit status 2."""
    assert main(["kunit", "--memory", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory" in err
