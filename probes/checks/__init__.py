"""One module per check, each exporting ``SPEC`` (a ``probes.base.CheckSpec``) and
``run(context) -> CheckResult``; ``probes.registry`` finds every module here (names starting
with ``_`` are skipped, for helpers). A module imports TensorFlow (through Grad-CAM) only
inside ``run``, so listing the checks stays light."""
