# relay-portal.hcl: reach a web server next to n3, a node that opens no
# listening port, through the relay on n2 (issue 5's transcript as a file).
#
#   n1: inlet 127.0.0.1:6000 ──tcp──► n2: forward_to_n3 ──(n3's own
#   connection)──► n3: hop → outlet ──► 127.0.0.1:9000
#
#   python3 -m http.server --bind 127.0.0.1 9000 &
#   ferry validate configs/relay-portal.hcl
#   ferry up configs/relay-portal.hcl
#   curl --head 127.0.0.1:6000
#   ferry down configs/relay-portal.hcl

variable "n2_port" {
  type    = number
  default = 7000
}

variable "inlet_address" {
  default     = "127.0.0.1:6000"
  description = "Where n1 accepts TCP clients."
}

variable "target" {
  default     = "127.0.0.1:9000"
  description = "The TCP server behind n3."
}

# The only node that listens. Its relay service accepts registrations.
node "n2" {
  transport "public" {
    listen = "127.0.0.1:${var.n2_port}"
    allow  = ["echo", "uppercase", "hop", "relay"]
  }

  service "echo" {}
  service "uppercase" {}
  service "hop" {}
  service "relay" {}
}

# Only dials out: registers forward_to_n3 at n2's relay service and keeps the
# registration alive.
node "n3" {
  connection "to_n2" {
    to = node.n2.transport.public
    # No allow list: network input over this connection reaches nothing on
    # n3 directly. Messages through the relay reach n3's relay registrant
    # (it sent the registration, so its replies are admitted), which passes
    # them on to local workers as local traffic: hop, then the outlet.
  }

  service "hop" {}

  # at = the route to the relay node: here n3's own connection to n2.
  relay "n3" {
    at = node.n3.connection.to_n2
  }

  outlet "web" {
    from = "/service/outlet"
    to   = var.target
  }
}

# The client side: an inlet whose sessions travel to n3's outlet.
node "n1" {
  connection "to_n2" {
    to = node.n2.transport.public
  }

  # A route is a list of route text and references:
  # n1's connection to n2, the forwarder on n2, then n3's hop and outlet.
  inlet "web" {
    listen = var.inlet_address
    to     = [node.n1.connection.to_n2, node.n2.relay.n3, "/service/hop/service/outlet"]
  }
}
