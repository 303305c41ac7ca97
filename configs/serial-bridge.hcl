# serial-bridge.hcl: udp-tcp-kafka.hcl with a serial line as the first hop:
# a device wired to its gateway by a serial cable (a null-modem cable, an
# RS-232/RS-485 link, a radio modem) reaches an HTTP server at a remote site.
#
#   curl ──► device: inlet ──serial──► gateway: hop ──tcp──► bridge: hop
#        ──kafka──► site: outlet ──► HTTP server (var.target)
#
# A serial line has a device file at each end: the device node opens
# device_tty, the gateway listens on gateway_tty. Without hardware, a pair of
# connected pseudo-terminals does (see configs/serial.hcl):
#
#   socat -d -d pty,raw,echo=0,link=/tmp/ttyA pty,raw,echo=0,link=/tmp/ttyB &
#   ferry kafka dev &                     # a local broker on 127.0.0.1:9092
#   python3 -m http.server --bind 127.0.0.1 9000 &
#   ferry up configs/serial-bridge.hcl --var device_tty=/tmp/ttyA --var gateway_tty=/tmp/ttyB
#   curl 127.0.0.1:6200
#   ferry down configs/serial-bridge.hcl --var device_tty=/tmp/ttyA --var gateway_tty=/tmp/ttyB
#
# The walk-through with a diagram is in configs/README.md.

variable "device_tty" {
  type        = string
  default     = "/dev/ttyUSB0"
  description = "The device node's end of the serial line (a tty device path)."
}

variable "gateway_tty" {
  type        = string
  default     = "/dev/ttyUSB1"
  description = "The gateway's end of the serial line (a tty device path)."
}

variable "baud_rate" {
  type        = number
  default     = 115200
  description = "Line speed; both ends use it."
}

variable "brokers" {
  type        = string
  default     = "127.0.0.1:9092"
  description = "Kafka seed brokers, host:port separated by commas (ferry kafka dev prints one)."
}

variable "prefix" {
  type        = string
  default     = "ferry-serial-"
  description = "Prefix of the bridge's and the site's inbound topics."
}

variable "bridge_port" {
  type        = number
  default     = 7032
  description = "TCP port the bridge listens on for gateways (0 picks a free one)."
}

variable "inlet_address" {
  type        = string
  default     = "127.0.0.1:6200"
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

# The gateway: takes frames from the serial line and passes them on over TCP.
node "gateway" {
  transport "line" {
    plugin = "serial"
    listen = var.gateway_tty
    allow  = ["hop"]
    settings = {
      baud_rate = var.baud_rate
    }
  }

  connection "to_bridge" {
    to = node.bridge.transport.public # tcp
  }

  service "hop" {}
}

# The device: opens its end of the line and runs the inlet.
node "device" {
  connection "to_gateway" {
    plugin = "serial"
    to     = var.device_tty # the near end: the far end is the gateway's listener
    settings = {
      baud_rate = var.baud_rate
    }
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
