"""Layer 6.5: jobs that compose the layer-6 drivers and observers.

``kpsim.workloads``, ``kpsim.attack``, ``kpsim.audit`` and ``kpsim.report`` stay
independent of each other (DESIGN.md); a job that needs several of them lives here,
between them and ``kpsim.cli``. Each job returns a plain, JSON-able result document,
so that a verb only parses its arguments and prints, and the sweep and the HTML report
call the same engine as ``kpsim run``:

- :mod:`kpsim.engine.job`: the main job (``kpsim run``): KUnit, audit, every workload
  with the feature on and off, the overhead, the attack campaign.
"""
