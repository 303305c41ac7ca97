# udp-tcp-kafka.hcl: an unchanged TCP client on a device reaches an HTTP
# server at a remote site over a path that changes protocol at every hop:
#
#   curl ──► device: inlet ──udp──► gateway: hop ──tcp──► bridge: hop
#        ──kafka──► site: outlet ──► HTTP server (var.target)
#
# Only the device runs the inlet; its route names every hop (see the inlet
# block below). The walk-through with a diagram is in configs/README.md.
#
#   ferry kafka dev &                     # a local broker on 127.0.0.1:9092
#   python3 -m http.server --bind 127.0.0.1 9000 &
#   ferry validate configs/udp-tcp-kafka.hcl
#   ferry up configs/udp-tcp-kafka.hcl
#   curl 127.0.0.1:6100
#   ferry down configs/udp-tcp-kafka.hcl
#
# Ports, brokers, the inlet address and the target are variables, e.g.
#   ferry up configs/udp-tcp-kafka.hcl --var gateway_port=0 --var bridge_port=0
# (0 picks a free port; the connections find the bound ports themselves).

variable "brokers" {
  type        = string
  default     = "127.0.0.1:9092"
  description = "Kafka seed brokers, host:port separated by commas (ferry kafka dev prints one)."
}

variable "prefix" {
  type        = string
  default     = "ferry-mixed-"
  description = "Prefix of the bridge's and the site's inbound topics."
}

variable "gateway_port" {
  type        = number
  default     = 7021
  description = "UDP port the gateway listens on for devices (0 picks a free one)."
}

variable "bridge_port" {
  type        = number
  default     = 7022
  description = "TCP port the bridge listens on for gateways (0 picks a free one)."
}

variable "inlet_address" {
  type        = string
  default     = "127.0.0.1:6100"
  description = "Where the device accepts TCP clients (port 0 picks a free one; ferry inlet list shows it)."
}

variable "target" {
  type        = string
  default     = "127.0.0.1:9000"
  description = "The TCP server next to the site (an HTTP server in the walk-through)."
}

# The site: reachable only through its Kafka topic. Its outlet dials the
# target once per portal session.
node "site" {
  transport "inbox" {
    plugin = "kafka"
    listen = "${var.prefix}site"
    allow  = ["outlet"]
    settings = {
      brokers       = var.brokers
      inbound_topic = "${var.prefix}site"
    }
  }

  outlet "web" {
    from = "/service/outlet"
    to   = var.target
  }
}

# The bridge: takes TCP from gateways and passes it on to the site's topic.
node "bridge" {
  transport "public" {
    plugin = "tcp"
    listen = "127.0.0.1:${var.bridge_port}"
    allow  = ["hop"]
  }

  # The bridge's own topic, where the site's replies arrive. Nothing on the
  # bridge is reachable from Kafka directly (replies are admitted because
  # the bridge sent the requests).
  transport "inbox" {
    plugin = "kafka"
    listen = "${var.prefix}bridge"
    allow  = []
    settings = {
      brokers       = var.brokers
      inbound_topic = "${var.prefix}bridge"
    }
  }

  connection "to_site" {
    to = node.site.transport.inbox # plugin inherited from the listener: kafka
  }

  service "hop" {}
}

# The gateway: takes UDP from devices and passes it on over TCP.
node "gateway" {
  transport "public" {
    plugin = "udp"
    listen = "127.0.0.1:${var.gateway_port}"
    allow  = ["hop"]
  }

  connection "to_bridge" {
    to = node.bridge.transport.public # tcp
  }

  service "hop" {}
}

# The device: dials the gateway over UDP and runs the inlet.
node "device" {
  connection "to_gateway" {
    to = node.gateway.transport.public # udp
  }

  # Each connection reference becomes that connection's worker on its node;
  # the hop service on the next node steps the message onto that node's
  # own connection (a hop is local traffic there, so the listeners need to
  # allow only "hop", and the site's only "outlet").
  inlet "web" {
    listen = var.inlet_address
    to = [
      node.device.connection.to_gateway, "/service/hop",
      node.gateway.connection.to_bridge, "/service/hop",
      node.bridge.connection.to_site, "/service/outlet",
    ]
  }
}
