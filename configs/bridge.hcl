# bridge.hcl: n1 → n2 → n3 over two TCP hops.
#
# n3 runs echo and uppercase behind a TCP listener. n2 listens for n1, dials
# n3 and runs a hop that forwards messages onward. n1 only dials n2. A
# message from n1 travels  n1 → (tcp) → n2's hop → (tcp) → n3's uppercase,
# and the reply comes back the same way.
#
#   ferry validate configs/bridge.hcl
#   ferry up configs/bridge.hcl
#   ferry message send hello --from n1 \
#       --to /tcp/127.0.0.1:7002/service/hop/tcp/127.0.0.1:7003/service/uppercase
#   ferry down configs/bridge.hcl
#
# The ports are variables so tests and busy machines can pick others:
# ferry up configs/bridge.hcl --var n2_port=7102 --var n3_port=7103

variable "n2_port" {
  type        = number
  default     = 7002
  description = "TCP port n2 listens on (0 picks a free one)."
}

variable "n3_port" {
  type        = number
  default     = 7003
  description = "TCP port n3 listens on (0 picks a free one)."
}

# The far end: services behind a listener.
node "n3" {
  transport "public" {
    plugin = "tcp"
    listen = "127.0.0.1:${var.n3_port}"
    # Network input through this listener may reach only these services
    # (deny by default).
    allow = ["echo", "uppercase", "hop"]
  }

  service "echo" {}
  service "uppercase" {}
  service "hop" {}
}

# The middle: accepts n1, dials n3, forwards with its hop.
node "n2" {
  transport "public" {
    plugin = "tcp"
    listen = "127.0.0.1:${var.n2_port}"
    allow  = ["hop"]
  }

  # to = a reference to n3's listener: n2 starts after n3 and dials the
  # address n3 actually bound.
  connection "to_n3" {
    plugin = "tcp"
    to     = node.n3.transport.public
  }

  service "hop" {}
}

# The near end: dials n2 and sends from there.
node "n1" {
  connection "to_n2" {
    to = node.n2.transport.public # plugin inherited from the listener: tcp
  }
}
