"""Networking for containers and (later) overlay networks: bridges, veths and
network namespaces through pyroute2, IP address management, and nftables rules
for published ports, VIP load balancing and the routing mesh.

Same shape everywhere: a pure planner computes the desired netlink/nftables state,
a thin applier makes the kernel match it, idempotently, and removes what it made.
"""
