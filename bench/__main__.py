"""Run every benchmark: ``python -m bench``."""

from bench import frontend_cpu

frontend_cpu.main()
