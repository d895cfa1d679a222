"""Run every benchmark: ``python -m bench``."""

from bench import aec, audio, frontend_cpu, session, transport

frontend_cpu.main()
audio.main([])
session.main()
transport.main()
aec.main()
