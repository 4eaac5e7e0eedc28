"""SwiftClaw agent runtime: the data plane that serves one AgentDeployment."""

__version__ = "0.1.0"
