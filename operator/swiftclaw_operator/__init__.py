"""SwiftClaw operator: reconciles AgentDeployments into fleets of runtime pods."""

__version__ = "0.1.0"
