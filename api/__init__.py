"""pyswarm's shared API layer: protobuf definitions, generated code and the error model.

Every component (`manager`, `agent`, `overlay`, `cli`) imports `api` and nothing
imports upwards from here. The `.proto` files are the contract between processes;
`make proto` regenerates `*_pb2*.py` (committed, never edited by hand).
"""
