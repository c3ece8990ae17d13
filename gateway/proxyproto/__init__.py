"""Sans-I/O PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends
before a relayed connection's own bytes. Standard library only."""
