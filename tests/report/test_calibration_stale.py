"""The shipped calibration is not stale: it was made from the model as it is now.

Re-running the calibration command takes minutes, so the test compares a digest of
its inputs instead (``kpsim.report.calibration.inputs_digest``): the priors, the
published table, the fit's settings and every row's counts at a small probe scale
(about a second). Any change to the model's counts, a prior, the table or the
calibration's parameters changes the digest; then regenerate the calibration with the
command in its header.
"""

from __future__ import annotations

import pytest

from kpsim.cli.reproduce import calibration_digest, probe_counts
from kpsim.report.calibration import calibration, inputs_digest
from kpsim.report.cost import default_costs
from kpsim.report.published import load_table


@pytest.fixture(scope="module")
def probe():
    table = load_table(calibration().table)
    return table, probe_counts(table)


def test_shipped_calibration_matches_the_model_as_it_is(probe):
    table, counts = probe
    cal = calibration()
    assert cal.inputs.startswith("sha256:"), "calibration.toml records no inputs digest"
    now = inputs_digest(table, counts, cal.params, cal.prior_decades)
    assert now == cal.inputs, (
        "src/kpsim/report/data/calibration.toml is stale (the model's counts, a prior, "
        "the table or the parameters changed since it was written): regenerate it with "
        f"`{cal.command}`"
    )
    # the same digest the CLI records when it writes a calibration
    assert calibration_digest(table, cal.params, cal.prior_decades, None) == now


def test_the_digest_sees_a_count_a_prior_and_a_parameter_change(probe):
    """Negative controls: one count one higher, one prior changed, the parameters or
    the prior's width changed each give another digest; the same inputs the same one."""
    table, counts = probe
    cal = calibration()
    ref = inputs_digest(table, counts, cal.params, cal.prior_decades)
    assert inputs_digest(table, counts, cal.params, cal.prior_decades) == ref
    bumped = {k: {c: dict(v) for c, v in rc.items()} for k, rc in counts.items()}
    on = bumped["fork/h:0"]["on_no_batching"]
    on["isb"] = on["isb"] + 1
    assert inputs_digest(table, bumped, cal.params, cal.prior_decades) != ref
    other = default_costs().replace({"isb": default_costs()["isb"] + 1}, "unknown")
    assert inputs_digest(table, counts, cal.params, cal.prior_decades, other) != ref
    assert inputs_digest(table, counts, "por_write+isb", cal.prior_decades) != ref
    assert inputs_digest(table, counts, cal.params, 0.5) != ref
