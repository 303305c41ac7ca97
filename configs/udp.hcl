# udp.hcl: n1 → n2 over UDP.
#
# n2 runs echo and uppercase behind a UDP listener; n1 dials it. UDP is an
# unreliable transport: a message may be lost (never delivered partly,
# corrupted or twice), so a request/reply over it may need a retry.
#
#   ferry validate configs/udp.hcl
#   ferry up configs/udp.hcl
#   ferry message send hello --from n1 --to /udp/127.0.0.1:7012/service/uppercase
#   ferry down configs/udp.hcl
#
# The port is a variable: ferry up configs/udp.hcl --var n2_port=7112

variable "n2_port" {
  type        = number
  default     = 7012
  description = "UDP port n2 listens on (0 picks a free one)."
}

node "n2" {
  transport "public" {
    plugin = "udp"
    listen = "127.0.0.1:${var.n2_port}"
    allow  = ["echo", "uppercase"]
    # Every setting is optional; these are the defaults spelled out.
    settings = {
      datagram_size      = 1472 # bytes per datagram, Ferry's header included
      keepalive_interval = "5s"
      idle_timeout       = "30s" # a peer silent this long expires
      max_peers          = 1024
    }
  }

  service "echo" {}
  service "uppercase" {}
}

node "n1" {
  connection "to_n2" {
    to = node.n2.transport.public # plugin inherited from the listener: udp
  }
}
