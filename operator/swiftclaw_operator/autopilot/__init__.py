"""The autopilot: the operator reads its runtime pods' metrics and decides for the fleet.

Pure modules (no I/O, the clock passed in), each one decision or one figure:
:mod:`.exposition` (the pods' Prometheus text into samples), :mod:`.aggregate` (samples of
two reads into one interval's figures, counter resets handled), :mod:`.staleness` (missing
reads: last values held a bounded time, never read as zero), :mod:`.scale` (replicas),
:mod:`.failover` (models out of a tier's chain fleet-wide), :mod:`.budget` (projection and
downgrade), :mod:`.spikes` (cost spikes), :mod:`.episodes` (start/end once per episode) and
:mod:`.recent` (the bounded decision list in the status).
"""
