"""SwiftClaw's development tools: the simulated provider (``swiftclaw sim``), the demo
(``swiftclaw demo``) and the helpers that start the project's processes for tests and
benchmarks. Installed from a source checkout (``make install``), not in the runtime image.
"""
