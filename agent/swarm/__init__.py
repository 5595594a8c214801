"""The node side of swarm mode: joining a swarm and keeping a session with the leader.

- join.py: the join handshake. The joining node fetches the manager's CA certificate,
  checks it against the digest in the join token before trusting anything, then sends
  its token and a CSR over TLS verified with that CA, and keeps the certificate.
- agent.py: the session with the leader's dispatcher (heartbeats, the node's own
  object, the manager list) and certificate renewal.
Nothing here imports the manager: they meet in api/swarm.proto over mutual TLS.
"""
