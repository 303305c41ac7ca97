# Exercises every block and most attribute forms.
variable "port" {
  type    = number
  default = 7100
}

variable "baud" {
  type    = number
  default = 9600
}

plugin "mytransport" {
  path         = "plugins/ferry-mytransport"
  sha256       = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
  address_type = "mine"
}

node "hub" {
  transport "public" {
    listen = "127.0.0.1:${var.port}"
    allow  = ["/service/echo", "relay", "hop"]
  }
  transport "line" {
    plugin   = "serial"
    listen   = "/dev/ttyS0"
    settings = { baud = var.baud, flow = true }
  }
  transport "other" {
    plugin = "mytransport"
    listen = "anywhere"
  }
  service "echo" {}
  service "hop" {}
  service "relay" {}
  service "echo" {
    address = "echo2"
  }
}

node "edge" {
  connection "up" {
    to = node.hub.transport.public
  }
  service "hop" {}
  outlet "db" {
    from = "db"
    to   = "127.0.0.1:5432"
  }
  connection "side" {
    to = "127.0.0.1:7999"
  }
  relay "edge" {
    at = node.hub.transport.public
  }
}

node "client" {
  connection "up" {
    to    = node.hub.transport.public
    allow = []
  }
  inlet "db" {
    listen = "127.0.0.1:15432"
    to     = [node.client.connection.up, node.hub.relay.edge, "/service/hop", "/service/db"]
  }
  inlet "via_other" {
    listen = "127.0.0.1:15433"
    to     = [node.hub.transport.other, "/service/echo2"]
  }
  inlet "edge_conn" {
    listen = "127.0.0.1:15434"
    to     = [node.client.connection.up, node.hub.relay.edge, node.edge.connection.side, "/service/echo"]
  }
}
