node "n2" {
  transport "public" {}
  service "relay" {}
}

node "n3" {
  connection "to_n2" {
    to = node.n2.transport.public
  }
  relay "n3" {
    at = node.n3.connection.to_n2
  }
}

node "n1" {
  connection "to_n2" {
    to = node.n2.transport.public
  }
  inlet "web" {
    listen = "127.0.0.1:6000"
    to     = [node.n1.connection.to_n2, node.n3.relay.n3, "/service/outlet"]
  }
}
