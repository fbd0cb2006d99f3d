"""The fleetpatch wire contract and the few rules both ends must share.

``fleetpatch.v1`` holds the generated protobuf and gRPC code. The modules
beside it are the parts of the contract that are code rather than messages:
how envelopes are signed, how identities are named in certificates, how
durations are spelled. The agent and the controller import these and never
each other.
"""

__version__ = "0.1.0"
