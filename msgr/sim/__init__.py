"""Deterministic simulation of pymsgr: real ProtocolV1 machines over a simulated network and clock.

    net = SimNetwork(seed=42)
    a = net.add_endpoint(EntityName.osd(0), default_policy=Policy.lossless_peer())
    b = net.add_endpoint(EntityName.osd(1), default_policy=Policy.lossless_peer())
    a.connect_to(EntityName.TYPE_OSD, b.get_myaddr()).send_message(msg)
    net.run_for(1_000_000)          # virtual microseconds
    b.records_of("deliver")

One seed drives everything, so a failing run replays exactly from it.
"""
from msgr.sim.chaos import Cluster, OracleError, run_seed
from msgr.sim.endpoint import SimConnection, SimEndpoint, SimRecord
from msgr.sim.network import NetParams, SimNetwork, SimSocket

__all__ = ["Cluster", "NetParams", "OracleError", "SimConnection", "SimEndpoint", "SimNetwork", "SimRecord",
           "SimSocket", "run_seed"]
