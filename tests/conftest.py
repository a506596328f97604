import os

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two test processes on two cores: one thread each. OpenMP threads spin while they
    # wait, so two processes with two threads each run small ops many times slower.
    import torch

    torch.set_num_threads(1)


def pytest_terminal_summary(terminalreporter):
    """The fuzz test's corpus size (tests/test_cli_fuzz.py), summed over its subcommands."""
    cases = refused = commands = 0
    for reports in terminalreporter.stats.values():
        for rep in reports:
            props = dict(getattr(rep, "user_properties", ()) or ())
            if getattr(rep, "when", None) == "call" and "fuzz_cases" in props:
                cases += props["fuzz_cases"]
                refused += props.get("fuzz_refused", 0)
                commands += 1
    if commands:
        terminalreporter.write_line(f"CLI fuzz corpus: {cases:,} cases over {commands} subcommands "
                                    f"({refused:,} refused with a one-line error, {cases - refused:,} valid runs)")
